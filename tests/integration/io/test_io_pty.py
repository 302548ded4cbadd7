"""Raw ptys, child programs on them, and the fd byte stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import termios
import textwrap
from pathlib import Path

from pptpkit.io.pty import FdStream, attach_engine, open_raw_pty, spawn_on_pty

ALL_BYTES = bytes(range(256))

# The child checks its own stdin is raw, reads 4 x 256 bytes, verifies them, answers with the
# same values in reverse order (so both directions see every value) and exits 0 on success.
CHILD = textwrap.dedent(
    """
    import os, sys, termios
    attrs = termios.tcgetattr(0)
    lflag = attrs[3]
    if lflag & (termios.ECHO | termios.ICANON | termios.ISIG):
        os.write(2, b"not raw\\n"); sys.exit(3)
    want = bytes(range(256)) * 4
    got = b""
    while len(got) < len(want):
        chunk = os.read(0, 4096)
        if not chunk:
            break
        got += chunk
    if got != want:
        os.write(2, b"mismatch %d\\n" % len(got)); sys.exit(4)
    os.write(2, b"child ok\\n")
    out = bytes(reversed(range(256))) * 4
    while out:
        n = os.write(1, out)
        out = out[n:]
    # Wait for the parent's goodbye so our output is read before the pty goes away.
    os.read(0, 1)
    sys.exit(0)
    """
)


def test_open_raw_pty_settings() -> None:
    master, slave = open_raw_pty()
    try:
        attrs = termios.tcgetattr(slave)
        assert not attrs[3] & (termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        assert not attrs[0] & (termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON | termios.ISTRIP)
        assert not attrs[1] & termios.OPOST
        assert attrs[2] & termios.CSIZE == termios.CS8
        assert not os.get_blocking(master)
        # Through the line discipline and back without a child: every value, both ways.
        os.write(master, ALL_BYTES)
        got = b""
        while len(got) < 256:
            got += os.read(slave, 1024)
        assert got == ALL_BYTES
        os.write(slave, ALL_BYTES)
        got = b""
        while len(got) < 256:
            with contextlib.suppress(BlockingIOError):
                got += os.read(master, 1024)
        assert got == ALL_BYTES
    finally:
        os.close(master)
        os.close(slave)


def test_child_exchanges_every_byte_value_and_is_reaped(tmp_path: Path) -> None:
    log = tmp_path / "child.log"

    async def main() -> None:
        proc = await spawn_on_pty([sys.executable, "-c", CHILD], stderr=log)
        got = bytearray()
        closed: list[BaseException | None] = []
        exits: list[int] = []
        proc.on_exit(exits.append)
        proc.stream.start(got.extend, closed.append)
        for _ in range(4):
            assert proc.stream.write(ALL_BYTES)
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while len(got) < 1024 and loop.time() < end and not proc.exited.done():
            await asyncio.sleep(0.01)
        assert bytes(got) == bytes(reversed(range(256))) * 4, log.read_text()
        proc.stream.write(b"\x00")
        assert await asyncio.wait_for(proc.exited, 10) == 0
        assert exits == [0]
        # The child is gone: the master reports the end of the stream.
        while not closed:
            await asyncio.sleep(0.01)
        assert closed == [None]
        assert proc.returncode == 0
        await proc.close()
        assert proc.stream.closed

    asyncio.run(main())
    assert "child ok" in log.read_text()


def test_kill_and_stop() -> None:
    async def main() -> None:
        proc = await spawn_on_pty(["sleep", "30"])
        closed: list[BaseException | None] = []
        proc.stream.start(lambda d: None, closed.append)
        proc.kill()
        assert await asyncio.wait_for(proc.exited, 5) == -signal.SIGKILL
        await asyncio.sleep(0.05)
        assert closed == [None]
        with_exit: list[int] = []
        proc.on_exit(with_exit.append)  # after the fact: called at once
        assert with_exit == [-signal.SIGKILL]
        await proc.close()

        # stop(): SIGTERM first, SIGKILL when ignored.
        stubborn = await spawn_on_pty(
            [sys.executable, "-c", "import signal,time,os; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
             " os.write(1, b'r'); time.sleep(30)"]
        )
        ready: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def first(data: bytes) -> None:
            if not ready.done():
                ready.set_result(data)

        stubborn.stream.start(first)
        await asyncio.wait_for(ready, 10)
        assert await stubborn.close(timeout=0.3) == -signal.SIGKILL
        polite = await spawn_on_pty(["sleep", "30"])
        assert await polite.close() == -signal.SIGTERM
        # Nothing left: both pids reaped.
        for p in (proc, stubborn, polite):
            assert not Path(f"/proc/{p.pid}").exists()

    asyncio.run(main())


def test_fd_stream_socketpair_cap_and_eof() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        stream = FdStream(ours.detach(), max_write_buffer=10_000)
        got = bytearray()
        ended: list[BaseException | None] = []
        stream.start(got.extend, ended.append)
        theirs.sendall(ALL_BYTES)
        while len(got) < 256:
            await asyncio.sleep(0.01)
        assert bytes(got) == ALL_BYTES
        # The peer does not read: the kernel buffer fills, then ours, then writes are dropped whole.
        accepted = 0
        for _ in range(200):
            if stream.write(b"z" * 1000):
                accepted += 1
        assert stream.stats.dropped_writes == 200 - accepted > 0
        assert stream.write_buffer_size() <= 10_000
        # Now the peer reads everything: exactly the accepted writes arrive, intact.
        theirs.setblocking(False)
        received = bytearray()
        drain = asyncio.ensure_future(stream.drain())
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while len(received) < accepted * 1000 and loop.time() < end:
            try:
                received += theirs.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        assert received == b"z" * 1000 * accepted
        await asyncio.wait_for(drain, 5)
        theirs.close()
        while not ended:
            await asyncio.sleep(0.01)
        assert ended == [None]
        assert not stream.write(b"late")
        stream.close()
        assert stream.closed

    asyncio.run(main())


def test_fd_stream_separate_read_and_write_fds() -> None:
    async def main() -> None:
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        stream = FdStream(r_in, write_fd=w_out)
        got = bytearray()
        stream.start(got.extend)
        os.write(w_in, b"in")
        assert stream.write(b"out")
        while not got:
            await asyncio.sleep(0.01)
        assert bytes(got) == b"in"
        assert os.read(r_out, 10) == b"out"
        stream.close()
        for fd in (r_in, w_out):
            try:
                os.fstat(fd)
                raise AssertionError("fd left open")
            except OSError:
                pass
        os.close(w_in)
        os.close(r_out)

    asyncio.run(main())


class Upper:
    """A minimal sans-IO stream engine: answers each chunk upper-cased, closes on b'!'."""

    def __init__(self) -> None:
        self.out = bytearray(b"hi")
        self.events: list[object] = []
        self.done = False
        self.lost = False

    def receive_data(self, data: bytes, now: float) -> None:
        self.events.append(data)
        self.out += data.upper()
        if b"!" in data:
            self.done = True

    def data_to_send(self) -> bytes:
        out, self.out = bytes(self.out), bytearray()
        return out

    def next_event(self) -> object | None:
        return self.events.pop(0) if self.events else None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def connection_lost(self, now: float) -> None:
        self.lost = True

    @property
    def closed(self) -> bool:
        return self.done


def test_attach_engine_on_socketpair() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        stream = FdStream(ours.detach())
        seen: list[object] = []
        driver = attach_engine(stream, Upper(), on_event=lambda d, e: seen.append(e))
        loop = asyncio.get_running_loop()
        assert await loop.sock_recv(theirs, 10) == b"hi"
        await loop.sock_sendall(theirs, b"abc")
        assert await loop.sock_recv(theirs, 10) == b"ABC"
        await loop.sock_sendall(theirs, b"x!")
        assert await loop.sock_recv(theirs, 10) == b"X!"
        await asyncio.wait_for(driver.closed_future, 5)
        assert stream.closed
        assert seen == [b"abc", b"x!"]
        assert await loop.sock_recv(theirs, 10) == b""
        theirs.close()

        # The other way round: the peer goes away, the engine hears connection_lost.
        ours, theirs = socket.socketpair()
        engine = Upper()
        driver = attach_engine(FdStream(ours.detach()), engine)
        theirs.close()
        await asyncio.wait_for(driver.closed_future, 5)
        assert engine.lost

    asyncio.run(main())
