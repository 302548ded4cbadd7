"""Two ``pptpkit pty --callmgr`` tunnels to the real pptpd at once (issue 15).

pptpd answers Maximum Channels 1 and tears a control connection down, first call included, when
a second Outgoing-Call-Request arrives on it.  The call manager must give each call its own
control connection, keep both (owned by the one manager process), and close each with its last
call.  Each call runs pptpd's ``ppp`` program: an echo that speaks first, as pptpctrl needs."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_pptpd

from conftest import require_binary, require_root
from netns import NetnsLab, control_connections, managed_socket, pids_in, two_hosts
from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame

pytestmark = [pytest.mark.root, pytest.mark.interop]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"
GREETING = b"\xff\x03\xc0\x21\x01\x11\x00\x04"


def write_echo(path: Path) -> Path:
    """pptpd's PPP program: raw mode, the greeting first (pptpctrl reads no GRE before its
    program spoke), then every frame echoed."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f'''
        import os
        from pptpkit.io.pty import set_raw
        from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame
        if os.isatty(0):
            set_raw(0)
        os.write(1, encode_frame({GREETING!r}))
        dec = HdlcDecoder(max_frame=65535)
        while True:
            try:
                data = os.read(0, 65536)
            except OSError:
                break
            if not data:
                break
            frames = dec.feed(data)
            if frames:
                os.write(1, b"".join(encode_frame(f) for f in frames))
    '''))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class Tunnel:
    """One ``pptpkit pty --callmgr``: HDLC frames in on stdin, out on stdout."""

    def __init__(self, netlab: NetnsLab, ns: str, env: dict[str, str], err: Path) -> None:
        with open(err, "wb") as f:
            self.proc = netlab.popen(ns, [sys.executable, "-m", "pptpkit", "pty", SERVER, "--callmgr",
                                          "--timeout", "5"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=f, env=env)
        self.decoder = HdlcDecoder(max_frame=65535)
        self.pending: list[bytes] = []
        self.err = err

    def send(self, frame: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_frame(frame))
        self.proc.stdin.flush()

    def read(self, timeout: float = 10.0) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while not self.pending:
            left = end - time.monotonic()
            assert left > 0, "no frame: " + self.err.read_text()
            if select.select([fd], [], [], left)[0]:
                data = os.read(fd, 65536)
                assert data, "EOF: " + self.err.read_text()
                self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def hang_up(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(15)


def echo(tag: bytes, i: int) -> bytes:
    data = tag + bytes([i]) * 40
    return b"\xff\x03\xc0\x21\x09" + bytes([i + 1]) + (8 + len(data)).to_bytes(2, "big") + b"\0\0\0\0" + data


def wait_until(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    for binary in ("pptpd", "pptpctrl", "busybox", "unshare"):
        require_binary(binary)
    with two_hosts("pkcp", SERVER, CLIENT) as lab:
        yield lab


def test_two_callmgr_tunnels_to_pptpd(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    program = write_echo(tmp_path / "echo-prog")
    run_dir = tmp_path / "run"
    cm_log = tmp_path / "callmgr.log"
    env = {**os.environ, "PPTPKIT_RUN_DIR": str(run_dir), "PPTPKIT_CALLMGR_LOG": str(cm_log)}
    pptpd = start_pptpd(server_ns, tmp_path, ppp_program=program, listen=SERVER)

    def logs() -> str:
        return "\n--- call manager:\n" + (cm_log.read_text() if cm_log.exists() else "") + \
            "\n--- pptpd:\n" + pptpd.syslog()

    try:
        # Started together: both ask the manager before pptpd's first reply is in.
        a = Tunnel(netlab, client_ns, env, tmp_path / "a.err")
        b = Tunnel(netlab, client_ns, env, tmp_path / "b.err")
        assert a.read() == GREETING, logs()
        assert b.read() == GREETING, logs()
        assert control_connections(client_ns) == 2, logs()
        # Traffic on both at the same time, and again after a while: neither call was torn down.
        for round_ in range(2):
            sent = [(echo(b"a", i), echo(b"b", i)) for i in range(round_ * 10, round_ * 10 + 10)]
            for fa, fb in sent:
                a.send(fa)
                b.send(fb)
            for fa, fb in sent:
                assert a.read() == fa, logs()
                assert b.read() == fb, logs()
            time.sleep(1.0)
        text = pptpd.syslog()
        assert "call is already open" not in text and "not handled well" not in text, logs()
        assert control_connections(client_ns) == 2, logs()
        assert len(managers(client_ns)) == 1  # both connections belong to the one manager

        # The first hangs up: its connection goes, the other tunnel carries on.
        assert a.hang_up() == 0, a.err.read_text()
        wait_until(lambda: control_connections(client_ns) == 1, 10, "the first connection to close")
        b.send(echo(b"b", 99))
        assert b.read() == echo(b"b", 99), logs()
        assert b.hang_up() == 0, b.err.read_text()
        wait_until(lambda: control_connections(client_ns) == 0, 10, "the second connection to close")
        wait_until(lambda: not managed_socket(run_dir, SERVER).exists(), 10, "the manager to exit")
        wait_until(lambda: managers(client_ns) == [], 10, "the manager process to end")
    finally:
        pptpd.stop()
    text = cm_log.read_text()
    assert "room for 1 call" in text, text
    assert "Traceback" not in text + a.err.read_text() + b.err.read_text(), logs()
    assert "GRE: Bad checksum" not in pptpd.syslog()


def managers(ns: str) -> list[int]:
    found = []
    for pid in pids_in(ns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pptpkit.compat.callmgr" in cmd:
            found.append(pid)
    return found
