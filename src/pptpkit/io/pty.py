"""Byte streams on plain file descriptors, and child programs on a raw pty.

* :class:`FdStream`: a non-blocking, loop-driven byte stream over one fd (a pty master, a
  socketpair end) or a read/write pair (our own stdin/stdout), with a capped write buffer.
  :func:`attach_engine` runs a sans-IO stream engine on it (see :mod:`pptpkit.io.driver`).
* :func:`open_raw_pty` / :func:`set_raw`: a pty pair whose line discipline passes all 256 byte
  values unchanged (async-HDLC PPP frames are binary: no echo, no line editing, no signals,
  no CR/NL mapping, 8 bits).
* :func:`spawn_on_pty`: start a program with the pty slave as stdin and stdout, as pptpd's
  pptpctrl does for its PPP program; :class:`PtyProcess` reaps it asynchronously and kills it
  on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import termios
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final, TypeVar

from pptpkit.io.driver import EngineDriver, StreamEngine

__all__ = [
    "FdStream",
    "FdStreamStats",
    "PtyProcess",
    "attach_engine",
    "open_raw_pty",
    "set_raw",
    "spawn_on_pty",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_WRITE_BUFFER: Final = 256 * 1024
_READ_SIZE: Final = 65536

E = TypeVar("E", bound=StreamEngine)


# -- raw terminal mode -------------------------------------------------------------------------


def set_raw(fd: int) -> None:
    """Put the terminal behind ``fd`` in raw 8-bit mode (the cfmakeraw(3) settings).

    ``tty.setraw`` leaves IGNBRK, PARMRK, INLCR, IGNCR and ECHONL alone; any of them would
    alter or swallow bytes of a binary stream, so every input/output/local transformation is
    cleared here explicitly.
    """
    attrs: list[Any] = termios.tcgetattr(fd)
    iflag, oflag, cflag, lflag = attrs[0], attrs[1], attrs[2], attrs[3]
    iflag &= ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
        | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
        | termios.INPCK | termios.IUCLC | termios.IMAXBEL
    )
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB)
    cflag |= termios.CS8 | termios.CREAD
    attrs[0], attrs[1], attrs[2], attrs[3] = iflag, oflag, cflag, lflag
    cc = list(attrs[6])
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    attrs[6] = cc
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def open_raw_pty() -> tuple[int, int]:
    """A new pty pair ``(master, slave)`` in raw mode; the master is non-blocking."""
    master, slave = os.openpty()
    try:
        set_raw(slave)
        os.set_blocking(master, False)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


# -- a byte stream on file descriptors ---------------------------------------------------------


@dataclass(slots=True)
class FdStreamStats:
    bytes_read: int = 0
    bytes_written: int = 0
    dropped_writes: int = 0
    dropped_bytes: int = 0


class FdStream:
    """A non-blocking byte stream on ``fd`` (or ``fd`` for reading, ``write_fd`` for writing).

    :meth:`start` registers the callbacks and begins reading: ``on_data(bytes)`` for each read,
    ``on_close(exc)`` exactly once when the stream ends (EOF, EIO from a pty master whose
    slave side is gone, or a write error; ``exc`` is ``None`` for a plain EOF).

    Writes go out at once when the fd accepts them; the rest waits in a buffer of at most
    ``max_write_buffer`` bytes.  A write that does not fit is dropped *whole* and counted:
    the streams carried here hold framed datagrams (async-HDLC PPP frames), for which losing
    a frame is a normal link event while a partial frame or unbounded memory is not.
    """

    def __init__(
        self,
        fd: int,
        *,
        write_fd: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        close_fds: bool = True,
        max_reads_per_wakeup: int = 16,
    ) -> None:
        self.read_fd = fd
        self.write_fd = fd if write_fd is None else write_fd
        self._loop = loop or asyncio.get_running_loop()
        self.max_write_buffer = max_write_buffer
        self._close_fds = close_fds
        self._max_reads = max_reads_per_wakeup
        self._wbuf = bytearray()
        self._on_data: Callable[[bytes], None] | None = None
        self._on_close: Callable[[BaseException | None], None] | None = None
        self._reading = False
        self._writing = False
        self._ended = False
        self._closed = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.stats = FdStreamStats()
        os.set_blocking(self.read_fd, False)
        if self.write_fd != self.read_fd:
            os.set_blocking(self.write_fd, False)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ended(self) -> bool:
        """True once ``on_close`` has been (or would have been) called."""
        return self._ended

    def write_buffer_size(self) -> int:
        return len(self._wbuf)

    def start(
        self,
        on_data: Callable[[bytes], None],
        on_close: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        if self._closed:
            raise ValueError("stream is closed")
        self._on_data = on_data
        self._on_close = on_close
        self.resume_reading()

    def pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.read_fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._ended and not self._closed and self._on_data is not None:
            self._loop.add_reader(self.read_fd, self._on_readable)
            self._reading = True

    def _on_readable(self) -> None:
        for _ in range(self._max_reads):
            if not self._reading:
                return
            try:
                data = os.read(self.read_fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # A pty master reads EIO once no process holds the slave any more: that is
                # the child's EOF, not a failure.
                self._end(None if exc.errno == errno.EIO else exc)
                return
            if not data:
                self._end(None)
                return
            self.stats.bytes_read += len(data)
            assert self._on_data is not None
            self._on_data(data)

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Queue ``data``; False (and nothing queued) if the stream ended or the buffer is full."""
        if self._ended or self._closed:
            return False
        if not data:
            return True
        if len(self._wbuf) + len(data) > self.max_write_buffer:
            self.stats.dropped_writes += 1
            self.stats.dropped_bytes += len(data)
            return False
        if not self._wbuf:
            try:
                n = os.write(self.write_fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._end(exc)
                return False
            self.stats.bytes_written += n
            if n == len(data):
                return True
            data = memoryview(data)[n:]
        self._wbuf += data
        if not self._writing:
            self._loop.add_writer(self.write_fd, self._on_writable)
            self._writing = True
        return True

    def _on_writable(self) -> None:
        while self._wbuf:
            try:
                n = os.write(self.write_fd, self._wbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._end(exc)
                return
            self.stats.bytes_written += n
            del self._wbuf[:n]
        self._stop_writing()
        self._wake_drainers()

    def _stop_writing(self) -> None:
        if self._writing:
            self._loop.remove_writer(self.write_fd)
            self._writing = False

    def _wake_drainers(self) -> None:
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    async def drain(self) -> None:
        """Wait until everything written so far has been handed to the fd (or the stream ended)."""
        if not self._wbuf or self._ended or self._closed:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    def _end(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.pause_reading()
        self._stop_writing()
        self._wbuf.clear()
        self._wake_drainers()
        if exc is not None:
            log.debug("stream on fd %d ended: %s", self.read_fd, exc)
        if self._on_close is not None:
            self._on_close(exc)

    def close(self) -> None:
        """Stop, drop unwritten data, close the fds (if owned); ``on_close`` runs if it has not."""
        if self._closed:
            return
        self._end(None)
        self._closed = True
        if self._close_fds:
            for fd in {self.read_fd, self.write_fd}:
                with contextlib.suppress(OSError):
                    os.close(fd)


def attach_engine(
    stream: FdStream,
    engine: E,
    *,
    on_event: Callable[[EngineDriver[E], object], None] | None = None,
    on_closed: Callable[[EngineDriver[E]], None] | None = None,
) -> EngineDriver[E]:
    """Run a sans-IO stream engine on ``stream`` (bytes, clock, timer and close wired up)."""
    driver: EngineDriver[E] = EngineDriver(
        engine,
        loop=stream.loop,
        write=stream.write,
        close=stream.close,
        on_event=on_event,
        on_closed=on_closed,
    )
    stream.start(driver.data_received, lambda exc: driver.stream_lost())
    driver.flush()
    return driver


# -- a child program on a pty ------------------------------------------------------------------


class PtyProcess:
    """A child whose stdin and stdout are the slave of a raw pty; we hold the master.

    ``stream`` is an :class:`FdStream` on the master (not started: call ``stream.start``).
    ``exited`` resolves to the exit status once the child has been reaped (negative: killed by
    that signal); ``on_exit`` callbacks run then as well.
    """

    def __init__(self, process: asyncio.subprocess.Process, master_fd: int, stream: FdStream) -> None:
        self.process = process
        self.pid = process.pid
        self.master_fd = master_fd
        self.stream = stream
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self._exit_callbacks: list[Callable[[int], None]] = []
        self._reaper = loop.create_task(self._reap())

    async def _reap(self) -> None:
        code = await self.process.wait()
        if not self.exited.done():
            self.exited.set_result(code)
        for cb in self._exit_callbacks:
            cb(code)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def on_exit(self, callback: Callable[[int], None]) -> None:
        if self.exited.done():
            callback(self.exited.result())
        else:
            self._exit_callbacks.append(callback)

    def send_signal(self, sig: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 2.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if not self.exited.done():
            self.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout)
            except TimeoutError:
                self.kill()
        return await self.exited

    async def close(self, timeout: float = 2.0) -> int:
        """Stop the child and close our side of the pty."""
        code = await self.stop(timeout)
        self.stream.close()
        return code


async def spawn_on_pty(
    argv: Sequence[str],
    *,
    stderr: str | os.PathLike[str] | int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
) -> PtyProcess:
    """Start ``argv`` with a raw pty slave as stdin and stdout.

    ``stderr``: a path (appended to, for a log), an fd, or ``None`` for ``/dev/null``.  The child
    runs in its own session so signals meant for us (Ctrl-C) do not reach it; it gets no
    controlling terminal, and it learns that we went away from EOF/EIO on its stdin.
    """
    master, slave = open_raw_pty()
    err_file: IO[bytes] | None = None
    try:
        if isinstance(stderr, int):
            err: int = stderr
        elif stderr is None:
            err = asyncio.subprocess.DEVNULL
        else:
            err_file = open(stderr, "ab")  # noqa: SIM115 - closed right after the spawn
            err = err_file.fileno()
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=err,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        # Only the child may hold the slave: the master sees EIO (the child's EOF) once it exits.
        os.close(slave)
        if err_file is not None:
            err_file.close()
    stream = FdStream(master, max_write_buffer=max_write_buffer)
    return PtyProcess(process, master, stream)
