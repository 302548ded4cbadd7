"""The PPTP client (PNS) on asyncio: one control connection, any number of calls.

>>> async with PptpClient(PptpClientConfig(server="192.0.2.2")) as client:   # doctest: +SKIP
...     call = await client.open_call(on_frame=print)
...     call.send_frame(b"\\xff\\x03\\xc0\\x21...")
...     await call.close()

:meth:`PptpClient.connect` opens the process's raw GRE socket *before* anything else: a GRE
packet that reaches a host with no raw GRE socket draws an ICMP protocol-unreachable, and pptpd
hangs up on that.  Calls share the control connection; when the last one ends and
``close_when_idle`` is set, the control connection is stopped too (the behaviour of pptp-linux's
call manager, which this class is meant to grow into).

Failures surface as exceptions from the awaited method (:class:`ControlConnectionError`,
:class:`CallRefusedError`) and, for calls and connections that end later, as ``on_close``
callbacks and the ``closed`` futures, whose result is a :class:`CloseInfo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from pptpkit.control import (
    PPTP_PORT,
    CallCleared,
    CallEstablished,
    CallFailed,
    CallIdAllocator,
    CallInfo,
    ConnectionClosed,
    ConnectionEstablished,
    ControlConfig,
    ControlConnection,
    Initiator,
    LinkInfoReceived,
    PeerInfo,
    ProtocolViolation,
    Role,
    StopReason,
    WanErrorReceived,
)
from pptpkit.control.events import CloseCause
from pptpkit.errors import ConfigError, PptpkitError, StateError, os_error_text
from pptpkit.gre import GreCallConfig, GreStats
from pptpkit.io.driver import ConnectionInfo, EngineDriver, open_tcp_connection
from pptpkit.io.grechannel import (
    FrameReceiver,
    GreChannel,
    acquire_gre_socket,
    ipv4_or_none,
    release_gre_socket,
)
from pptpkit.io.gresock import GreSocket

__all__ = [
    "CallRefusedError",
    "CloseInfo",
    "ControlConnectionError",
    "PptpCall",
    "PptpClient",
    "PptpClientConfig",
    "PptpError",
]

log = logging.getLogger(__name__)

#: GRE packets kept for a call whose Outgoing-Call-Reply has not been processed yet.  The peer
#: sends its first LCP frame right after the reply, so a handful is all that can legitimately
#: arrive; more is a peer flooding a call it has not accepted.
MAX_EARLY_GRE: Final = 16


class PptpError(PptpkitError):
    """Root of the client's run-time failures."""


