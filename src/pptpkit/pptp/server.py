"""The PPTP server (PAC, RFC 2637) on asyncio, with a pluggable per-call data plane.

:class:`PptpServer` listens on TCP (port 1723 on every address by default), runs one control
engine per connection, and for every Outgoing-Call-Request asks a *call handler factory* for the
call's data plane before it answers.  The factory gets a :class:`ServerCall` and returns a
:class:`CallHandler` (closed when the call ends).  A :class:`ServerCall` is a frame transport
(``send_frame``, ``close``) and a frame receiver: the handler assigns ``call.on_frame``, and the
call's GRE channel then calls it directly for every frame, with nothing in between.  Frames
that arrive before that wait in the channel (capped) and are handed over on assignment.

The data planes live above this layer: the built-in sessions in :mod:`pptpkit.vpn.server`,
pptpd's program mode in :mod:`pptpkit.compat.program`.

Everything that identifies a call at the GRE level is process-wide: one
:class:`~pptpkit.control.CallIdAllocator` and one raw GRE socket, demultiplexed by (peer
address, our call ID), so several clients behind one NAT (one source address) work as long as
each call has its own ID, which the shared allocator guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pptpkit.control import (
    PPTP_PORT,
    CallCleared,
    CallFailed,
    CallIdAllocator,
    CallRejected,
    CallRequested,
    ConnectionClosed,
    ConnectionEstablished,
    ControlConfig,
    ControlConnection,
    DisconnectResult,
    GeneralError,
    OutgoingCallResult,
    ProtocolViolation,
    Role,
    StopReason,
)
from pptpkit.errors import ConfigError, PptpkitError, StateError
from pptpkit.gre import GreCallConfig, GreStats
from pptpkit.io.driver import ConnectionInfo, EngineDriver, EngineServer, listen_backlog, start_tcp_server
from pptpkit.io.grechannel import (
    FrameReceiver,
    GreChannel,
    acquire_gre_socket,
    ipv4_or_none,
    release_gre_socket,
)
from pptpkit.io.gresock import GreSocket
from pptpkit.io.throttle import LogThrottle, left_out_text

__all__ = [
    "CallHandler",
    "CallHandlerFactory",
    "ConnectionGate",
    "PptpServer",
    "PptpServerConfig",
    "RejectCall",
    "ServerCall",
]

log = logging.getLogger(__name__)

#: Distinct call-refusal reasons whose log lines are throttled apart (more: start over).
_MAX_REFUSAL_REASONS: Final = 64

class RejectCall(PptpkitError):
    """Raised by a call handler factory to refuse a call with these Outgoing-Call-Reply codes."""

    def __init__(self, message: str, *, result: int = OutgoingCallResult.GENERAL_ERROR,
                 error: int = GeneralError.NO_RESOURCE) -> None:
        super().__init__(message)
        self.result = result
        self.error = error


class CallHandler(Protocol):
    """The data plane of one call, made by a :data:`CallHandlerFactory`.  It receives the
    client's PPP frames by assigning :attr:`ServerCall.on_frame`."""

    async def aclose(self) -> None:
        """The call is over: release everything (stop children, close fds).  Called once."""


class ConnectionGate(Protocol):
    """Limits beyond this process (the workers of one server): asked for every connection
    this server admitted itself, before the engine sees a byte of it (the stream is held, at
    most :data:`~pptpkit.io.driver.MAX_HELD` octets, and the start timeout still runs), so a
    refused connection is closed before any reply, as one refused by our own limits."""

    async def open(self, key: str, peer: str) -> str | None:
        """None: admitted; else why not (the connection is then stopped)."""

    def close(self, key: str) -> None:
        """An admitted connection ended."""


#: ``await factory(call)`` -> handler, before the call is answered; raise :class:`RejectCall`
#: (or any PptpkitError/OSError) to refuse it.
CallHandlerFactory = Callable[["ServerCall"], Awaitable[CallHandler]]


