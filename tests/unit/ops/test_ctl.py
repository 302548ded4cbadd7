"""The control socket's protocol (sans-IO), its Unix-socket server on a temporary path, and
the command line's requests, formatting and exit statuses.  No root needed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from pptpkit.cli.ctl import build_request, format_answer, run_ctl_command, status_of, table
from pptpkit.cli.main import build_parser
from pptpkit.errors import ExitStatus, PptpkitError
from pptpkit.ops.ctl import (
    MAX_LINE,
    CtlError,
    CtlServer,
    ErrorKind,
    Request,
    answer,
    handle_line,
    parse_request,
)


class Table:
    """A backend over a list of records (what the protocol layer sees of a server)."""

    mode = "builtin"

    def __init__(self) -> None:
        self.records = [{"id": "A1", "user": "alice", "address": "198.51.100.10", "peer": "192.0.2.2"},
                        {"id": "B2", "user": "bob", "address": "198.51.100.50", "peer": "192.0.2.3"}]
        self.killed: list[str] = []
        self.reload_error: str | None = None

    def sessions(self) -> list[dict[str, Any]]:
        return self.records

    def show(self, session_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["id"] == session_id), None)

    def kill(self, request: Request) -> list[str]:
        hits = [r["id"] for r in self.records
                if request.id == r["id"] or request.user == r["user"]
                or (request.ip is not None and str(request.ip) in (r["address"], r["peer"]))]
        self.killed += hits
        return hits

    def reload(self) -> None:
        if self.reload_error is not None:
            raise CtlError(ErrorKind.RELOAD_FAILED, self.reload_error)

    def stats(self) -> dict[str, Any]:
        if self.reload_error == "explode":
            raise RuntimeError("a bug")
        return {"sessions": len(self.records)}


@pytest.mark.parametrize(("line", "words"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"cmd": "reboot"}', "cmd must be one of"),
    (b'{"cmd": 5}', "cmd must be one of"),
    (b'{"cmd": "sessions", "id": "x"}', "sessions takes no id"),
    (b'{"cmd": "show"}', "show needs an id"),
    (b'{"cmd": "show", "id": 7}', "id must be a non-empty string"),
    (b'{"cmd": "kill"}', "exactly one of"),
    (b'{"cmd": "kill", "id": "A1", "user": "bob"}', "exactly one of"),
    (b'{"cmd": "kill", "ip": "300.1.1.1"}', "not an IPv4 address"),
])
def test_bad_requests_are_refused_with_a_reason(line: bytes, words: str) -> None:
    with pytest.raises(CtlError) as caught:
        parse_request(line)
    assert caught.value.kind == ErrorKind.BAD_REQUEST
    assert words in str(caught.value)
    out = json.loads(handle_line(line, Table()))
    assert out["ok"] is False and out["kind"] == "bad-request" and words in out["error"]


def test_requests_parse() -> None:
    assert parse_request(b'{"cmd": "sessions"}\n') == Request("sessions")
    assert parse_request(b'{"cmd": "kill", "user": "bob"}') == Request("kill", user="bob")
    kill_ip = parse_request(b'{"cmd": "kill", "ip": "198.51.100.50"}')
    assert str(kill_ip.ip) == "198.51.100.50" and kill_ip.id is None


def test_answers() -> None:
    backend = Table()
    assert answer(Request("sessions"), backend) == {"ok": True, "mode": "builtin",
                                                    "sessions": backend.records}
    assert answer(Request("show", id="B2"), backend)["session"]["user"] == "bob"
    assert answer(Request("kill", user="bob"), backend) == {"ok": True, "killed": ["B2"]}
    assert backend.killed == ["B2"]
    assert answer(Request("reload"), backend) == {"ok": True, "reloaded": True}
    assert answer(Request("stats"), backend)["stats"] == {"sessions": 2}
    for request, text in ((Request("show", id="ZZ"), "no session ZZ"),
                          (Request("kill", id="ZZ"), "no session ZZ"),
                          (Request("kill", user="eve"), "no session of user 'eve'")):
        with pytest.raises(CtlError) as caught:
            answer(request, backend)
        assert caught.value.kind == ErrorKind.NO_SUCH_SESSION and str(caught.value) == text


def test_failures_are_answers_never_tracebacks() -> None:
    backend = Table()
    backend.reload_error = "/etc/ppp/chap-secrets:3: a quote is not closed"
    out = json.loads(handle_line(b'{"cmd": "reload"}', backend))
    assert out == {"ok": False, "kind": "reload-failed",
                   "error": "/etc/ppp/chap-secrets:3: a quote is not closed"}
    backend.reload_error = "explode"
    out = json.loads(handle_line(b'{"cmd": "stats"}', backend))
    assert out == {"ok": False, "kind": "internal", "error": "internal error: RuntimeError"}


# -- the socket ----------------------------------------------------------------------------------


async def _exchange(path: str, *lines: bytes) -> list[Any]:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    out = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        got = await asyncio.wait_for(reader.readline(), 5)
        out.append(json.loads(got) if got else None)
    writer.close()
    return out


def test_socket_serves_json_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "ctl.sock")

    async def main() -> None:
        server = CtlServer(path)
        await server.open(Table())
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
            first, second, third = await _exchange(
                path, b'{"cmd": "sessions"}\n', b"garbage\n", b'{"cmd": "kill", "ip": "192.0.2.3"}\n')
            assert [r["id"] for r in first["sessions"]] == ["A1", "B2"]
            assert second["ok"] is False and second["kind"] == "bad-request"
            assert third == {"ok": True, "killed": ["B2"]}
            # Longer than the bound: an error answer, then the connection is closed.
            reply = await _exchange(path, b"x" * (MAX_LINE + 10) + b"\n")
            assert reply[0]["ok"] is False and "longer than" in reply[0]["error"]
        finally:
            await server.close()
        assert not os.path.exists(path)

    asyncio.run(main())


def test_clients_are_capped(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")

    async def main() -> None:
        server = CtlServer(path, max_clients=2)
        await server.open(Table())
        try:
            held = [await asyncio.open_unix_connection(path) for _ in range(2)]
            await asyncio.sleep(0.05)
            refused = await _exchange(path, b'{"cmd": "stats"}\n')
            assert refused[0] == {"ok": False, "kind": "busy", "error": "2 control clients already"}
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.05)
            assert (await _exchange(path, b'{"cmd": "stats"}\n'))[0]["ok"] is True
        finally:
            await server.close()

    asyncio.run(main())


def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a crashed server's socket

    async def main() -> None:
        first = CtlServer(path)
        await first.open(Table())
        try:
            second = CtlServer(path)
            with pytest.raises(PptpkitError, match="another server is running"):
                await second.open(Table())
            assert os.path.exists(path)  # the refused one did not remove the live socket
            assert (await _exchange(path, b'{"cmd": "stats"}\n'))[0]["ok"] is True
        finally:
            await first.close()
        Path(path).write_text("not a socket")
        with pytest.raises(PptpkitError, match="not a socket"):
            await CtlServer(path).open(Table())

    asyncio.run(main())


# -- the command line ----------------------------------------------------------------------------


def test_command_line_requests() -> None:
    parse = build_parser().parse_args
    assert build_request(parse(["ctl", "sessions"])) == {"cmd": "sessions"}
    assert build_request(parse(["ctl", "show", "X1"])) == {"cmd": "show", "id": "X1"}
    assert build_request(parse(["ctl", "kill", "X1"])) == {"cmd": "kill", "id": "X1"}
    assert build_request(parse(["ctl", "kill", "--user", "bob"])) == {"cmd": "kill", "user": "bob"}
    assert build_request(parse(["ctl", "--json", "kill", "--ip", "198.51.100.9"])) == {
        "cmd": "kill", "ip": "198.51.100.9"}
    with pytest.raises(SystemExit):
        parse(["ctl", "kill"])
    with pytest.raises(SystemExit):
        parse(["ctl", "kill", "X1", "--user", "bob"])


def test_exit_statuses_of_answers() -> None:
    assert status_of({"ok": True}) is ExitStatus.OK
    assert status_of({"ok": False, "kind": "no-such-session"}) is ExitStatus.NO_SUCH_SESSION
    assert status_of({"ok": False, "kind": "not-permitted"}) is ExitStatus.NOT_PERMITTED
    assert status_of({"ok": False, "kind": "reload-failed"}) is ExitStatus.FATAL


def test_tables_are_aligned() -> None:
    assert table(["ID", "USER"], [["1", "alice"], ["22", "b"]]) == ["ID  USER", "1   alice", "22  b"]
    lines = format_answer("sessions", {"ok": True, "mode": "builtin", "sessions": [
        {"id": "65F0000000000001", "user": "alice", "peer": "192.0.2.2", "peer_port": 40000,
         "address": "198.51.100.10", "interface": "pptpkit0", "state": "up", "uptime": 3725.2,
         "bytes_in": 1536, "bytes_out": 12, "mppe": "MPPE 128-bit stateless",
         "gre": {"lost": 0, "reordered": 1, "rtt_ms": 0.42}}]})
    assert lines[0].split() == ["ID", "USER", "PEER", "ADDRESS", "IFACE", "STATE", "UPTIME", "IN", "OUT",
                                "MPPE", "LOST", "REORD", "RTT"]
    assert lines[1].split() == ["65F0000000000001", "alice", "192.0.2.2:40000", "198.51.100.10",
                                "pptpkit0", "up", "1h02m05s", "1.5KiB", "12B", "MPPE", "128-bit",
                                "stateless", "0", "1", "0.42ms"]
    assert lines[0].index("USER") == lines[1].index("alice")
    assert format_answer("sessions", {"ok": True, "mode": "program", "sessions": []}) == ["no calls"]
    assert format_answer("kill", {"ok": True, "killed": ["A", "B"]}) == ["killed A B"]
    assert format_answer("stats", {"ok": True, "stats": {"sessions": 2, "gre_socket": {"received": 9}}}) == [
        "sessions:            2", "gre_socket.received: 9"]


def test_no_server_is_its_own_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["ctl", "--socket", str(tmp_path / "none.sock"), "sessions"])
    assert run_ctl_command(args) == ExitStatus.CTL_UNREACHABLE == 40
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pptpkit ctl: no server on the control socket ")


def test_unknown_session_is_its_own_status(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock")

    async def main() -> tuple[int, int]:
        server = CtlServer(path)
        await server.open(Table())
        try:
            parse = build_parser().parse_args
            unknown = await asyncio.to_thread(run_ctl_command, parse(["ctl", "--socket", path, "show", "ZZ"]))
            known = await asyncio.to_thread(run_ctl_command, parse(["ctl", "--socket", path, "kill", "A1"]))
            return unknown, known
        finally:
            await server.close()

    assert asyncio.run(main()) == (ExitStatus.NO_SUCH_SESSION, ExitStatus.OK)
