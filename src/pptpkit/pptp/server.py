"""The PPTP server (PAC) on asyncio, with a pluggable per-call data plane.

:class:`PptpServer` listens on TCP (port 1723 on every address by default), runs one control
engine per connection, and for every Outgoing-Call-Request asks a *call handler factory* for the
call's data plane before it answers.  The factory gets a :class:`ServerCall` (send PPP frames,
hang up) and returns a :class:`CallHandler` (receives PPP frames, is closed when the call
ends).  :func:`ppp_program_factory` is the pptpd-compatible one: a program on a raw pty per call
(pppd or anything that speaks async HDLC); the built-in PPP stack plugs in the same way.

Everything that identifies a call at the GRE level is process-wide: one
:class:`~pptpkit.control.CallIdAllocator` and one raw GRE socket, demultiplexed by (peer
address, our call ID), so several clients behind one NAT (one source address) work as long as
each call has its own ID, which the shared allocator guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from pptpkit.auth.base import AuthenticatorConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import SecretsProvider
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
from pptpkit.io.grechannel import GreChannel, acquire_gre_socket, ipv4_or_none, release_gre_socket
from pptpkit.io.gresock import GreSocket
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.link import DataPlane, PacketSink, PppLink, outcome_text
from pptpkit.io.pty import PtyProcess, spawn_on_pty
from pptpkit.ppp.ipcp import PeerAddress
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    LinkDown,
    LinkUp,
    MppePolicy,
    SessionConfig,
    SessionEvent,
    SessionRole,
)

__all__ = [
    "DEFAULT_BUILTIN_MRU",
    "AddressPool",
    "BuiltinConfig",
    "BuiltinSessions",
    "CallHandler",
    "CallHandlerFactory",
    "PppProgramConfig",
    "PptpServer",
    "PptpServerConfig",
    "RejectCall",
    "ServerCall",
    "parse_ip_list",
    "ppp_program_factory",
]

log = logging.getLogger(__name__)

#: More addresses than this in one localip/remoteip list is certainly a typo (a /8 range).
MAX_POOL_ADDRESSES: Final = 65536


class RejectCall(PptpkitError):
    """Raised by a call handler factory to refuse a call with these Outgoing-Call-Reply codes."""

    def __init__(self, message: str, *, result: int = OutgoingCallResult.GENERAL_ERROR,
                 error: int = GeneralError.NO_RESOURCE) -> None:
        super().__init__(message)
        self.result = result
        self.error = error


class CallHandler(Protocol):
    """The data plane of one call, made by a :data:`CallHandlerFactory`."""

    def frame_received(self, frame: bytes) -> None:
        """A PPP frame from the client (no HDLC, no GRE)."""

    async def aclose(self) -> None:
        """The call is over: release everything (stop children, close fds).  Called once."""


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


class ServerCall:
    """One call as the handler sees it.  ``peer_address`` is the client's IPv4 address."""

    __slots__ = (
        '_conn', 'answered', 'call_id', 'channel', 'end_reason', 'ended', 'frames_unclaimed', 'handler',
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
        self.handler: CallHandler | None = None
        self.answered = False
        self.ended = False
        self.end_reason = ""
        self.frames_unclaimed = 0

    @property
    def stats(self) -> GreStats:
        return self.channel.stats

    def send_frame(self, frame: bytes) -> bool:
        """Send a PPP frame to the client; False when dropped (call over, queue full)."""
        if not self.answered:
            return False
        return self.channel.send_frame(frame)

    def _deliver(self, frame: bytes) -> None:
        if self.handler is None:
            self.frames_unclaimed += 1
            return
        self.handler.frame_received(frame)

    def clear(self, reason: str = "", *, result: int = DisconnectResult.LOST_CARRIER) -> None:
        """Hang up from our side (Call-Disconnect-Notify with ``result``).  Idempotent."""
        self._conn.server._clear_call(self, reason, result)


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
        self.calls_total = 0

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
            log.warning("refusing connection from %s:%d: %s", conn.peer_address, conn.peer_port,
                        "shutting down" if self._closing else
                        f"{self.config.max_per_source} connections from that address already")
            # Not established yet, so stop() closes at once and the driver's flush closes TCP.
            driver.engine.stop(asyncio.get_running_loop().time())
        else:
            log.info("connection from %s:%d", conn.peer_address, conn.peer_port)

    def _on_closed(self, driver: EngineDriver[ControlConnection]) -> None:
        conn = self._conns.pop(driver.engine, None)
        if conn is None:
            return
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
            log.warning("protocol violation by %s: %s", conn.peer_address, event.reason)

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
            ), on_frame=lambda frame: call._deliver(frame), local_address=conn.local_address)
        except (ValueError, PptpkitError) as exc:
            log.warning("refusing call from %s: %s", conn.peer_address, exc)
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
                log.warning("refusing call from %s: %s", conn.peer_address, exc)
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