@dataclass(frozen=True, kw_only=True, slots=True)
class PptpServerConfig:
    """Server settings.

    ``listen`` None: every address.  ``max_connections``: live control connections in all;
    ``max_per_source``: from one source address (clients behind one NAT count together).
    ``start_timeout``: seconds a new connection may take to send its
    Start-Control-Connection-Request (pptpd's stimeout).  ``max_calls``: per connection.
    ``window``/``nobuffer``/``respect_peer_window``/``first_seq``: GRE settings per call.
    ``shutdown_timeout``: how long :meth:`PptpServer.close` waits for peers to answer.
    """

    listen: str | None = None
    port: int = PPTP_PORT
    max_connections: int = 100
    max_per_source: int = 16
    max_calls: int = 16
    start_timeout: float = 10.0
    window: int = 64
    nobuffer: bool = False
    respect_peer_window: bool = True
    first_seq: int = 1
    host_name: str = "pptpkit"
    vendor: str = "pptpkit"
    connect_speed: int = 100_000_000
    echo_interval: float | None = 60.0
    shutdown_timeout: float = 3.0
    #: ``SO_REUSEPORT`` on the listener: one of several worker processes on the same port.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, not {self.max_connections}")
        if self.max_per_source < 1:
            raise ConfigError(f"max_per_source must be at least 1, not {self.max_per_source}")
        if not self.shutdown_timeout > 0:
            raise ConfigError("shutdown_timeout must be positive")
        if not 1 <= self.window <= 0xFFFF:
            raise ConfigError(f"window must be 1..65535, not {self.window}")
        self.control_config()

    def control_config(self) -> ControlConfig:
        return ControlConfig(
            role=Role.SERVER,
            host_name=self.host_name,
            vendor=self.vendor,
            window=self.window,
            connect_speed=self.connect_speed,
            echo_interval=self.echo_interval,
            start_timeout=self.start_timeout,
            max_calls=self.max_calls,
        )


class ServerCall(FrameReceiver):
    """One call as the handler sees it.  ``peer_address`` is the client's IPv4 address.

    A frame transport for :class:`~pptpkit.io.link.PppLink` (``send_frame``, ``close``) and a
    frame receiver: assign ``on_frame`` to receive the client's PPP frames (no HDLC, no GRE).
    """

    __slots__ = (
        '_conn', 'answered', 'call_id', 'channel', 'end_reason', 'ended', 'handler', 'inlet',
        'peer_address', 'peer_call_id', 'peer_port', 'phone_number', 'serial_number',
    )

    def __init__(self, conn: _Conn, event: CallRequested, channel: GreChannel) -> None:
        self._conn = conn
        self.call_id = event.call_id
        self.peer_call_id = event.peer_call_id
        self.peer_address = conn.peer_address
        self.peer_port = conn.peer_port
        self.phone_number = event.phone_number
        self.serial_number = event.serial_number
        self.channel = channel
        # on_frame is the channel's own receiver: frames skip this object entirely.
        self.inlet = channel
        self.handler: CallHandler | None = None
        self.answered = False
        self.ended = False
        self.end_reason = ""

    @property
    def stats(self) -> GreStats:
        return self.channel.stats

    @property
    def local_address(self) -> str | None:
        """Our address the client connected to (its GRE goes there too)."""
        return self._conn.local_address

    def send_frame(self, frame: bytes) -> bool:
        """Send a PPP frame to the client; False when dropped (call over, queue full)."""
        if not self.answered:
            return False
        return self.channel.send_frame(frame)

    def send_frames(self, frames: Sequence[bytes]) -> int:
        """:meth:`send_frame` for a batch: how many of the first frames went out together; the
        caller sends the rest one by one (:meth:`GreChannel.send_frames`)."""
        if not self.answered:
            return 0
        return self.channel.send_frames(frames)

    def clear(self, reason: str = "", *, result: int = DisconnectResult.LOST_CARRIER) -> None:
        """Hang up from our side (Call-Disconnect-Notify with ``result``).  Idempotent."""
        self._conn.server._clear_call(self, reason, result)

    def close(self) -> None:
        """The PPP session on the call ended (a :class:`~pptpkit.io.link.FrameTransport`)."""
        self.clear("PPP session ended", result=DisconnectResult.ADMIN_SHUTDOWN)


@dataclass(eq=False, slots=True)
class _Conn:
    server: PptpServer
    peer_address: str
    peer_port: int
    #: Our address the peer connected to: its GRE goes out from there too.
    local_address: str | None = None
    driver: EngineDriver[ControlConnection] | None = None
    calls: dict[int, ServerCall] = field(default_factory=dict)
    refused: bool = False
    #: Admitted by the :attr:`PptpServer.connection_gate` (and so to be closed there).
    gated: bool = False
    #: The peer decides how many violations it commits: one line per interval for them.
    violation_log: LogThrottle = field(default_factory=LogThrottle)


def _throttled(throttles: dict[str, LogThrottle], reason: str, now: float) -> int | None:
    """:class:`LogThrottle` per reason, at most :data:`_MAX_REFUSAL_REASONS` of them."""
    throttle = throttles.get(reason)
    if throttle is None:
        if len(throttles) >= _MAX_REFUSAL_REASONS:
            throttles.clear()
        throttle = throttles[reason] = LogThrottle()
    return throttle(now)


