"""A thin asyncio adapter for sans-IO byte-stream engines (docs/conventions.md).

The engine owns all protocol logic; this module only moves bytes, the clock and one timer:

* :class:`EngineDriver` is transport-agnostic: it feeds bytes with ``loop.time()``, writes what
  the engine queued, keeps exactly one ``loop.call_at`` handle armed at ``engine.get_timer()``,
  hands events to a callback and closes the byte stream when the engine reports ``closed``.
  It can :meth:`~EngineDriver.hold` what arrives until the application decides whether the
  engine may see it at all (a server that must ask someone else before it admits a
  connection answers nothing until then; at most :data:`MAX_HELD` octets are kept).
* :class:`EngineConnection` is an :class:`asyncio.Protocol` around a driver (TCP and any other
  asyncio stream transport).
* :func:`open_tcp_connection` / :func:`start_tcp_server` open a TCP client / listener with it.

Calling an engine method from application code (for example "start a call") queues output in the
engine; call :meth:`EngineDriver.flush` afterwards so it reaches the wire and the timer is
re-armed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from pptpkit.io.deadline import Deadline
from pptpkit.io.throttle import LogThrottle, left_out_text

__all__ = [
    "MAX_HELD",
    "ConnectionInfo",
    "EngineConnection",
    "EngineDriver",
    "EngineServer",
    "StreamEngine",
    "listen_backlog",
    "open_tcp_connection",
    "start_tcp_server",
]

log = logging.getLogger(__name__)

#: Octets :meth:`EngineDriver.hold` keeps; a peer that sends more while held is cut off.  A
#: PPTP client sends 156 (Start-Control-Connection-Request) before it hears anything.
MAX_HELD: Final = 4096


class StreamEngine(Protocol):
    """What the adapter needs from a sans-IO byte-stream engine."""

    def receive_data(self, data: bytes, now: float) -> None: ...

    def data_to_send(self) -> bytes: ...

    def next_event(self) -> object | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def connection_lost(self, now: float) -> None: ...

    @property
    def closed(self) -> bool: ...


E = TypeVar("E", bound=StreamEngine)

# Default cap on bytes queued in a TCP transport before we stop reading from that peer.  A peer
# that never reads (while making us answer) could otherwise grow our write buffer without bound.
DEFAULT_WRITE_HIGH_WATER = 256 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionInfo:
    """Passed to an engine factory when a connection is up.

    ``now`` is ``loop.time()`` at that moment, for engines whose constructor or start method
    takes the current time; ``local`` / ``peer`` are socket addresses (``None`` when the
    transport has none, for example a pipe).
    """

    now: float
    local: tuple[Any, ...] | None
    peer: tuple[Any, ...] | None


class EngineDriver(Generic[E]):
    """Runs one engine on one byte stream given as two functions (``write``, ``close``).

    ``on_event(driver, event)`` is called for every event in order; it may call engine methods
    and :meth:`flush` re-entrantly (the nested flush is folded into the running one).
    ``on_closed(driver)`` is called once when the stream is finished, whichever side ended it.
    """

    __slots__ = (
        '_again', '_close', '_deadline', '_finished', '_flushing', '_held', '_loop', '_on_closed',
        '_on_event', '_on_overflow', '_write', 'closed_future', 'engine',
    )

    def __init__(
        self,
        engine: E,
        *,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[bytes], object],
        close: Callable[[], object],
        on_event: Callable[[EngineDriver[E], object], None] | None = None,
        on_closed: Callable[[EngineDriver[E]], None] | None = None,
    ) -> None:
        self.engine = engine
        self._loop = loop
        self._write = write
        self._close = close
        self._on_event = on_event
        self._on_closed = on_closed
        self._deadline = Deadline(loop, self._on_deadline)
        self._flushing = False
        self._again = False
        self._finished = False
        #: What arrived while held (:meth:`hold`); None: not held.
        self._held: bytearray | None = None
        self._on_overflow: Callable[[int], object] | None = None
        self.closed_future: asyncio.Future[None] = loop.create_future()

    @property
    def finished(self) -> bool:
        """True once the stream has been closed (by the engine or by the transport)."""
        return self._finished

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        if self._held is not None:
            if len(self._held) + len(data) > MAX_HELD:
                total, self._held = len(self._held) + len(data), None
                # The engine never sees any of it; whoever held the stream says why it ends.
                if self._on_overflow is not None:
                    self._on_overflow(total)
                self.close()
                return
            self._held += data
            return
        self.engine.receive_data(data, self._loop.time())
        self.flush()

    def hold(self, on_overflow: Callable[[int], object] | None = None) -> None:
        """Keep what arrives from now on from the engine until :meth:`release` (the engine's
        timers still run).  More than :data:`MAX_HELD` octets end the stream, after
        ``on_overflow(octets)`` (which may stop the engine itself)."""
        if self._held is None and not self._finished:
            self._held = bytearray()
            self._on_overflow = on_overflow

    def release(self) -> None:
        """Give the engine what arrived while held, and everything after it."""
        held, self._held, self._on_overflow = self._held, None, None
        if held and not self._finished:
            self.engine.receive_data(bytes(held), self._loop.time())
            self.flush()

    def stream_lost(self) -> None:
        """The byte stream ended underneath the engine (EOF, reset, local close)."""
        if self._finished:
            return
        if not self.engine.closed:
            self.engine.connection_lost(self._loop.time())
        # Nothing more can be written; still deliver what the engine reported about the loss.
        self.engine.data_to_send()
        self._drain_events()
        self._finish(close_stream=False)

    def flush(self) -> None:
        """Write queued output, deliver events, re-arm the timer, close when the engine is done."""
        if self._finished:
            return
        if self._flushing:
            # Called from inside an event callback: the outer loop picks the work up.
            self._again = True
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                data = self.engine.data_to_send()
                if data:
                    self._write(data)
                self._drain_events()
                if not self._again:
                    break
        finally:
            self._flushing = False
        if self._finished:
            return
        if self.engine.closed:
            self._finish(close_stream=True)
            return
        self._deadline.arm(self.engine.get_timer())

    def close(self) -> None:
        """Close the stream from our side without telling the engine anything beforehand.

        Applications normally ask the engine to shut down (so it can say goodbye on the wire)
        and let :meth:`flush` close the stream; this is the hard stop.
        """
        if self._finished:
            return
        if not self.engine.closed:
            self.engine.connection_lost(self._loop.time())
        self._drain_events()
        self._finish(close_stream=True)

    def _drain_events(self) -> None:
        while (event := self.engine.next_event()) is not None:
            if self._on_event is not None:
                self._on_event(self, event)

    def _on_deadline(self, now: float) -> None:
        if self._finished:
            return
        self.engine.handle_timer(now)
        self.flush()

    def _finish(self, *, close_stream: bool) -> None:
        self._finished = True
        self._deadline.cancel()
        if close_stream:
            self._close()
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        if self._on_closed is not None:
            self._on_closed(self)


class EngineConnection(asyncio.Protocol, Generic[E]):
    """An asyncio stream protocol whose logic is one sans-IO engine.

    The engine is built by ``engine_factory(ConnectionInfo)`` in ``connection_made``; until then
    :attr:`driver` is ``None``.  Reading pauses while the transport's write buffer is above its
    high-water mark so a peer that does not read cannot make us buffer without bound.
    """

    __slots__ = (
        '_factory', '_high_water', '_loop', '_on_closed', '_on_connection', '_on_event',
        '_on_transport_lost', 'connected', 'driver', 'transport',
    )

    def __init__(
        self,
        engine_factory: Callable[[ConnectionInfo], E],
        *,
        on_event: Callable[[EngineDriver[E], object], None] | None = None,
        on_closed: Callable[[EngineDriver[E]], None] | None = None,
        on_connection: Callable[[EngineDriver[E]], None] | None = None,
        on_transport_lost: Callable[[EngineConnection[E]], None] | None = None,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
    ) -> None:
        self._factory = engine_factory
        self._on_event = on_event
        self._on_closed = on_closed
        self._on_connection = on_connection
        self._on_transport_lost = on_transport_lost
        self._high_water = write_high_water
        self.transport: asyncio.Transport | None = None
        self.driver: EngineDriver[E] | None = None
        self._loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[EngineDriver[E]] = self._loop.create_future()

    @property
    def engine(self) -> E:
        if self.driver is None:
            raise RuntimeError("connection not made yet")
        return self.driver.engine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily an asyncio.Transport subclass (uvloop's
        # are not registered as one).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self._high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.type == socket.SOCK_STREAM and sock.family != socket.AF_UNIX:
            # Control messages are small and latency-bound (echo timers, call setup).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        info = ConnectionInfo(
            now=self._loop.time(),
            local=transport.get_extra_info("sockname"),
            peer=transport.get_extra_info("peername"),
        )
        engine = self._factory(info)
        self.driver = EngineDriver(
            engine,
            loop=self._loop,
            write=transport.write,
            close=transport.close,
            on_event=self._on_event,
            on_closed=self._on_closed,
        )
        if not self.connected.done():
            self.connected.set_result(self.driver)
        if self._on_connection is not None:
            self._on_connection(self.driver)
        # Engines that speak first (a client's first request) queued it in their constructor.
        self.driver.flush()

    def data_received(self, data: bytes) -> None:
        if self.driver is not None:
            self.driver.data_received(data)

    def eof_received(self) -> bool | None:
        # Half-closed streams are not part of any protocol we carry: treat EOF as the end.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection lost: %s", exc)
        if self.driver is not None:
            self.driver.stream_lost()
        elif not self.connected.done():
            self.connected.set_exception(ConnectionError("connection lost before it was made"))
        if self._on_transport_lost is not None:
            self._on_transport_lost(self)

    def pause_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


async def open_tcp_connection(
    host: str,
    port: int,
    engine_factory: Callable[[ConnectionInfo], E],
    *,
    on_event: Callable[[EngineDriver[E], object], None] | None = None,
    on_closed: Callable[[EngineDriver[E]], None] | None = None,
    local_addr: tuple[str, int] | None = None,
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
) -> EngineDriver[E]:
    """Connect to ``host:port`` and return the running driver (the engine is ``.engine``)."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: EngineConnection(
            engine_factory, on_event=on_event, on_closed=on_closed, write_high_water=write_high_water
        ),
        host,
        port,
        local_addr=local_addr,
    )
    return await proto.connected