# -- address pools (pptpd's localip / remoteip) ----------------------------------------------------


def parse_ip_list(text: str) -> list[str]:
    """pptpd's address list syntax: comma-separated items, each an IPv4 address or a range
    whose end is given as the last octet (``198.51.100.10-50``) or as a full address.

    Raises :class:`ConfigError` with the offending item.
    """
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"empty item in address list {text!r}")
        start_text, dash, end_text = item.partition("-")
        try:
            start = ipaddress.IPv4Address(start_text.strip())
        except ValueError:
            raise ConfigError(f"{start_text.strip()!r} is not an IPv4 address (in {item!r})") from None
        if dash:
            end_text = end_text.strip()
            if end_text.isdigit():
                last = int(end_text)
                if last > 255:
                    raise ConfigError(f"range end {last} is not an octet (in {item!r})")
                end = ipaddress.IPv4Address(int(start) & ~0xFF | last)
            else:
                try:
                    end = ipaddress.IPv4Address(end_text)
                except ValueError:
                    raise ConfigError(f"{end_text!r} is not a range end (in {item!r})") from None
            if end < start:
                raise ConfigError(f"range {item!r} ends before it starts")
        else:
            end = start
        if len(out) + int(end) - int(start) + 1 > MAX_POOL_ADDRESSES:
            raise ConfigError(f"address list {text!r} has more than {MAX_POOL_ADDRESSES} addresses")
        for value in range(int(start), int(end) + 1):
            addr = str(ipaddress.IPv4Address(value))
            if addr not in seen:
                seen.add(addr)
                out.append(addr)
    return out


class AddressPool:
    """Per-call (local, remote) address pairs, as pptpd hands them out.

    One local address: shared by every call.  Several: paired with the remote addresses in
    order (pptpd's behaviour), so the pool size is the shorter list.  ``allocate`` returns None
    when every pair is in use.
    """

    def __init__(self, local: Sequence[str], remote: Sequence[str]) -> None:
        if not local or not remote:
            raise ConfigError("localip and remoteip both need at least one address")
        self.local = list(local)
        self.remote = list(remote)
        self._used: set[int] = set()

    @property
    def size(self) -> int:
        return len(self.remote) if len(self.local) == 1 else min(len(self.local), len(self.remote))

    def allocate(self, exclude: Container[str] = ()) -> tuple[str, str] | None:
        """The first free pair whose remote address is not in ``exclude`` (addresses held
        otherwise, e.g. static ones from a secrets file)."""
        for i in range(self.size):
            if i not in self._used and self.remote[i] not in exclude:
                self._used.add(i)
                local = self.local[0] if len(self.local) == 1 else self.local[i]
                return local, self.remote[i]
        return None

    def release(self, pair: tuple[str, str]) -> None:
        with contextlib.suppress(ValueError):
            self._used.discard(self.remote.index(pair[1]))