class PptpServer:
    """``await start()``, then serve until :meth:`close`.  ``handler_factory`` makes every
    call's data plane.  ``gre_socket``/``call_ids`` override the process-wide ones (tests)."""

    def __init__(self, config: PptpServerConfig, handler_factory: CallHandlerFactory, *,
                 gre_socket: GreSocket | None = None, call_ids: CallIdAllocator | None = None) -> None:
        self.config = config
        self._factory = handler_factory
        self._given_gre = gre_socket
        self._gre: GreSocket | None = None
        self.call_ids = call_ids if call_ids is not None else CallIdAllocator()
        self._listener: EngineServer[ControlConnection] | None = None
        self._conns: dict[ControlConnection, _Conn] = {}
        self._per_source: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.refused_per_source = 0
        #: Connections the :attr:`connection_gate` refused.
        self.refused_by_gate = 0
        self._refusal_log = LogThrottle()
        self._call_refusal_logs: dict[str, LogThrottle] = {}
        # Apart from our own refusals, one throttle per reason (per source, in all), as our
        # own limits have: one limit's refusals never hide the other's.
        self._gate_refusal_logs: dict[str, LogThrottle] = {}
        self.calls_total = 0
        #: Asked after this server's own limits (``--workers``: the supervisor's ledger).
        self.connection_gate: ConnectionGate | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._gre = self._given_gre if self._given_gre is not None else acquire_gre_socket(loop)
        cfg = self.config
        try:
            self._listener = await start_tcp_server(
                cfg.listen, cfg.port, self._make_engine, on_event=self._on_event,
                on_closed=self._on_closed, on_connection=self._on_connection,
                max_connections=cfg.max_connections,
                # A burst of clients connecting at once must not overflow the accept queue: a
                # dropped SYN costs that client a one-second (then longer) retransmit.
                backlog=listen_backlog(max(128, cfg.max_connections)),
                reuse_port=cfg.reuse_port,
            )
        except BaseException:
            self._release_gre()
            raise
        log.info("listening on %s", ", ".join(self.addresses))

    @property
    def addresses(self) -> list[str]:
        if self._listener is None:
            return []
        out = []
        for sock in self._listener.sockets:
            name = sock.getsockname()
            out.append(f"{name[0]}:{name[1]}")
        return out

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        assert self._listener is not None and self._listener.sockets
        return int(self._listener.sockets[0].getsockname()[1])

    @property
    def gre_socket(self) -> GreSocket | None:
        return self._gre

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def refused_max_connections(self) -> int:
        """Connections closed at once because ``max_connections`` were open already."""
        return 0 if self._listener is None else self._listener.refused

    @property
    def calls(self) -> list[ServerCall]:
        return [c for conn in self._conns.values() for c in conn.calls.values()]

    async def close(self) -> None:
        """Stop listening; Call-Disconnect-Notify for every call, Stop-Control-Connection to
        every peer; wait (``shutdown_timeout``) for them, then cut what is left; reap children."""
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        if self._listener is not None:
            self._listener.close(connections=False)
        waits: list[asyncio.Future[None]] = []
        for engine, conn in list(self._conns.items()):
            if conn.driver is None or conn.driver.finished:
                continue
            now = loop.time()
            for call in list(conn.calls.values()):
                if call.answered and not call.ended:
                    with contextlib.suppress(StateError):
                        engine.clear_call(now, call.call_id, result=DisconnectResult.ADMIN_SHUTDOWN)
                    self._end_call(call, "server shutting down")
            engine.stop(now, StopReason.LOCAL_SHUTDOWN)
            conn.driver.flush()
            waits.append(conn.driver.closed_future)
        if waits:
            _, still = await asyncio.wait(waits, timeout=self.config.shutdown_timeout)
            if still:
                log.info("%d peers did not answer the stop; closing their connections", len(still))
        for conn in list(self._conns.values()):
            if conn.driver is not None:
                conn.driver.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._release_gre()

    def _release_gre(self) -> None:
        if self._gre is not None and self._given_gre is None:
            release_gre_socket(self._gre)
        self._gre = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections ------------------------------------------------------------------------------

    def _make_engine(self, info: ConnectionInfo) -> ControlConnection:
        engine = ControlConnection(self.config.control_config(), now=info.now, call_ids=self.call_ids)
        peer = info.peer or ("0.0.0.0", 0)
        conn = _Conn(self, str(peer[0]), int(peer[1]), ipv4_or_none(info.local))
        self._conns[engine] = conn
        count = self._per_source.get(conn.peer_address, 0)
        if count >= self.config.max_per_source or self._closing:
            conn.refused = True
            self.refused_per_source += 1
        else:
            self._per_source[conn.peer_address] = count + 1
        return engine

    def _on_connection(self, driver: EngineDriver[ControlConnection]) -> None:
        conn = self._conns[driver.engine]
        conn.driver = driver
        if conn.refused:
            left_out = self._refusal_log(asyncio.get_running_loop().time())
            if left_out is not None:
                log.warning("refusing connection from %s:%d: %s%s", conn.peer_address, conn.peer_port,
                            "shutting down" if self._closing else
                            f"{self.config.max_per_source} connections from that address already",
                            left_out_text(left_out))
            # Not established yet, so stop() closes at once and the driver's flush closes TCP.
            driver.engine.stop(asyncio.get_running_loop().time())
        else:
            log.info("connection from %s:%d", conn.peer_address, conn.peer_port)
            if self.connection_gate is not None:
                # Nothing is answered until the gate says yes: a connection one too many is
                # closed before its Start-Control-Connection-Reply, as by our own limits.
                driver.hold(lambda octets: self._flooded_while_held(conn, driver, octets))
                self._spawn(self._gate(self.connection_gate, conn, driver))

    def _flooded_while_held(self, conn: _Conn, driver: EngineDriver[ControlConnection], octets: int) -> None:
        # A client waits for the Start-Control-Connection-Reply after its 156-octet request.
        left_out = conn.violation_log(asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("protocol violation by %s: peer floods us: %d octets before the connection "
                        "was admitted; closing%s", conn.peer_address, octets, left_out_text(left_out))
        # Not established (the engine has seen nothing), so it closes without a word.
        driver.engine.stop(asyncio.get_running_loop().time(), StopReason.LOCAL_SHUTDOWN)
        driver.flush()

    async def _gate(self, gate: ConnectionGate, conn: _Conn, driver: EngineDriver[ControlConnection]) -> None:
        key = f"{conn.peer_address}:{conn.peer_port}"
        try:
            why = await gate.open(key, conn.peer_address)
        except PptpkitError as exc:
            why = f"cannot check the limits: {exc}"
        if why is None:
            if driver.finished:
                gate.close(key)
            else:
                conn.gated = True
                driver.release()
            return
        self.refused_by_gate += 1
        left_out = _throttled(self._gate_refusal_logs, why, asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("refusing connection from %s:%d: %s%s", conn.peer_address, conn.peer_port, why,
                        left_out_text(left_out))
        if not driver.finished:
            # Held, so the engine has seen nothing: not established, it closes without a word.
            driver.engine.stop(asyncio.get_running_loop().time(), StopReason.LOCAL_SHUTDOWN)
            driver.flush()

    def _on_closed(self, driver: EngineDriver[ControlConnection]) -> None:
        conn = self._conns.pop(driver.engine, None)
        if conn is None:
            return
        if conn.gated and self.connection_gate is not None:
            conn.gated = False
            self.connection_gate.close(f"{conn.peer_address}:{conn.peer_port}")
        if not conn.refused:
            left = self._per_source.get(conn.peer_address, 1) - 1
            if left > 0:
                self._per_source[conn.peer_address] = left
            else:
                self._per_source.pop(conn.peer_address, None)
        for call in list(conn.calls.values()):
            self._end_call(call, "control connection closed")

    def _on_event(self, driver: EngineDriver[ControlConnection], event: object) -> None:
        conn = self._conns.get(driver.engine)
        if conn is None:
            return
        if isinstance(event, ConnectionEstablished):
            log.info("control connection from %s up: vendor %r, host %r, firmware %#x",
                     conn.peer_address, event.peer.vendor, event.peer.host_name,
                     event.peer.firmware_revision)
        elif isinstance(event, CallRequested):
            self._call_requested(conn, event)
        elif isinstance(event, CallCleared):
            call = conn.calls.get(event.call_id)
            log.info("call %d from %s cleared (%s): %s", event.call_id, conn.peer_address,
                     event.initiated_by.value, event.reason)
            if call is not None:
                self._end_call(call, event.reason)
        elif isinstance(event, CallFailed):
            call = conn.calls.get(event.call_id)
            if call is not None:
                self._end_call(call, event.reason)
        elif isinstance(event, CallRejected):
            log.info("call from %s (peer call ID %d) refused: %s", conn.peer_address,
                     event.peer_call_id, event.reason)
        elif isinstance(event, ConnectionClosed):
            if not conn.refused:
                log.info("control connection from %s closed (%s): %s", conn.peer_address,
                         event.cause.value, event.reason)
        elif isinstance(event, ProtocolViolation):
            left_out = conn.violation_log(asyncio.get_running_loop().time())
            if left_out is not None:
                log.warning("protocol violation by %s: %s%s", conn.peer_address, event.reason,
                            left_out_text(left_out))

    # -- calls ------------------------------------------------------------------------------------

    def _call_requested(self, conn: _Conn, event: CallRequested) -> None:
        assert conn.driver is not None and self._gre is not None
        cfg = self.config
        try:
            channel = GreChannel(self._gre, conn.peer_address, GreCallConfig(
                call_id=event.call_id,
                peer_call_id=event.peer_call_id,
                peer_window=event.peer_window or 1,
                our_window=cfg.window,
                nobuffer=cfg.nobuffer,
                respect_peer_window=cfg.respect_peer_window,
                first_seq=cfg.first_seq,
            ), local_address=conn.local_address)
        except (ValueError, PptpkitError) as exc:
            log.warning("refusing call from %s: %s", conn.peer_address, exc)
            # The same read may have closed the connection after the request (the fuzzer found
            # it): then there is no one left to answer.
            with contextlib.suppress(StateError):
                conn.driver.engine.reject_call(asyncio.get_running_loop().time(), event.call_id,
                                               result=OutgoingCallResult.GENERAL_ERROR,
                                               error=GeneralError.NO_RESOURCE)
            conn.driver.flush()
            return
        call = ServerCall(conn, event, channel)
        conn.calls[event.call_id] = call
        self._spawn(self._answer(conn, call))

    async def _answer(self, conn: _Conn, call: ServerCall) -> None:
        try:
            handler = await self._factory(call)
        except Exception as exc:
            # Whatever went wrong in the data plane, the peer gets an answer rather than a
            # call left waiting for the reply timeout.
            if isinstance(exc, RejectCall):
                result, error = exc.result, exc.error
            else:
                result, error = OutgoingCallResult.GENERAL_ERROR, GeneralError.PAC_ERROR
            if isinstance(exc, (PptpkitError, OSError)):
                self._log_refusal(conn, str(exc))
            else:
                log.exception("refusing call from %s: the call handler failed", conn.peer_address)
            self._reject(conn, call, result, error)
            return
        call.handler = handler
        driver = conn.driver
        if call.ended or driver is None or driver.finished:
            await handler.aclose()
            return
        try:
            info = driver.engine.accept_call(asyncio.get_running_loop().time(), call.call_id)
        except StateError:
            call.ended = True
            conn.calls.pop(call.call_id, None)
            call.channel.close()
            await handler.aclose()
            return
        call.answered = True
        self.calls_total += 1
        log.info("call from %s up: our call ID %d, peer call ID %d, peer window %s", conn.peer_address,
                 info.call_id, call.peer_call_id, info.peer_window)
        driver.flush()

    def _log_refusal(self, conn: _Conn, reason: str) -> None:
        """One line per reason per interval: a peer that keeps calling into a limit decides
        how often this happens, not how much we log."""
        left_out = _throttled(self._call_refusal_logs, reason, asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("refusing call from %s: %s%s", conn.peer_address, reason, left_out_text(left_out))

    def _reject(self, conn: _Conn, call: ServerCall, result: int, error: int) -> None:
        call.ended = True
        call.channel.close()
        conn.calls.pop(call.call_id, None)
        driver = conn.driver
        if driver is None or driver.finished:
            return
        with contextlib.suppress(StateError):
            driver.engine.reject_call(asyncio.get_running_loop().time(), call.call_id, result=result,
                                      error=error)
        driver.flush()

    def _clear_call(self, call: ServerCall, reason: str, result: int) -> None:
        if call.ended:
            return
        driver = call._conn.driver
        if call.answered and driver is not None and not driver.finished:
            log.info("clearing call %d to %s: %s", call.call_id, call.peer_address, reason)
            with contextlib.suppress(StateError):
                driver.engine.clear_call(asyncio.get_running_loop().time(), call.call_id, result=result)
            self._end_call(call, reason)
            driver.flush()
        else:
            self._end_call(call, reason)

    def _end_call(self, call: ServerCall, reason: str) -> None:
        if call.ended:
            return
        call.ended = True
        call.end_reason = reason
        call.channel.close()
        call._conn.calls.pop(call.call_id, None)
        handler = call.handler
        if handler is not None:
            self._spawn(handler.aclose())
