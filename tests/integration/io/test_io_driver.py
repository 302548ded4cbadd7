"""The generic asyncio engine adapter, driven over real loopback TCP with a small fake engine."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pytest

from pptpkit.io.driver import (
    ConnectionInfo,
    EngineConnection,
    EngineDriver,
    EngineServer,
    open_tcp_connection,
    start_tcp_server,
)


@dataclass(frozen=True, kw_only=True)
class Line:
    text: bytes
    at: float


@dataclass(frozen=True, kw_only=True)
class Ticked:
    at: float


@dataclass(frozen=True, kw_only=True)
class Lost:
    at: float


class LineEcho:
    """A line protocol: echoes each line upper-cased, ``quit`` closes, ``tick`` arms a timer.

    It speaks first (a greeting queued in the constructor), as a PPTP client engine does.
    """

    def __init__(self, info: ConnectionInfo, *, tick_delay: float = 0.05) -> None:
        self.info = info
        self._buf = b""
        self._out = bytearray(b"hello\n")
        self._events: list[object] = []
        self._timer: float | None = None
        self._tick_delay = tick_delay
        self._closed = False
        self.lost_calls = 0
        self.timer_calls: list[float] = []

    def receive_data(self, data: bytes, now: float) -> None:
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._events.append(Line(text=line, at=now))
            if line == b"quit":
                self._out += b"bye\n"
                self._closed = True
                return
            if line == b"tick":
                self._timer = now + self._tick_delay
            else:
                self._out += line.upper() + b"\n"

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> object | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        if self._timer is not None and now >= self._timer:
            self._timer = None
            self._out += b"tock\n"
            self._events.append(Ticked(at=now))

    def connection_lost(self, now: float) -> None:
        self.lost_calls += 1
        self._closed = True
        self._events.append(Lost(at=now))

    @property
    def closed(self) -> bool:
        return self._closed


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 5)


def _port(srv_sockets: tuple[socket.socket, ...]) -> int:
    return int(srv_sockets[0].getsockname()[1])


Seen = list[tuple[EngineDriver[LineEcho], object]]


async def _server_and_client() -> tuple[EngineServer[LineEcho], int, Seen]:
    events: Seen = []
    srv = await start_tcp_server(
        "127.0.0.1", 0, LineEcho, on_event=lambda d, e: events.append((d, e)), max_connections=2
    )
    return srv, _port(srv.sockets), events


def test_echo_greeting_timer_and_engine_close() -> None:
    async def main() -> None:
        events: list[tuple[EngineDriver[LineEcho], object]] = []
        closed: list[EngineDriver[LineEcho]] = []
        srv = await start_tcp_server(
            "127.0.0.1", 0, LineEcho, on_event=lambda d, e: events.append((d, e)), on_closed=closed.append
        )
        port = _port(srv.sockets)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_line(reader) == b"hello\n"
        writer.write(b"abc\nde")
        assert await _read_line(reader) == b"ABC\n"
        writer.write(b"f\n")
        assert await _read_line(reader) == b"DEF\n"
        assert [e.text for _, e in events if isinstance(e, Line)] == [b"abc", b"def"]
        driver = events[0][0]
        # The engine saw the peer addresses and loop time.
        assert driver.engine.info.peer == writer.get_extra_info("sockname")
        assert driver.engine.info.local == ("127.0.0.1", port)

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        writer.write(b"tick\n")
        assert await _read_line(reader) == b"tock\n"
        assert loop.time() - t0 >= 0.05 - 0.005
        ticks = [e for _, e in events if isinstance(e, Ticked)]
        assert len(ticks) == 1
        # One timer handle at a time: handle_timer ran exactly once for one deadline.
        assert len(driver.engine.timer_calls) == 1

        writer.write(b"quit\n")
        assert await _read_line(reader) == b"bye\n"
        # The engine said closed: the transport is closed, the peer sees EOF.
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(driver.closed_future, 5)
        assert closed == [driver]
        assert driver.engine.lost_calls == 0
        assert srv.drivers == []
        writer.close()
        srv.close()
        await srv.wait_closed()

    asyncio.run(main())


def test_peer_close_reports_connection_lost_and_cancels_timer() -> None:
    async def main() -> None:
        srv, port, events = await _server_and_client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_line(reader) == b"hello\n"
        writer.write(b"tick\n")
        await asyncio.sleep(0.01)
        writer.close()
        driver = events[0][0]
        await asyncio.wait_for(driver.closed_future, 5)
        assert driver.engine.lost_calls == 1
        assert isinstance(events[-1][1], Lost)
        # The armed tick must not fire after the loss.
        await asyncio.sleep(0.1)
        assert driver.engine.timer_calls == []
        srv.close()

    asyncio.run(main())


def test_client_helper_and_reentrant_flush() -> None:
    async def main() -> None:
        got: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                got.append(line)
                if line == b"hello\n":
                    writer.write(b"x\n")
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        seen: list[object] = []

        def on_event(driver: EngineDriver[LineEcho], event: object) -> None:
            seen.append(event)
            if isinstance(event, Line) and event.text == b"x":
                # An application reacting to an event by feeding the engine and flushing again
                # from inside the callback: the nested flush must be picked up.
                driver.engine.receive_data(b"quit\n", 0.0)
                driver.flush()

        driver = await open_tcp_connection("127.0.0.1", port, LineEcho, on_event=on_event)
        await asyncio.wait_for(driver.closed_future, 5)
        await asyncio.sleep(0.05)
        assert got == [b"hello\n", b"X\n", b"bye\n"]
        assert [e.text for e in seen if isinstance(e, Line)] == [b"x", b"quit"]
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_max_connections_refuses_extra_peers() -> None:
    async def main() -> None:
        srv, port, _ = await _server_and_client()
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        lines = [await asyncio.wait_for(r.read(100), 5) for r, _ in conns]
        assert lines.count(b"hello\n") == 2
        assert lines.count(b"") == 1
        assert srv.refused == 1
        assert len(srv.drivers) == 2
        srv.close()
        for _, w in conns:
            w.close()

    asyncio.run(main())


def test_hard_close_from_application() -> None:
    async def main() -> None:
        srv, port, events = await _server_and_client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_line(reader) == b"hello\n"
        writer.write(b"a\n")
        await _read_line(reader)
        driver = events[0][0]
        driver.close()
        assert driver.finished
        assert driver.engine.lost_calls == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""
        srv.close()
        writer.close()

    asyncio.run(main())


def test_backpressure_pauses_reading() -> None:
    """A peer that sends but never reads: we stop reading once our write buffer is full."""

    async def main() -> None:
        conns: list[EngineConnection[LineEcho]] = []
        loop = asyncio.get_running_loop()

        class SmallSendBuffer(EngineConnection[LineEcho]):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # Shrink the kernel buffer so the user-space buffer fills after a few echoes.
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                super().connection_made(transport)

        def proto() -> EngineConnection[LineEcho]:
            c = SmallSendBuffer(LineEcho, write_high_water=4096)
            conns.append(c)
            return c

        server = await loop.create_server(proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        payload = b"y" * 1000 + b"\n"
        sent = 0
        for _ in range(4000):
            try:
                sent += sock.send(payload)
            except BlockingIOError:
                await asyncio.sleep(0.01)
            if conns and conns[0].transport is not None and not conns[0].transport.is_reading():
                break
            await asyncio.sleep(0)
        transport = conns[0].transport
        assert transport is not None
        assert not transport.is_reading()
        buffered = transport.get_write_buffer_size()
        assert buffered >= 4096
        sock.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_arbitrary_segmentation(chunk: int) -> None:
    async def main() -> None:
        srv, port, _ = await _server_and_client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_line(reader) == b"hello\n"
        data = b"".join(b"line%d\n" % i for i in range(50))
        for i in range(0, len(data), chunk):
            writer.write(data[i : i + chunk])
            await writer.drain()
        for i in range(50):
            assert await _read_line(reader) == b"LINE%d\n" % i
        srv.close()
        writer.close()

    asyncio.run(main())