# -- the pptpd-compatible data plane: a PPP program on a pty per call -------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PppProgramConfig:
    """How each call's program is started (pptpd's ppp / option / localip / remoteip /
    speed / noipparam / delegate settings).  ``pool`` None with ``delegate`` False passes no
    address pair either (the program decides)."""

    program: str
    program_args: tuple[str, ...] = ()
    option_file: str | None = None
    pool: AddressPool | None = None
    speed: str = "115200"
    noipparam: bool = False
    delegate: bool = False
    stop_timeout: float = 2.0
    stderr: int | str | None = 2

    def __post_init__(self) -> None:
        if not self.program:
            raise ConfigError("the PPP program must not be empty")
        if not self.speed.isdigit():
            raise ConfigError(f"speed must be a number of bits per second, not {self.speed!r}")


def ppp_program_argv(config: PppProgramConfig, client_ip: str, pair: tuple[str, str] | None) -> list[str]:
    """pptpctrl's argv for the PPP program (INTEROP.md): program, local, [file F], speed,
    [LOCAL:REMOTE], [ipparam CLIENT], remotenumber CLIENT.  ``program_args`` (ours, not
    pptpd's) go right after the program, e.g. ``python -m module``."""
    argv = [config.program, *config.program_args, "local"]
    if config.option_file is not None:
        argv += ["file", config.option_file]
    argv.append(config.speed)
    if pair is not None:
        argv.append(f"{pair[0]}:{pair[1]}")
    if not config.noipparam:
        argv += ["ipparam", client_ip]
    argv += ["remotenumber", client_ip]
    return argv


class _ProgramHandler:
    def __init__(self, call: ServerCall, proc: PtyProcess, config: PppProgramConfig,
                 pool: AddressPool | None, pair: tuple[str, str] | None) -> None:
        self._call = call
        self.proc = proc
        self._config = config
        self._pool = pool
        self._pair = pair
        self._closed = False
        self.bridge = HdlcStreamBridge(proc.stream, on_frame=self._to_call, on_close=self._pty_closed)
        proc.on_exit(self._exited)
        self.bridge.start()

    def _to_call(self, frame: bytes) -> None:
        self._call.send_frame(frame)

    def _pty_closed(self, exc: BaseException | None) -> None:
        self._call.clear("the PPP program closed its terminal" + (f" ({exc})" if exc else ""))

    def _exited(self, status: int) -> None:
        log.info("PPP program %d for call %d exited with status %d", self.proc.pid, self._call.call_id,
                 status)
        self._call.clear(f"the PPP program exited with status {status}")

    def frame_received(self, frame: bytes) -> None:
        self.bridge.send_frame(frame)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.proc.close(self._config.stop_timeout)
        if self._pool is not None and self._pair is not None:
            self._pool.release(self._pair)


def ppp_program_factory(config: PppProgramConfig) -> CallHandlerFactory:
    """The pptpd-style data plane: spawn ``config.program`` on a raw pty for every call and
    bridge the call's frames to it in async HDLC.  The call is cleared when the program exits
    or closes its terminal; the program is stopped (SIGTERM, then SIGKILL) when the call ends."""

    async def factory(call: ServerCall) -> CallHandler:
        pair: tuple[str, str] | None = None
        if config.pool is not None and not config.delegate:
            pair = config.pool.allocate()
            if pair is None:
                raise RejectCall("no free address in the remoteip pool", error=GeneralError.NO_RESOURCE)
        argv = ppp_program_argv(config, call.peer_address, pair)
        try:
            proc = await spawn_on_pty(argv, stderr=config.stderr)
        except BaseException:
            if pair is not None and config.pool is not None:
                config.pool.release(pair)
            raise
        log.info("call %d: started %s (pid %d)", call.call_id, " ".join(argv), proc.pid)
        return _ProgramHandler(call, proc, config, config.pool, pair)

    return factory



# -- the built-in data plane: our own PPP stack per call, IP on TUN ---------------------------------

