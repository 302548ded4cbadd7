"""Our PPTP client against our PPTP server, each in its own network namespace.

The server runs as ``python -m pptpkit server`` with a recording echo program per call (it
speaks first, echoes every frame and logs argv and what it read); the client is the library
(:class:`pptpkit.pptp.client.PptpClient`) running in this process inside the client namespace, or the
``pptpkit pty`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root
from netns import NetnsLab, inside, pids_in, two_hosts
from pptpkit.control import Initiator
from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame
from pptpkit.pptp.client import ControlConnectionError, PptpCall, PptpClient, PptpClientConfig

pytestmark = [pytest.mark.root]

SERVER, CLIENT = "192.0.2.1", "192.0.2.2"
GREETING = b"\xff\x03\xc0\x21\x01\x07\x00\x04"  # LCP Configure-Request id 7, no options

RECORDER = textwrap.dedent('''
    """Per-call PPP program for the tests: logs argv, speaks first, echoes, records input."""
    import os, sys
    from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame
    out = sys.argv[1]
    pid = os.getpid()
    with open(f"{out}/argv.{pid}", "w") as f:
        f.write("\\n".join(sys.argv[2:]))
    os.write(1, encode_frame(GREETING_REPR))
    dec = HdlcDecoder(max_frame=65535)
    rec = open(f"{out}/recv.{pid}", "ab", buffering=0)
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            break
        if not data:
            break
        rec.write(data)
        frames = dec.feed(data)
        if frames:
            os.write(1, b"".join(encode_frame(f) for f in frames))
''').replace("GREETING_REPR", repr(GREETING))


class Server:
    def __init__(self, lab: NetnsLab, ns: str, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.ns = ns
        script = workdir / "recorder.py"
        script.write_text(RECORDER)
        self.log_path = workdir / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = lab.popen(ns, [
                sys.executable, "-m", "pptpkit", "server", "-v", "--listen", SERVER,
                "--ppp-program", sys.executable, f"--ppp-arg={script}", f"--ppp-arg={workdir}",
                "--localip", "198.51.100.1", "--remoteip", "198.51.100.2-20", "--noipparam", *extra,
            ], stdout=subprocess.DEVNULL, stderr=log)
        end = time.monotonic() + 10
        while not self.listening():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < end, self.log()
            time.sleep(0.05)

    def listening(self) -> bool:
        with inside(self.ns):
            table = Path("/proc/thread-self/net/tcp").read_text()
        return any(line.split()[3] == "0A" and line.split()[1].endswith(":06BB")
                   for line in table.splitlines()[1:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def program_pids(self) -> list[int]:
        return sorted(int(p.name.split(".")[1]) for p in self.workdir.glob("argv.*"))

    def program_argv(self, pid: int) -> list[str]:
        return (self.workdir / f"argv.{pid}").read_text().split("\n")

    def received_frames(self, pid: int) -> list[bytes]:
        path = self.workdir / f"recv.{pid}"
        return HdlcDecoder(max_frame=65535).feed(path.read_bytes()) if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent reaps it shortly).
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
            return False
    return True


def wait_until(cond: object, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    with two_hosts("pkgl", SERVER, CLIENT) as lab:
        yield lab


class Collector:
    """Collects one call's received frames and lets a coroutine wait for a count."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._event = asyncio.Event()

    def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)
        self._event.set()

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        async def loop() -> None:
            while len(self.frames) < n:
                self._event.clear()
                await self._event.wait()

        await asyncio.wait_for(loop(), timeout)
        return self.frames


def payloads(tag: int, n: int) -> list[bytes]:
    # Every byte value, so HDLC escaping on both hops is exercised.
    return [b"\xff\x03\x00\x21" + bytes([tag, i]) + bytes(range(256))[i:] + bytes(range(i)) for i in range(n)]


async def exchange(call: PptpCall, got: Collector, tag: int, n: int = 40) -> None:
    """Frames out, echoes back byte-exact, in order, after the program's greeting."""
    await got.wait_for(1)
    sent = payloads(tag, n)
    for frame in sent:
        assert call.send_frame(frame)
    frames = await got.wait_for(1 + n)
    assert frames[0] == GREETING
    assert frames[1:] == sent