class EngineServer(Generic[E]):
    """A TCP listener that gives every accepted connection its own engine.

    ``max_connections`` caps the live connections (a peer can open as many as it likes);
    connections beyond it are closed at once without building an engine, counted in
    ``refused`` and logged at most once per :data:`~pptpkit.io.throttle.DEFAULT_LOG_INTERVAL`.
    """

    def __init__(
        self,
        engine_factory: Callable[[ConnectionInfo], E],
        *,
        on_event: Callable[[EngineDriver[E], object], None] | None = None,
        on_closed: Callable[[EngineDriver[E]], None] | None = None,
        on_connection: Callable[[EngineDriver[E]], None] | None = None,
        max_connections: int = 1024,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._factory = engine_factory
        self._on_event = on_event
        self._on_closed = on_closed
        self._on_connection = on_connection
        self.max_connections = max_connections
        self._high_water = write_high_water
        # Counted from accept (not from connection_made) so a burst of accepts in one loop
        # iteration cannot overshoot the cap.
        self._live: set[EngineConnection[E]] = set()
        self.refused = 0
        self._refusal_log = LogThrottle()
        self.server: asyncio.Server | None = None

    @property
    def drivers(self) -> list[EngineDriver[E]]:
        """The drivers of the connections that are currently open."""
        return [c.driver for c in self._live if c.driver is not None and not c.driver.finished]

    def _protocol(self) -> asyncio.Protocol:
        if len(self._live) >= self.max_connections:
            self.refused += 1
            left_out = self._refusal_log(asyncio.get_running_loop().time())
            if left_out is not None:
                log.warning("refusing a connection: %d connections already (the limit)%s",
                            self.max_connections, left_out_text(left_out))
            return _Refuse()
        conn = EngineConnection(
            self._factory,
            on_event=self._on_event,
            on_closed=self._on_closed,
            on_connection=self._on_connection,
            on_transport_lost=self._live.discard,
            write_high_water=self._high_water,
        )
        self._live.add(conn)
        return conn

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        if self.server is None:
            return ()
        return tuple(self.server.sockets)

    def close(self, *, connections: bool = True) -> None:
        """Stop listening and (by default) hard-close every live connection."""
        if self.server is not None:
            self.server.close()
        if connections:
            for driver in self.drivers:
                driver.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


_SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"


def listen_backlog(wanted: int) -> int:
    """``wanted`` (at least 1) capped by this network namespace's ``net.core.somaxconn``.

    The kernel caps a listen backlog at somaxconn silently; capping here makes the figure we log
    the one in force.  When the sysctl cannot be read, ``wanted`` is returned as is.
    """
    wanted = max(1, wanted)
    try:
        with open(_SOMAXCONN_PATH, encoding="ascii") as f:
            limit = int(f.read().strip())
    except (OSError, ValueError):
        return wanted
    if limit < wanted:
        log.info("listen backlog %d capped at net.core.somaxconn = %d", wanted, limit)
        return max(1, limit)
    return wanted


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def start_tcp_server(
    host: str | None,
    port: int,
    engine_factory: Callable[[ConnectionInfo], E],
    *,
    on_event: Callable[[EngineDriver[E], object], None] | None = None,
    on_closed: Callable[[EngineDriver[E]], None] | None = None,
    on_connection: Callable[[EngineDriver[E]], None] | None = None,
    max_connections: int = 1024,
    backlog: int = 128,
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
    reuse_port: bool = False,
) -> EngineServer[E]:
    """Listen on ``host:port`` (``port`` 0 picks one; see ``EngineServer.sockets``).
    ``reuse_port``: ``SO_REUSEPORT``, so the kernel spreads connections over every process
    listening on the port (the workers of one server)."""
    loop = asyncio.get_running_loop()
    srv: EngineServer[E] = EngineServer(
        engine_factory,
        on_event=on_event,
        on_closed=on_closed,
        on_connection=on_connection,
        max_connections=max_connections,
        write_high_water=write_high_water,
    )

    srv.server = await loop.create_server(srv._protocol, host, port, backlog=backlog, reuse_address=True,
                                            reuse_port=reuse_port or None)
    return srv