#: Default MRU (and so, less the MPPE overhead, the TUN MTU) of the built-in server.  A 1500-byte
#: underlay carries 1500 - 20 (IPv4) - 16 (GRE with sequence and ack) - 4 (PPP address/control
#: and protocol) = 1460 octets of PPP information without fragmenting GRE; 1400, what pptpd
#: setups commonly configure, keeps a margin for underlays that are themselves tunnelled
#: (PPPoE 1492, IPsec) so GRE is never fragmented on the way.
DEFAULT_BUILTIN_MRU: Final = 1400


def _default_mppe() -> MppePolicy:
    return MppePolicy(bits_40=False, bits_56=False, bits_128=True, required=True)


def _default_auth() -> AuthPolicy:
    return AuthPolicy(require=frozenset({AuthMethod.MSCHAP_V2}))


@dataclass(frozen=True, kw_only=True)
class BuiltinConfig:
    """The built-in server's PPP settings (what pptpd's options.pptpd says to pppd).

    ``pool``: the localip/remoteip pool; a secrets entry naming one address gives that user
    that address instead.  ``secrets``: the authenticator's provider (a
    :class:`~pptpkit.auth.secrets.PppSecretsFile`, reloadable).  ``name``: our CHAP name.
    Security defaults: MS-CHAPv2 required, MPPE-128 required.  ``max_sessions``: live
    sessions in all; ``max_per_source``: sessions from one client address.  Both refuse the
    call with Outgoing-Call-Reply result Busy.  ``close_timeout``: how long a shutdown waits
    for each peer's LCP Terminate-Ack.
    """

    pool: AddressPool
    secrets: SecretsProvider
    name: str = "pptpd"
    auth_policy: AuthPolicy = field(default_factory=_default_auth)
    mppe: MppePolicy = field(default_factory=_default_mppe)
    dns_servers: tuple[ipaddress.IPv4Address, ...] = ()
    nbns_servers: tuple[ipaddress.IPv4Address, ...] = ()
    mru: int = DEFAULT_BUILTIN_MRU
    echo_interval: float = 10.0
    echo_failure: int = 3
    idle_timeout: float = 0.0
    max_sessions: int = 1000
    max_per_source: int = 16
    close_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_per_source < 1:
            raise ConfigError("max_sessions and max_per_source must be at least 1")
        if not self.name:
            raise ConfigError("the server name must not be empty")
        if self.mppe.required and not self.auth_policy.authenticates_peer:
            raise ConfigError("MPPE needs keys from MS-CHAP: it cannot be required without authentication")
        self.session_config(None)

    def session_config(self, peer_address: PeerAddress, local: str | None = None) -> SessionConfig:
        return SessionConfig(
            role=SessionRole.SERVER,
            auth_policy=self.auth_policy,
            authenticator=AuthenticatorConfig(name=self.name, secrets=self.secrets)
            if self.auth_policy.authenticates_peer else None,
            mru=self.mru,
            echo_interval=self.echo_interval,
            echo_failure=self.echo_failure,
            local_address=ipaddress.IPv4Address(local or self.pool.local[0]),
            peer_address=peer_address,
            dns_servers=self.dns_servers,
            nbns_servers=self.nbns_servers,
            mppe=self.mppe,
            idle_timeout=self.idle_timeout,
        )


class _CallTransport:
    """A :class:`ServerCall` as a :class:`~pptpkit.io.link.FrameTransport`."""

    __slots__ = ("call",)

    def __init__(self, call: ServerCall) -> None:
        self.call = call

    def send_frame(self, frame: bytes) -> bool:
        return self.call.send_frame(frame)

    def close(self) -> None:
        self.call.clear("PPP session ended", result=DisconnectResult.ADMIN_SHUTDOWN)