def client_config(**kw: object) -> PptpClientConfig:
    return PptpClientConfig(server=SERVER, connect_timeout=5, call_timeout=5, **kw)  # type: ignore[arg-type]


# -- tests -----------------------------------------------------------------------------------------


def test_several_calls_on_one_control_connection(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path)

    async def scenario() -> None:
        client = PptpClient(client_config())
        peer = await client.connect()
        assert peer.vendor == "pptpkit"
        collectors = [Collector() for _ in range(3)]
        calls = [await client.open_call(on_frame=c) for c in collectors]
        assert len({c.call_id for c in calls}) == 3 and len({c.peer_call_id for c in calls}) == 3
        await asyncio.gather(*(exchange(call, col, tag) for tag, (call, col) in
                               enumerate(zip(calls, collectors, strict=True))))
        pids = server.program_pids()
        assert len(pids) == 3
        # Each program got exactly its own call's frames (no cross talk at the demultiplexer).
        got = sorted(tuple(server.received_frames(pid)) for pid in pids)
        assert got == sorted(tuple(payloads(tag, 40)) for tag in range(3))
        # pptpd's argv, one address pair per call.
        remotes = sorted(server.program_argv(pid)[2] for pid in pids)
        assert remotes == ["198.51.100.1:198.51.100.2", "198.51.100.1:198.51.100.3",
                           "198.51.100.1:198.51.100.4"]
        assert all(server.program_argv(pid)[:2] == ["local", "115200"] for pid in pids)
        assert all(server.program_argv(pid)[-2:] == ["remotenumber", CLIENT] for pid in pids)

        # Hang up one call: only its program goes, the others keep working.
        first_pid = next(pid for pid in pids if server.received_frames(pid) == payloads(0, 40))
        info = await calls[0].close()
        assert info.initiated_by is Initiator.LOCAL
        await asyncio.to_thread(wait_until, lambda: not alive(first_pid), 5, "the program to go")
        assert all(alive(pid) for pid in pids if pid != first_pid)
        more = payloads(9, 5)
        for frame in more:
            calls[1].send_frame(frame)
        assert (await collectors[1].wait_for(46))[41:] == more
        assert not calls[0].send_frame(b"\xff\x03\x00\x21late")
        assert calls[1].stats.lost == 0 and calls[1].stats.sent == 45

        # The last call closing closes the control connection (Stop-Control-Connection).
        for call in calls[1:]:
            await call.close()
        assert client.closed is not None
        closed = await asyncio.wait_for(client.closed, 5)
        assert closed.clean and closed.initiated_by is Initiator.LOCAL
        await asyncio.to_thread(wait_until, lambda: not any(alive(p) for p in pids), 5, "programs to go")

    with inside(client_ns):
        asyncio.run(scenario())
    assert "control connection from 192.0.2.2 closed (stopped_by_peer)" in server.log()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0


def test_two_clients_from_one_address(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    """Two control connections from the same source address (as behind a NAT) with one GRE
    socket on each side: the server tells the calls apart by its own call IDs."""
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path)

    async def scenario() -> None:
        a, b = PptpClient(client_config()), PptpClient(client_config())
        await a.connect()
        await b.connect()
        assert a.gre_socket is b.gre_socket  # one raw socket per process
        ca, cb = Collector(), Collector()
        call_a = await a.open_call(on_frame=ca)
        call_b = await b.open_call(on_frame=cb)
        assert call_a.peer_call_id != call_b.peer_call_id
        await asyncio.gather(exchange(call_a, ca, 1, 60), exchange(call_b, cb, 2, 60))
        # Server side close of one client's call does not disturb the other.
        pid_a = next(p for p in server.program_pids() if server.received_frames(p) == payloads(1, 60))
        os.kill(pid_a, signal.SIGKILL)
        info = await asyncio.wait_for(call_a.closed, 5)
        assert info.initiated_by is Initiator.REMOTE
        assert call_b.send_frame(b"\xff\x03\x00\x21still")
        assert (await cb.wait_for(62))[-1] == b"\xff\x03\x00\x21still"
        # GRE for the closed call is dropped and counted, not delivered anywhere.
        assert not call_a.send_frame(b"\xff\x03\x00\x21gone")
        assert call_a.channel.adapter_stats.frames_after_close == 1
        await b.close()
        await asyncio.wait_for(a.closed, 5)  # a stopped itself when its last call went

    with inside(client_ns):
        asyncio.run(scenario())
    assert "cleared" in server.log()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0
    assert not any(alive(p) for p in server.program_pids())


