"""The call manager in namespaces: several member processes to one server share one control
connection; it stays while a call lives and closes after the last; a killed manager is
replaced by the next member."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root
from netns import NetnsLab, control_connections, managed_socket, pids_in, tcp_rows, two_hosts

pytestmark = [pytest.mark.root]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"

MEMBER = r'''
import asyncio, sys
from pptpkit.compat.callmgr import ManagedClient
from pptpkit.pptp.client import PptpClientConfig

async def main():
    member = ManagedClient(PptpClientConfig(server=sys.argv[1], connect_timeout=5, call_timeout=5))
    await member.connect()
    call = await member.open_call()
    assert member.peer is not None and member.peer.vendor == "pptpkit"
    got = asyncio.Queue()
    call.on_frame = got.put_nowait
    print("opened", call.call_id, call.peer_call_id, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        reading = asyncio.ensure_future(reader.readline())
        await asyncio.wait({reading, call.closed}, return_when=asyncio.FIRST_COMPLETED)
        if call.closed.done():
            reading.cancel()
            break
        line = reading.result()
        if not line:
            break
        cmd = line.decode().strip()
        if cmd.startswith("echo"):
            frame = b"\xff\x03\xc0\x21\x09\x01\x00\x0c\x00\x00\x00\x00" + cmd.encode()
            if not call.send_frame(frame):
                print("send failed", flush=True)
                continue
            try:
                back = await asyncio.wait_for(got.get(), 5)
            except TimeoutError:
                print("timeout", flush=True)
                continue
            print("ok" if back == frame else "bad", flush=True)
        elif cmd == "close":
            break
    info = await member.close()
    print("closed", call.closed.result().reason if call.closed.done() else "?", flush=True)

asyncio.run(main())
'''


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    with two_hosts("pkcm", SERVER, CLIENT) as lab:
        yield lab




def wait_until(cond: object, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


class Member:
    def __init__(self, netlab: NetnsLab, ns: str, script: Path, env: dict[str, str]) -> None:
        self.proc = netlab.popen(ns, [sys.executable, str(script), SERVER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)

    def line(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "no answer from the member"
        out = self.proc.stdout.readline().strip()
        assert out, self.proc.stderr.read() if self.proc.stderr else ""
        return out

    def say(self, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.line()


def manager_pids(ns: str, run_dir: Path) -> list[int]:
    out = []
    for pid in pids_in(ns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pptpkit.compat.callmgr" in cmd and str(run_dir).encode() in b" ".join(cmd):
            out.append(pid)
    return out


def test_two_calls_share_one_control_connection(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    script = tmp_path / "member.py"
    script.write_text(MEMBER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PPTPKIT_RUN_DIR": str(run_dir), "PPTPKIT_CALLMGR_LOG": str(tmp_path / "cm.log")}
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as log:
        netlab.popen(server_ns, [
            sys.executable, "-m", "pptpkit", "server", "-v", "--listen", SERVER,
            "--ppp-program", sys.executable, "--ppp-arg=-m", "--ppp-arg=pptpkit.lab.echo",
            "--localip", "198.51.100.1", "--remoteip", "198.51.100.2-20", "--noipparam",
        ], stdout=subprocess.DEVNULL, stderr=log)
    wait_until(lambda: any(r[3] == "0A" and r[1].endswith(":06BB") for r in tcp_rows(server_ns)),
               what="the server to listen")
    cm_log = lambda: (tmp_path / "cm.log").read_text() if (tmp_path / "cm.log").exists() else ""  # noqa: E731

    a = Member(netlab, client_ns, script, env)
    assert a.line().startswith("opened"), cm_log()
    assert control_connections(client_ns) == 1
    assert managed_socket(run_dir, SERVER).is_socket()
    # One manager per server, port and network namespace.
    inode = os.stat(f"/run/netns/{client_ns}").st_ino
    assert managed_socket(run_dir, SERVER).name == f"{SERVER}:1723@{inode}"
    first_manager = manager_pids(client_ns, run_dir)
    assert len(first_manager) == 1
    b = Member(netlab, client_ns, script, env)
    assert b.line().startswith("opened"), cm_log()
    assert control_connections(client_ns) == 1  # B joined A's connection
    # pptpkit server announces the 16 calls per connection it accepts, and the manager uses them.
    assert "room for 16 call(s)" in cm_log(), cm_log()
    assert manager_pids(client_ns, run_dir) == first_manager
    assert a.say("echo a1") == "ok" and b.say("echo b1") == "ok"

    # A hangs up: B's call keeps the control connection.
    assert a.say("close").startswith("closed")
    assert a.proc.wait(10) == 0
    time.sleep(0.5)
    assert control_connections(client_ns) == 1
    assert b.say("echo b2") == "ok"

    # B hangs up too: the last call takes the connection and the manager with it.
    assert b.say("close").startswith("closed")
    assert b.proc.wait(10) == 0
    wait_until(lambda: control_connections(client_ns) == 0, what="the control connection to close")
    wait_until(lambda: manager_pids(client_ns, run_dir) == [], what="the manager to exit")
    assert not managed_socket(run_dir, SERVER).exists()
    server_text = server_log.read_text()
    # The server agrees: one control connection carried both calls.
    assert server_text.count("control connection from 192.0.2.1 up") == 1, server_text
    assert server_text.count("cleared (remote): peer sent Call-Clear-Request") == 2, server_text

    # Crash recovery: the manager dies (SIGKILL); its member sees the call end, and the next
    # member finds the stale socket, replaces the manager and gets a call.
    c = Member(netlab, client_ns, script, env)
    assert c.line().startswith("opened"), cm_log()
    (victim,) = manager_pids(client_ns, run_dir)
    os.kill(victim, signal.SIGKILL)
    assert c.line().startswith("closed"), cm_log()
    assert c.proc.wait(10) == 0
    assert managed_socket(run_dir, SERVER).exists()  # the leftover a dead manager cannot remove
    d = Member(netlab, client_ns, script, env)
    assert d.line().startswith("opened"), cm_log()
    assert manager_pids(client_ns, run_dir) not in ([], [victim])
    assert d.say("echo d1") == "ok"
    assert d.say("close").startswith("closed")
    assert d.proc.wait(10) == 0
    wait_until(lambda: manager_pids(client_ns, run_dir) == [], what="the new manager to exit")
    assert "Traceback" not in cm_log(), cm_log()


def read_frame(fd: int, timeout: float = 10.0) -> bytes:
    from pptpkit.ppp.hdlc import HdlcDecoder

    decoder = HdlcDecoder(max_frame=65535)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            data = os.read(fd, 65536)
            assert data, "EOF from pptpkit pty"
            frames = decoder.feed(data)
            if frames:
                return frames[0]
    raise AssertionError("no frame from pptpkit pty")


def test_pptpkit_pty_callmgr(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    """The CLI: two ``pptpkit pty --callmgr`` share one connection; the last EOF closes it."""
    from pptpkit.ppp.hdlc import encode_frame

    netlab, server_ns, client_ns = lab
    with open(tmp_path / "server.log", "wb") as log:
        netlab.popen(server_ns, [
            sys.executable, "-m", "pptpkit", "server", "--listen", SERVER,
            "--ppp-program", sys.executable, "--ppp-arg=-m", "--ppp-arg=pptpkit.lab.echo",
            "--localip", "198.51.100.1", "--remoteip", "198.51.100.2-20", "--noipparam",
        ], stdout=subprocess.DEVNULL, stderr=log)
    wait_until(lambda: any(r[3] == "0A" and r[1].endswith(":06BB") for r in tcp_rows(server_ns)),
               what="the server to listen")
    env = {**os.environ, "PPTPKIT_RUN_DIR": str(tmp_path / "run")}
    ptys = [netlab.popen(client_ns, [sys.executable, "-m", "pptpkit", "pty", SERVER, "--callmgr"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)]
    frame = b"\xff\x03\xc0\x21\x09\x07\x00\x0c\x00\x00\x00\x00pty!"
    for proc in ptys:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(encode_frame(frame))
        proc.stdin.flush()
        assert read_frame(proc.stdout.fileno()) == frame
    assert control_connections(client_ns) == 1
    first, second = ptys
    assert first.stdin is not None and second.stdin is not None and second.stdout is not None
    first.stdin.close()
    assert first.wait(10) == 0
    time.sleep(0.3)
    assert control_connections(client_ns) == 1
    second.stdin.write(encode_frame(frame))
    second.stdin.flush()
    assert read_frame(second.stdout.fileno()) == frame
    second.stdin.close()
    assert second.wait(10) == 0
    wait_until(lambda: control_connections(client_ns) == 0, what="the control connection to close")
    wait_until(lambda: not managed_socket(tmp_path / "run", SERVER).exists(), what="the manager to exit")
    for proc in ptys:
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