class _Session:
    __slots__ = ("address", "call", "link", "pair", "source", "user")

    def __init__(self, call: ServerCall, source: str) -> None:
        self.call = call
        self.source = source
        self.link: PppLink | None = None
        self.pair: tuple[str, str] | None = None
        self.user = ""
        self.address: ipaddress.IPv4Address | None = None


class _CheckedPlane:
    """Refuses a peer address another live session already has (a secrets-file static address
    that collides with the pool), then hands over to the real data plane."""

    def __init__(self, owner: BuiltinSessions, inner: DataPlane) -> None:
        self._owner = owner
        self._inner = inner

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        holder = self._owner._address_holder(up.peer_address)
        if holder is not None and holder is not link:
            raise RejectCall(f"address {up.peer_address} is in use by {holder.name}")
        return await self._inner.attach(link, up)

    async def detach(self, link: PppLink) -> None:
        await self._inner.detach(link)


class BuiltinSessions:
    """The built-in call handler factory: a :class:`~pptpkit.io.link.PppLink` per call.

    Use an instance as the ``handler_factory`` of :class:`PptpServer`.  ``data_plane`` is a
    :class:`~pptpkit.io.link.TunDataPlane` (an interface per session) or an open
    :class:`~pptpkit.io.link.SharedTunRouter`.  :meth:`close_all` ends every session with an
    LCP Terminate-Request (call before :meth:`PptpServer.close`, which then stops the control
    connections); :meth:`reload_secrets` re-reads a secrets file without touching sessions.
    """

    def __init__(self, config: BuiltinConfig, data_plane: DataPlane) -> None:
        self.config = config
        self._plane = _CheckedPlane(self, data_plane)
        self._sessions: dict[ServerCall, _Session] = {}
        self._per_source: dict[str, int] = {}
        self._closing = False
        self.refused_max_sessions = 0
        self.refused_per_source = 0
        self.sessions_up_total = 0

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def links(self) -> list[PppLink]:
        return [s.link for s in self._sessions.values() if s.link is not None]

    def _address_holder(self, address: ipaddress.IPv4Address | None) -> PppLink | None:
        for session in self._sessions.values():
            if session.address == address and session.link is not None:
                return session.link
        return None

    def _in_use(self) -> set[str]:
        used = {str(s.address) for s in self._sessions.values() if s.address is not None}
        used.update(s.pair[1] for s in self._sessions.values() if s.pair is not None)
        return used

    async def __call__(self, call: ServerCall) -> CallHandler:
        cfg = self.config
        source = call.peer_address
        if self._closing:
            raise RejectCall("shutting down", result=OutgoingCallResult.GENERAL_ERROR)
        if len(self._sessions) >= cfg.max_sessions:
            self.refused_max_sessions += 1
            raise RejectCall(f"{cfg.max_sessions} sessions already (max sessions)",
                             result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        if self._per_source.get(source, 0) >= cfg.max_per_source:
            self.refused_per_source += 1
            raise RejectCall(f"{cfg.max_per_source} sessions from {source} already (max per source)",
                             result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        session = _Session(call, source)
        local: str | None = None
        if len(cfg.pool.local) > 1:
            # Several local addresses are paired with remote ones in order (pptpd), so the
            # pair is taken now; with one local address the peer's is picked only if the
            # secrets file does not name one.
            session.pair = cfg.pool.allocate(exclude=self._in_use())
            if session.pair is None:
                raise RejectCall("no free address in the remoteip pool")
            local = session.pair[0]

        def peer_address() -> ipaddress.IPv4Address | None:
            if session.pair is None:
                session.pair = cfg.pool.allocate(exclude=self._in_use())
                if session.pair is None:
                    log.warning("call %d from %s: no free address in the remoteip pool", call.call_id, source)
                    return None
            return ipaddress.IPv4Address(session.pair[1])

        link_config = cfg.session_config(peer_address, local)
        link = PppLink(link_config, _CallTransport(call), self._plane, on_event=self._event,
                       name=f"call {call.call_id} from {source}")
        session.link = link
        self._sessions[call] = session
        self._per_source[source] = self._per_source.get(source, 0) + 1
        handler = _LinkHandler(self, session)
        # We speak first (pptpd's pppd does), as soon as the Outgoing-Call-Reply is out.
        asyncio.get_running_loop().call_soon(handler.start)
        return handler

    def _forget(self, session: _Session) -> None:
        if self._sessions.pop(session.call, None) is None:
            return
        left = self._per_source.get(session.source, 1) - 1
        if left > 0:
            self._per_source[session.source] = left
        else:
            self._per_source.pop(session.source, None)
        if session.pair is not None:
            self.config.pool.release(session.pair)
            session.pair = None

    def _session_of(self, link: PppLink) -> _Session | None:
        for session in self._sessions.values():
            if session.link is link:
                return session
        return None

    def _event(self, link: PppLink, event: SessionEvent) -> None:
        session = self._session_of(link)
        source = session.source if session is not None else "?"
        if isinstance(event, LinkUp):
            self.sessions_up_total += 1
            if session is not None:
                session.user = event.username
                session.address = event.peer_address
            log.info("session up: user %r, peer %s, address %s, local %s, %s, interface %s, mtu %d",
                     event.username, source, event.peer_address, event.local_address, event.mppe,
                     link.interface, event.mtu)
        elif isinstance(event, AuthenticationFailed) and event.we_authenticated_peer:
            log.warning("authentication failed: user %r, peer %s, %s: %s", event.username, source,
                        event.method.name, event.reason)
        elif isinstance(event, Authenticated) and event.we_authenticated_peer:
            log.debug("call %s: user %r authenticated with %s", link.name, event.username, event.method.name)
        elif isinstance(event, LinkDown):
            now = link.loop.time()
            duration = now - (link.up_at if link.up_at is not None else link.started_at or now)
            stats = link.session.stats
            user = session.user if session is not None and session.user else "-"
            log.info("session down: user %r, peer %s, reason %s, duration %.1f s, bytes in %d out %d",
                     user, source, outcome_text(event), duration, stats.rx_packet_octets,
                     stats.tx_packet_octets)
            if session is not None:
                session.address = None
        else:
            log.debug("%s: %s", link.name, event)

    async def close_all(self, reason: str = "server shutting down") -> None:
        """LCP Terminate-Request to every session; wait (``close_timeout``) for the answers;
        every link's data plane is released when this returns.  New calls are refused."""
        self._closing = True
        links = self.links
        if links:
            await asyncio.gather(*(link.aclose(reason, self.config.close_timeout) for link in links),
                                 return_exceptions=True)

    def reload_secrets(self) -> bool:
        """Re-read the secrets file (a provider with ``reload()``).  On error the old secrets
        stay in use and the error (``path:line: ...``) is logged; returns whether it worked."""
        reload = getattr(self.config.secrets, "reload", None)
        if reload is None:
            return False
        try:
            reload()
        except ConfigError as exc:
            log.error("secrets not reloaded, keeping the previous ones: %s", exc)
            return False
        log.info("secrets reloaded")
        return True


class _LinkHandler:
    """The :class:`CallHandler` of one built-in session."""

    __slots__ = ('_closed', '_owner', '_session', 'link')

    def __init__(self, owner: BuiltinSessions, session: _Session) -> None:
        self._owner = owner
        self._session = session
        assert session.link is not None
        self.link: PppLink = session.link
        self._closed = False

    def start(self) -> None:
        if not self._closed and self._session.call.answered and not self.link.finished:
            self.link.start()

    def frame_received(self, frame: bytes) -> None:
        self.link.frame_received(frame)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        link = self.link
        if not link.finished:
            link.lower_down(self._session.call.end_reason or "call ended")
        with contextlib.suppress(Exception):
            await asyncio.shield(link.closed)
        self._owner._forget(self._session)