def test_gre_leaves_from_the_called_address(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    """A multi-homed server answers GRE from the address the control connection reached, not
    from the one its routing table prefers: clients filter GRE by the address they called."""
    netlab, server_ns, client_ns = lab
    secondary = "192.0.2.10"
    netlab.ip(server_ns, "addr", "add", f"{secondary}/24", "dev", "srv0")
    # Routing picks the primary address for the client, so only pinning makes this pass.
    assert f"src {SERVER}" in netlab.ip(server_ns, "route", "get", CLIENT)
    server = Server(netlab, server_ns, tmp_path, "--listen", "0.0.0.0")

    async def scenario() -> None:
        client = PptpClient(PptpClientConfig(server=secondary, connect_timeout=5, call_timeout=5))
        await client.connect()
        got = Collector()
        call = await client.open_call(on_frame=got)
        await exchange(call, got, 3, 20)
        assert client.gre_socket is not None and client.gre_socket.stats.unknown_call == 0
        await client.close()

    with inside(client_ns):
        asyncio.run(scenario())
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0


def test_per_source_limit(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path, "--max-per-source", "1")

    async def scenario() -> None:
        first = PptpClient(client_config())
        await first.connect()
        second = PptpClient(client_config())
        with pytest.raises(ControlConnectionError):
            await second.connect()
        await first.close()
        # The slot is free again.
        third = PptpClient(client_config())
        await third.connect()
        await third.close()

    with inside(client_ns):
        asyncio.run(scenario())
    assert "refusing connection from 192.0.2.2" in server.log()


def test_sigterm_shuts_the_server_down_cleanly(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path)

    async def scenario() -> None:
        client = PptpClient(client_config())
        await client.connect()
        cols = [Collector(), Collector()]
        calls = [await client.open_call(on_frame=c) for c in cols]
        for call, col in zip(calls, cols, strict=True):
            await col.wait_for(1)
            assert call.send_frame(b"\xff\x03\x00\x21ping")
        server.proc.send_signal(signal.SIGTERM)
        infos = await asyncio.wait_for(asyncio.gather(*(c.closed for c in calls)), 5)
        assert all(i.initiated_by is Initiator.REMOTE for i in infos)
        # Call-Disconnect-Notify (admin shutdown, result 3) for each call first.
        assert all(i.result_code == 3 for i in infos), infos
        assert client.closed is not None
        closed = await asyncio.wait_for(client.closed, 5)
        assert closed.clean and "Stop-Control-Connection-Request" in closed.reason

    with inside(client_ns):
        asyncio.run(scenario())
    assert server.proc.wait(5) == 0
    assert "shutting down" in server.log()
    pids = server.program_pids()
    assert len(pids) == 2 and not any(alive(p) for p in pids)
    assert [p for p in pids_in(server_ns) if p != os.getpid()] == []


def _pty(netlab: NetnsLab, ns: str, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return netlab.popen(ns, [sys.executable, "-m", "pptpkit", "pty", SERVER, "--timeout", "5", *args],
                        **kw)  # type: ignore[arg-type]


def _read_frames(fd: int, n: int, timeout: float = 10.0) -> list[bytes]:
    dec = HdlcDecoder(max_frame=65535)
    frames: list[bytes] = []
    end = time.monotonic() + timeout
    os.set_blocking(fd, True)
    while len(frames) < n:
        left = end - time.monotonic()
        assert left > 0, f"only {len(frames)} of {n} frames"
        import select

        if not select.select([fd], [], [], left)[0]:
            continue
        data = os.read(fd, 65536)
        assert data, f"EOF after {len(frames)} frames"
        frames += dec.feed(data)
    return frames


def test_pptpkit_pty_stdin_stdout(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path)
    proc = _pty(netlab, client_ns, "--summary", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    assert _read_frames(proc.stdout.fileno(), 1) == [GREETING]
    sent = payloads(5, 30)
    proc.stdin.write(b"".join(encode_frame(f) for f in sent))
    proc.stdin.flush()
    assert _read_frames(proc.stdout.fileno(), 30) == sent
    proc.stdin.close()  # EOF: Call-Clear-Request, then exit 0
    assert proc.wait(10) == 0
    err = proc.stderr.read().decode()
    assert "pptpkit-summary" in err and '"exit": 0' in err
    wait_until(lambda: not any(alive(p) for p in server.program_pids()), 5, "the program to go")
    assert server.received_frames(server.program_pids()[0]) == sent


@pytest.mark.parametrize("mode", ["flag", "stdout-closed"])
def test_pptpkit_pty_one_fd_and_server_hangup(lab: tuple[NetnsLab, str, str], tmp_path: Path,
                                              mode: str) -> None:
    """fd 0 both ways (pptp-linux style, a socketpair end), asked for with --stdin-only or
    chosen because fd 1 is closed; the server clearing the call makes ``pptpkit pty`` exit
    with status 16 (hang-up, as pppd and ``pptpkit connect``) and one line on stderr."""
    netlab, server_ns, client_ns = lab
    server = Server(netlab, server_ns, tmp_path)
    ours, theirs = socket.socketpair()
    with ours:
        if mode == "flag":
            proc = _pty(netlab, client_ns, "--stdin-only", stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
        else:
            proc = netlab.popen(client_ns, [
                "sh", "-c", 'exec "$0" "$@" >&-', sys.executable, "-m", "pptpkit", "pty", SERVER,
            ], stdin=theirs.fileno(), stderr=subprocess.PIPE)
        theirs.close()
        assert _read_frames(ours.fileno(), 1) == [GREETING]
        ours.sendall(encode_frame(b"\xff\x03\x00\x21abc"))
        assert _read_frames(ours.fileno(), 1) == [b"\xff\x03\x00\x21abc"]
        wait_until(lambda: len(server.program_pids()) == 1, 5, "the program")
        os.kill(server.program_pids()[0], signal.SIGTERM)
        assert proc.wait(10) == 16
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "pptpkit pty: the server cleared the call:" in err, err
    assert "Traceback" not in err


def test_pptpkit_pty_connection_refused(lab: tuple[NetnsLab, str, str]) -> None:
    netlab, _, client_ns = lab
    proc = _pty(netlab, client_ns, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.wait(10) == 30  # as 'pptpkit connect': the control connection could not be opened
    assert proc.stderr is not None
    assert "cannot open the PPTP control connection to 192.0.2.1:1723" in proc.stderr.read().decode()


def test_pptpkit_pty_call_refused(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    """A program that cannot start: the server refuses the call (General Error / PAC error)
    and ``pptpkit pty`` exits 8 (as ``pptpkit connect``) naming the result code."""
    netlab, server_ns, client_ns = lab
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = netlab.popen(server_ns, [
            sys.executable, "-m", "pptpkit", "server", "--listen", SERVER, "--delegate",
            "--ppp-program", str(tmp_path / "missing-program"),
        ], stdout=subprocess.DEVNULL, stderr=log)
    probe = Server.__new__(Server)
    probe.ns = server_ns
    wait_until(probe.listening, 10, "the server to listen")
    proc = _pty(netlab, client_ns, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.wait(10) == 8
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "192.0.2.1 refused the call" in err and "result code 2, error code 6" in err, err
    server.send_signal(signal.SIGTERM)
    assert server.wait(5) == 0
    assert "refusing call from 192.0.2.2" in log_path.read_text()