class ControlConnectionError(PptpError):
    """The control connection could not be set up, or went away.

    ``cause`` is the engine's :class:`~pptpkit.control.events.CloseCause` (None when TCP
    itself failed: refused, unreachable, timed out); ``code`` the wire code involved.
    """

    def __init__(self, message: str, *, cause: CloseCause | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.code = code


class CallRefusedError(PptpError):
    """The server did not connect the call; codes are from its Outgoing-Call-Reply (None when
    the failure was local, e.g. a timeout or the connection closing)."""

    def __init__(self, message: str, *, result_code: int | None, error_code: int | None,
                 cause_code: int | None) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.error_code = error_code
        self.cause_code = cause_code


@dataclass(frozen=True, kw_only=True, slots=True)
class CloseInfo:
    """Why a call or a control connection ended.  ``initiated_by`` says which side started it;
    ``clean`` is False when it was cut short by a failure (peer vanished, timeout, error)."""

    reason: str
    initiated_by: Initiator
    clean: bool
    result_code: int | None = None
    error_code: int | None = None
    cause_code: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PptpClientConfig:
    """Client settings.

    ``window``: the Packet Receive Window we advertise.  ``nobuffer``: deliver received GRE at
    once, never hold packets for reordering (pptp-linux's --nobuffer).  ``respect_peer_window``:
    hold sends beyond the peer's window (see :class:`~pptpkit.gre.GreCallConfig`).
    ``connect_timeout`` covers TCP plus the Start-Control-Connection exchange;
    ``call_timeout`` the Outgoing-Call-Reply and the Call-Disconnect-Notify.  ``local_address``
    binds the TCP source address.  ``close_when_idle``: stop the control connection when its
    last call ends.
    """

    server: str
    port: int = PPTP_PORT
    connect_timeout: float = 10.0
    call_timeout: float = 10.0
    window: int = 64
    nobuffer: bool = False
    respect_peer_window: bool = True
    first_seq: int = 1
    host_name: str = "local"
    vendor: str = "pptpkit"
    echo_interval: float | None = 60.0
    local_address: str | None = None
    close_when_idle: bool = True
    max_calls: int = 64

    def __post_init__(self) -> None:
        if not self.server:
            raise ConfigError("server must not be empty")
        if not 1 <= self.port <= 0xFFFF:
            raise ConfigError(f"port must be 1..65535, not {self.port}")
        for name in ("connect_timeout", "call_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if not 1 <= self.window <= 0xFFFF:
            raise ConfigError(f"window must be 1..65535, not {self.window}")
        # The control config validates the rest (names, echo interval, max_calls).
        self.control_config()

    def control_config(self) -> ControlConfig:
        return ControlConfig(
            role=Role.CLIENT,
            host_name=self.host_name,
            vendor=self.vendor,
            window=self.window,
            echo_interval=self.echo_interval,
            start_reply_timeout=self.connect_timeout,
            call_reply_timeout=self.call_timeout,
            max_calls=self.max_calls,
        )


class PptpCall(FrameReceiver):
    """One established call.  ``on_frame(frame)`` receives PPP frames (no HDLC, no GRE);
    ``on_close(info)`` runs once when the call ends, whichever side ended it."""

    def __init__(self, client: PptpClient, info: CallInfo, channel: GreChannel) -> None:
        self._client = client
        self.info = info
        self.channel = channel
        # Frames go from the channel straight to on_frame; the channel holds the early ones.
        self.inlet = channel
        self.on_close: Callable[[CloseInfo], None] | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[CloseInfo] = loop.create_future()

    @property
    def call_id(self) -> int:
        return self.info.call_id

    @property
    def peer_call_id(self) -> int:
        assert self.info.peer_call_id is not None  # established calls always have one
        return self.info.peer_call_id

    @property
    def stats(self) -> GreStats:
        return self.channel.stats

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    def send_frame(self, ppp_frame: bytes) -> bool:
        """Send one PPP frame; False when it was dropped (call over, window queue full)."""
        return self.channel.send_frame(ppp_frame)

    def send_frames(self, frames: Sequence[bytes]) -> int:
        """:meth:`send_frame` for a batch: how many of the first frames went out together; the
        caller sends the rest one by one (:meth:`GreChannel.send_frames`)."""
        return self.channel.send_frames(frames)

    def _ended(self, info: CloseInfo) -> None:
        if self.closed.done():
            return
        self.channel.close()
        self.closed.set_result(info)
        if self.on_close is not None:
            self.on_close(info)

    async def close(self) -> CloseInfo:
        """Hang up (Call-Clear-Request) and wait for the call to end."""
        if not self.closed.done():
            self._client._clear(self)
        try:
            async with asyncio.timeout(self._client.config.call_timeout + 1.0):
                return await asyncio.shield(self.closed)
        except TimeoutError:
            # The engine has its own timeout; this only guards against a stuck loop.
            info = CloseInfo(reason="no answer to Call-Clear-Request", initiated_by=Initiator.LOCAL,
                             clean=False)
            self._ended(info)
            return info


@dataclass(slots=True)
class _Pending:
    """A call between Outgoing-Call-Request and -Reply.

    Its GRE demux entry is registered with the request (our call ID is known then): the server
    sends its first LCP frame right after its reply, and over the raw GRE socket that frame can
    be read before the reply is read from TCP.  Such packets wait in ``early`` (at most
    :data:`MAX_EARLY_GRE`) and are replayed into the call's channel once it exists.
    """

    future: asyncio.Future[PptpCall]
    on_frame: Callable[[bytes], object] | None
    registered: bool = False
    early: list[tuple[bytes, float]] | None = None
    early_dropped: int = 0

    def hold(self, packet: bytes, now: float) -> None:
        early = self.early
        if early is None:
            early = self.early = []
        if len(early) >= MAX_EARLY_GRE:
            self.early_dropped += 1
            return
        early.append((packet, now))


@dataclass(slots=True)
class _ClientStats:
    calls_opened: int = 0
    calls_refused: int = 0
    protocol_violations: int = 0
    wan_errors: int = 0
    link_infos: int = 0
    early_gre: int = 0
    """GRE packets that arrived before their call's Outgoing-Call-Reply was processed and
    were delivered once it was."""
    early_gre_dropped: int = 0
    """Such packets beyond :data:`MAX_EARLY_GRE` per call, or for a call that then failed."""


class PptpClient:
    """A PPTP control connection to one server, in the PNS role.

    ``gre_socket``: a raw GRE socket to use instead of the process-wide shared one (tests).
    ``call_ids``: where our call IDs come from.  Every client of a process shares the one raw
    GRE socket, demultiplexed by (server address, our call ID), so many clients to one server
    must share one allocator; the default is a private random one (fine for a single client).
    ``on_close(info)`` runs once when the control connection ends; ``closed`` resolves then.
    """

    def __init__(self, config: PptpClientConfig, *, gre_socket: GreSocket | None = None,
                 call_ids: CallIdAllocator | None = None) -> None:
        self.config = config
        self._call_ids = call_ids
        self.stats = _ClientStats()
        self.on_close: Callable[[CloseInfo], None] | None = None
        self._given_gre = gre_socket
        self._gre: GreSocket | None = None
        self._driver: EngineDriver[ControlConnection] | None = None
        self._peer_address: str | None = None
        self._established: asyncio.Future[PeerInfo] | None = None
        self.closed: asyncio.Future[CloseInfo] | None = None
        self._pending: dict[int, _Pending] = {}
        self._calls: dict[int, PptpCall] = {}
        self.peer: PeerInfo | None = None
        #: True once the connection was stopped because its last call ended (close_when_idle).
        self.idle_stopped = False
        self.local: tuple[Any, ...] | None = None

    # -- properties -------------------------------------------------------------------------------

    @property
    def engine(self) -> ControlConnection:
        if self._driver is None:
            raise StateError("not connected")
        return self._driver.engine

    @property
    def peer_address(self) -> str | None:
        """The server's IPv4 address as connected (GRE comes from and goes to it)."""
        return self._peer_address

    @property
    def calls(self) -> list[PptpCall]:
        return list(self._calls.values())

    @property
    def gre_socket(self) -> GreSocket | None:
        return self._gre

    # -- connecting -------------------------------------------------------------------------------

    async def connect(self) -> PeerInfo:
        """TCP, then Start-Control-Connection; returns what the server announced."""
        if self._driver is not None:
            raise StateError("already connected")
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._established = loop.create_future()
        self.closed = loop.create_future()
        try:
            self._gre = self._given_gre if self._given_gre is not None else acquire_gre_socket(loop)
        except OSError as exc:
            raise ControlConnectionError(f"cannot open a raw GRE socket: {exc}") from exc
        try:
            # asyncio.timeout, not wait_for: the same deadline without wait_for's extra task,
            # waiter future and callbacks, which were a visible part of a call setup's cost.
            async with asyncio.timeout(cfg.connect_timeout):
                self._driver = await open_tcp_connection(
                    cfg.server, cfg.port, self._make_engine, on_event=self._on_event,
                    on_closed=self._on_driver_closed,
                    local_addr=None if cfg.local_address is None else (cfg.local_address, 0),
                )
            async with asyncio.timeout(cfg.connect_timeout):
                peer = await asyncio.shield(self._established)
        except TimeoutError:
            await self._abort()
            raise ControlConnectionError(
                f"no answer within {cfg.connect_timeout:g} s (a firewall dropping TCP {cfg.port}?)") from None
        except OSError as exc:
            await self._abort()
            raise ControlConnectionError(os_error_text(exc)) from exc
        except ControlConnectionError:
            await self._abort()
            raise
        return peer

    def _make_engine(self, info: ConnectionInfo) -> ControlConnection:
        self.local = info.local
        if info.peer is not None:
            self._peer_address = str(info.peer[0])
        return ControlConnection(self.config.control_config(), now=info.now, call_ids=self._call_ids)

    async def _abort(self) -> None:
        if self._driver is not None:
            self._driver.close()
        self._release_gre()
        established = self._established
        if established is not None and established.done() and not established.cancelled():
            established.exception()  # reported to the caller already; mark it retrieved

    def _release_gre(self) -> None:
        if self._gre is not None and self._given_gre is None:
            release_gre_socket(self._gre)
        self._gre = None

    # -- calls ------------------------------------------------------------------------------------

    async def open_call(self, *, on_frame: Callable[[bytes], object] | None = None,
                        phone_number: str = "") -> PptpCall:
        """Outgoing-Call-Request; returns the call once the server connected it.

        Raises :class:`CallRefusedError` when the server refuses (its result code attached) or
        does not answer, :class:`ControlConnectionError` when the connection is down.
        """
        driver = self._driver
        if driver is None or driver.finished or driver.engine.closed:
            raise ControlConnectionError("the control connection is not up")
        loop = asyncio.get_running_loop()
        now = loop.time()
        try:
            call_id = driver.engine.open_call(now, phone_number=phone_number)
        except StateError as exc:
            raise CallRefusedError(str(exc), result_code=None, error_code=None, cause_code=None) from exc
        future: asyncio.Future[PptpCall] = loop.create_future()
        pending = self._pending[call_id] = _Pending(future, on_frame)
        self._register_early(call_id, pending)
        driver.flush()
        try:
            return await future
        finally:
            if future.cancelled():
                # The opener went away before the reply; _call_established clears the call.
                self._unregister_early(call_id, pending)

    def _register_early(self, call_id: int, pending: _Pending) -> None:
        gre, peer = self._gre, self._peer_address
        if gre is None or peer is None:
            return
        try:
            gre.register(peer, call_id, pending.hold)
        except ValueError as exc:
            # Collision or a full table: the channel's own registration will fail the same way
            # and refuse the call; until then there is simply no early buffering.
            log.debug("cannot register call %d early: %s", call_id, exc)
            return
        pending.registered = True

    def _unregister_early(self, call_id: int, pending: _Pending) -> None:
        if pending.registered:
            pending.registered = False
            if self._gre is not None and self._peer_address is not None:
                self._gre.unregister(self._peer_address, call_id)
        if pending.early:
            self.stats.early_gre_dropped += len(pending.early)
        self.stats.early_gre_dropped += pending.early_dropped
        pending.early = None
        pending.early_dropped = 0

    def _clear(self, call: PptpCall) -> None:
        driver = self._driver
        if driver is None or driver.finished or driver.engine.closed:
            call._ended(CloseInfo(reason="control connection closed", initiated_by=Initiator.LOCAL,
                                  clean=True))
            return
        try:
            driver.engine.clear_call(asyncio.get_running_loop().time(), call.call_id)
        except StateError:
            return  # already gone; its event is on the way
        driver.flush()

    async def close(self) -> CloseInfo | None:
        """Hang up every call, stop the control connection, wait until it is closed."""
        driver = self._driver
        if driver is None or self.closed is None:
            self._release_gre()
            return None
        if not driver.finished:
            driver.engine.stop(asyncio.get_running_loop().time(), StopReason.NONE)
            driver.flush()
        try:
            async with asyncio.timeout(self.config.call_timeout + 1.0):
                return await asyncio.shield(self.closed)
        except TimeoutError:
            driver.close()
            return self.closed.result() if self.closed.done() else None

    async def __aenter__(self) -> PptpClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- events -----------------------------------------------------------------------------------

    def _on_event(self, driver: EngineDriver[ControlConnection], event: object) -> None:
        if isinstance(event, ConnectionEstablished):
            self.peer = event.peer
            log.info("control connection to %s up: %s %s, firmware %#x, max channels %d",
                     self.config.server, event.peer.vendor or "?", event.peer.host_name or "?",
                     event.peer.firmware_revision, event.peer.max_channels)
            if self._established is not None and not self._established.done():
                self._established.set_result(event.peer)
        elif isinstance(event, CallEstablished):
            self._call_established(event.call)
        elif isinstance(event, CallFailed):
            self._call_failed(event)
        elif isinstance(event, CallCleared):
            self._call_cleared(event)
        elif isinstance(event, ConnectionClosed):
            self._connection_closed(event)
        elif isinstance(event, ProtocolViolation):
            self.stats.protocol_violations += 1
            log.warning("protocol violation by %s: %s", self.config.server, event.reason)
        elif isinstance(event, WanErrorReceived):
            self.stats.wan_errors += 1
            log.info("WAN-Error-Notify for call %d: crc %d framing %d", event.call_id,
                     event.crc_errors, event.framing_errors)
        elif isinstance(event, LinkInfoReceived):
            self.stats.link_infos += 1
            log.debug("Set-Link-Info for call %d: send ACCM %#x, receive ACCM %#x", event.call_id,
                      event.send_accm, event.receive_accm)

    def _call_established(self, info: CallInfo) -> None:
        pending = self._pending.pop(info.call_id, None)
        if pending is None or self._gre is None or self._peer_address is None:
            return
        assert info.peer_call_id is not None
        # Hand the demux entry over to the channel; nothing runs in between, so no packet can
        # fall into the gap.
        early, pending.early = pending.early, None
        if pending.registered:
            pending.registered = False
            self._gre.unregister(self._peer_address, info.call_id)
        cfg = self.config
        try:
            channel = GreChannel(self._gre, self._peer_address, GreCallConfig(
                call_id=info.call_id,
                peer_call_id=info.peer_call_id,
                peer_window=info.peer_window or 1,
                our_window=cfg.window,
                nobuffer=cfg.nobuffer,
                respect_peer_window=cfg.respect_peer_window,
                first_seq=cfg.first_seq,
            ), on_frame=pending.on_frame, local_address=ipv4_or_none(self.local))
        except (ValueError, PptpkitError) as exc:
            if not pending.future.done():
                pending.future.set_exception(
                    CallRefusedError(f"cannot set up GRE for call {info.call_id}: {exc}",
                                     result_code=None, error_code=None, cause_code=None))
            self.stats.early_gre_dropped += len(early or ()) + pending.early_dropped
            self._clear_id(info.call_id)
            return
        call = PptpCall(self, info, channel)
        self._calls[info.call_id] = call
        self.stats.calls_opened += 1
        self.stats.early_gre_dropped += pending.early_dropped
        log.info("call established: our call ID %d, peer call ID %d, peer window %s, speed %s",
                 info.call_id, info.peer_call_id, info.peer_window, info.connect_speed)
        if pending.future.done():  # the opener was cancelled: nobody will use the call
            self._clear_id(info.call_id)
            return
        pending.future.set_result(call)
        if early:
            # Delivered now, in arrival order, before anything that comes later on the socket;
            # the opener's on_frame (given to open_call) receives them.
            self.stats.early_gre += len(early)
            for packet, at in early:
                channel.receive_packet(packet, at)

    def _clear_id(self, call_id: int) -> None:
        driver = self._driver
        if driver is None or driver.engine.closed:
            return
        with contextlib.suppress(StateError):
            driver.engine.clear_call(asyncio.get_running_loop().time(), call_id)
        driver.flush()

    def _call_failed(self, event: CallFailed) -> None:
        self.stats.calls_refused += 1
        pending = self._pending.pop(event.call_id, None)
        log.info("call %d failed: %s", event.call_id, event.reason)
        if pending is not None:
            self._unregister_early(event.call_id, pending)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(CallRefusedError(
                event.reason, result_code=event.result_code, error_code=event.error_code,
                cause_code=event.cause_code))
        self._maybe_idle()

    def _call_cleared(self, event: CallCleared) -> None:
        call = self._calls.pop(event.call_id, None)
        log.info("call %d cleared (%s): %s", event.call_id,
                 "by us" if event.initiated_by is Initiator.LOCAL else "by the server", event.reason)
        if call is not None:
            call._ended(CloseInfo(reason=event.reason, initiated_by=event.initiated_by, clean=True,
                                  result_code=event.result_code, error_code=event.error_code,
                                  cause_code=event.cause_code))
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        driver = self._driver
        if (self.config.close_when_idle and driver is not None and not driver.engine.closed
                and not self._calls and not self._pending and self.stats.calls_opened > 0):
            self.idle_stopped = True
            driver.engine.stop(asyncio.get_running_loop().time(), StopReason.NONE)
            driver.flush()

    def _connection_closed(self, event: ConnectionClosed) -> None:
        log.info("control connection to %s closed (%s): %s", self.config.server, event.cause.value,
                 event.reason)
        info = CloseInfo(reason=event.reason, initiated_by=event.initiated_by, clean=event.clean,
                         result_code=event.code)
        if self._established is not None and not self._established.done():
            self._established.set_exception(
                ControlConnectionError(event.reason, cause=event.cause, code=event.code))
        for call_id, pending in self._pending.items():
            self._unregister_early(call_id, pending)
            if not pending.future.done():
                pending.future.set_exception(ControlConnectionError(event.reason, cause=event.cause,
                                                                    code=event.code))
        self._pending.clear()
        for call in list(self._calls.values()):
            call._ended(info)
        self._calls.clear()
        self._finish(info)

    def _on_driver_closed(self, driver: EngineDriver[ControlConnection]) -> None:
        self._finish(CloseInfo(reason="TCP connection closed", initiated_by=Initiator.REMOTE, clean=False))

    def _finish(self, info: CloseInfo) -> None:
        self._release_gre()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(info)
            if self.on_close is not None:
                self.on_close(info)
        if self._established is not None and not self._established.done():
            self._established.set_exception(ControlConnectionError(info.reason))
