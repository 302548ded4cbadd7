"""``pptpkit ctl`` against a real ``pptpkit server`` in a namespace: listing with real counters,
kill (the client sees the LCP Terminate, the log says Admin-Reset), reload errors, an interface
deleted under a session, and program mode's calls."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_root
from netns import NetnsLab
from pptpkit.ppp.session_config import Outcome
from serverlab import LOCAL_IP, SECRETS, Server, connect, in_ns, ping, run_in, sh, two_namespaces

pytestmark = [pytest.mark.root]


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    with NetnsLab("pkctl") as lab:
        yield lab


async def ctl(server: Server, *args: str) -> tuple[int, str]:
    """``pptpkit ctl`` as an operator runs it (from the root namespace: the socket is a file)."""
    return await sh(sys.executable, "-m", "pptpkit", "ctl", "--socket", str(server.ctl_socket), *args,
                    timeout=30)


async def ctl_json(server: Server, *args: str) -> Any:
    rc, out = await ctl(server, "--json", *args)
    assert rc == 0, out
    return json.loads(out)


def test_sessions_show_kill_reload_stats(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path)
    assert oct(server.ctl_socket.stat().st_mode & 0o777) == "0o600"

    async def main() -> None:
        alice = await connect("alice", "alice pw")
        await server.await_log("session up: user 'alice'")
        rc, out = await ping(cli, LOCAL_IP)
        assert rc == 0, out
        listing = await ctl_json(server, "sessions")
        assert listing["ok"] is True and listing["mode"] == "builtin"
        [s] = listing["sessions"]
        assert (s["user"], s["peer"], s["address"], s["local"], s["interface"], s["state"]) == (
            "alice", "192.0.2.2", "198.51.100.10", LOCAL_IP, "pptpkit0", "up")
        assert s["auth"] == "mschap-v2" and s["mppe"] == "MPPE 128-bit stateless"
        # The two echo requests and replies, at least.
        assert s["packets_in"] >= 2 and s["packets_out"] >= 2 and s["bytes_in"] >= 168
        assert s["gre"]["received"] > 0 and s["gre"]["lost"] == 0 and s["gre"]["rtt_ms"] is not None
        sid = s["id"]
        rc, out = await ctl(server, "sessions")
        assert rc == 0 and sid in out and "alice" in out and "198.51.100.10" in out, out
        assert (await ctl_json(server, "show", sid))["session"]["id"] == sid
        stats = (await ctl_json(server, "stats"))["stats"]
        assert (stats["sessions"], stats["established"], stats["preauth"]) == (1, 1, 0)
        assert stats["sessions_up_total"] == 1 and stats["connections"] == 1
        assert stats["gre_socket"]["delivered"] > 0
        # Unknown ids and users: their own status and one line.
        rc, out = await ctl(server, "show", "NOPE")
        assert rc == 41 and out.strip() == "pptpkit ctl: no session NOPE", out
        rc, out = await ctl(server, "kill", "--user", "mallory")
        assert rc == 41 and out.strip() == "pptpkit ctl: no session of user 'mallory'", out
        # A bad secrets file: exit 1 with path:line, the session is untouched.
        server.secrets.write_text(SECRETS + 'carol pptpd "unterminated\n')
        rc, out = await ctl(server, "reload")
        assert rc == 1 and f"{server.secrets}:3:" in out and len(out.strip().splitlines()) == 1, out
        server.secrets.write_text(SECRETS)
        rc, out = await ctl(server, "reload")
        assert (rc, out.strip()) == (0, "secrets reloaded")
        assert not alice.link.finished
        # Kill: the client is told by LCP, the call is cleared, the log says Admin-Reset.
        rc, out = await ctl(server, "kill", sid)
        assert (rc, out.strip()) == (0, f"killed {sid}"), out
        down = await asyncio.wait_for(asyncio.shield(alice.link.closed), 10)
        assert down.outcome is Outcome.PEER_TERMINATED and "killed by the administrator" in down.reason
        await alice.client.close()
        await server.await_log(f"[{sid}] session down: user 'alice'")
        assert (await ctl_json(server, "sessions"))["sessions"] == []

    run_in(cli, main)
    log = server.log()
    assert ("session down: user 'alice', peer 192.0.2.2, cause Admin-Reset, reason closed locally "
            "(killed by the administrator)") in log, log
    assert "Traceback" not in log
    server.proc.terminate()
    assert server.proc.wait(10) == 0
    assert not server.ctl_socket.exists()


def test_deleted_interface_ends_its_session(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path)

    async def main() -> None:
        bob = await connect("bob", "bobpw")
        alice = await connect("alice", "alice pw", tun="pka%d")
        await server.await_log("session up: user 'alice'")
        listing = {s["user"]: s for s in (await ctl_json(server, "sessions"))["sessions"]}
        rc, out = await in_ns(srv, "ip", "link", "del", listing["bob"]["interface"])
        assert rc == 0, out
        down = await asyncio.wait_for(asyncio.shield(bob.link.closed), 10)
        assert down.outcome is Outcome.PEER_TERMINATED and "disappeared" in down.reason
        await bob.client.close()
        await server.await_log("session down: user 'bob'")
        # Counted down; the other session goes on.
        stats = (await ctl_json(server, "stats"))["stats"]
        assert (stats["sessions"], stats["established"]) == (1, 1)
        rc, out = await ping(cli, LOCAL_IP)
        assert rc == 0 and not alice.link.finished, out
        await alice.close()

    run_in(cli, main)
    log = server.log()
    assert "interface pptpkit0 disappeared (File descriptor in bad state); ending the session" in log, log
    assert "session down: user 'bob', peer 192.0.2.2, cause NAS-Error" in log, log
    assert "Traceback" not in log


OPTIONS = ("name pptpd\nrefuse-pap\nrefuse-chap\nrefuse-mschap\nrequire-mschap-v2\nrequire-mppe-128\n"
           "nodefaultroute\nnobsdcomp\nnovj\nnovjccomp\n")


def test_program_mode_lists_and_kills_calls(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "options.pptpd").write_text(OPTIONS)
    (etc / "chap-secrets").write_text('alice pptpd "alice pw" *\n')
    server = Server(lab, srv, tmp_path, "--ppp-program", sys.executable, "--ppp-arg=-m", "--ppp-arg=pptpkit",
                    "--ppp-arg=ppp", "--option", str(etc / "options.pptpd"), "--localip", LOCAL_IP,
                    "--remoteip", "198.51.100.10-20", builtin=False,
                    env={**os.environ, "PPTPKIT_PPP_ETC": str(etc)})

    async def main() -> None:
        alice = await connect("alice", "alice pw")
        listing = await ctl_json(server, "sessions")
        assert listing["mode"] == "program"
        [call] = listing["sessions"]
        assert (call["peer"], call["local"], call["address"]) == ("192.0.2.2", LOCAL_IP, "198.51.100.10")
        pid = call["pid"]
        assert os.path.exists(f"/proc/{pid}") and call["uptime"] >= 0
        rc, out = await ctl(server, "sessions")
        assert rc == 0 and str(pid) in out and "192.0.2.2:" in out, out
        stats = (await ctl_json(server, "stats"))["stats"]
        assert (stats["calls"], stats["connections"]) == (1, 1)
        rc, out = await ctl(server, "kill", "--user", "alice")
        assert rc == 1 and "no user names" in out, out
        rc, out = await ctl(server, "reload")
        assert rc == 1 and "nothing to reload" in out, out
        rc, out = await ctl(server, "kill", call["id"])
        assert (rc, out.strip()) == (0, f"killed {call['id']}"), out
        # The program got SIGTERM (it ends its PPP session) and the call was cleared.
        down = await asyncio.wait_for(asyncio.shield(alice.link.closed), 15)
        assert down.outcome in (Outcome.PEER_TERMINATED, Outcome.LOWER_LAYER_DOWN), down
        await alice.client.close()
        end = asyncio.get_running_loop().time() + 10
        while os.path.exists(f"/proc/{pid}"):
            assert asyncio.get_running_loop().time() < end, "the PPP program is still running"
            await asyncio.sleep(0.1)
        assert (await ctl_json(server, "sessions"))["sessions"] == []

    run_in(cli, main)
    assert "Traceback" not in server.log()


def test_peers_of_other_users_are_refused() -> None:
    """Defence behind the 0700 directory and the 0600 socket: even through a socket opened to
    everyone, a client whose uid is neither root nor the server's gets a refusal, no data."""
    require_root()
    import shutil
    import tempfile

    from pptpkit.ops.ctl import CtlServer, ProgramBackend
    from pptpkit.pptp.server import PptpServer, PptpServerConfig

    async def refuse_nobody() -> None:
        async def never(call: Any) -> Any:
            raise AssertionError("no call expected")

        directory = tempfile.mkdtemp(prefix="pkctl-")
        try:
            os.chmod(directory, 0o755)
            path = os.path.join(directory, "ctl.sock")
            ctl_server = CtlServer(path)
            await ctl_server.open(ProgramBackend(PptpServer(PptpServerConfig(), never)))
            os.chmod(path, 0o666)
            try:
                # The refusal comes at once, before any request.
                probe = ("import os, socket, sys; os.setgid(65534); os.setuid(65534); "
                         "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                         "print(s.recv(4096).decode())")
                rc, out = await sh(sys.executable, "-c", probe, path)
                assert rc == 0, out
                assert json.loads(out) == {"ok": False, "kind": "not-permitted",
                                           "error": "not permitted for uid 65534"}
                assert ctl_server.refused_clients == 1
            finally:
                await ctl_server.close()
        finally:
            shutil.rmtree(directory)

    asyncio.run(refuse_nobody())
