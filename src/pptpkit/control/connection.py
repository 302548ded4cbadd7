"""Sans-IO RFC 2637 control-connection engine for both roles.

* ``Role.CLIENT`` is the PNS and the TCP originator (as pptp-linux): it sends
  Start-Control-Connection-Request at construction, then one Outgoing-Call-Request per
  :meth:`ControlConnection.open_call`.
* ``Role.SERVER`` is the PAC and the TCP receiver (as pptpd): it answers the SCCRQ, reports each
  Outgoing-Call-Request as :class:`CallRequested` and the owner answers with
  :meth:`~ControlConnection.accept_call` / :meth:`~ControlConnection.reject_call`.

Bytes in through :meth:`~ControlConnection.receive_data`, bytes out through
:meth:`~ControlConnection.data_to_send`, events through :meth:`~ControlConnection.next_event`,
one timer through :meth:`~ControlConnection.get_timer` / :meth:`~ControlConnection.handle_timer`.
When :attr:`~ControlConnection.closed` turns true the adapter sends what is queued and closes TCP.

Call IDs come from a :class:`CallIdAllocator` that a server shares between all its connections,
because the GRE demultiplexer keys on *our* call ID alone (clients behind one NAT arrive from one
address), so our IDs must be unique per process rather than per tunnel.

Which call ID a message carries is fixed by RFC 2637 and easy to get wrong, so in one place:
Call-Clear-Request carries the PNS's ID and Call-Disconnect-Notify the PAC's ID, i.e. in both
cases the *sender's* own ID; Set-Link-Info and WAN-Error-Notify carry the *receiver's* ID.  The
engine looks calls up that way in both roles, which also makes it accept a PAC that clears calls
with Call-Clear-Request (pptp-linux answers those, so we do too).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Final

from pptpkit.control.callids import CallIdAllocator, CallIdExhausted
from pptpkit.control.config import U16_MAX, U32_MAX, ControlConfig, Role, check_u16, check_u32
from pptpkit.control.events import (
    CallCleared,
    CallDirection,
    CallEstablished,
    CallFailed,
    CallInfo,
    CallRejected,
    CallRequested,
    CallState,
    CloseCause,
    ConnectionClosed,
    ConnectionEstablished,
    ConnectionState,
    ControlEvent,
    ControlStats,
    Initiator,
    LinkInfoReceived,
    PeerInfo,
    ProtocolViolation,
    WanErrorReceived,
)
from pptpkit.control.messages import (
    PROTOCOL_VERSION,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    ControlMessageType,
    ControlStreamFramer,
    DisconnectResult,
    EchoReply,
    EchoRequest,
    EchoResult,
    GeneralError,
    IncomingCallConnected,
    IncomingCallReply,
    IncomingCallRequest,
    IncomingCallResult,
    OutgoingCallReply,
    OutgoingCallRequest,
    OutgoingCallResult,
    RawControlMessage,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StartResult,
    StopControlConnectionReply,
    StopControlConnectionRequest,
    StopReason,
    StopResult,
    WanErrorNotify,
    check_text,
    decode_message,
)
from pptpkit.enums import enum_name
from pptpkit.errors import ConfigError, DecodeError, StateError

__all__ = ["MAX_PENDING_EVENTS", "MAX_PENDING_OUTPUT", "ControlConnection"]

#: Events queued beyond this are dropped (and counted): only an owner that never drains can hit it.
MAX_PENDING_EVENTS: Final = 4096
#: Output queued beyond this means the peer makes us answer faster than the adapter drains:
#: the connection is closed rather than buffering without bound.
MAX_PENDING_OUTPUT: Final = 1 << 20
# receive_data feeds the framer in slices this big and drains it after each, so the framer never
# holds more than one slice plus one partial message whatever the adapter hands us at once.
_FEED_SLICE: Final = 4096
# Calls we disconnected whose crossing Call-Clear-Request is expected, per connection.
_MAX_ENDED: Final = 16


# One generator for every connection that is not given its own: a Random instance holds 2.5 KiB
# of state, which per connection would be a tenth of a server session's memory.
_SHARED_RNG: Final = random.Random()


@dataclass(slots=True)
class _Call:
    call_id: int
    direction: CallDirection
    state: CallState
    serial_number: int
    our_window: int
    our_processing_delay: int
    peer_call_id: int | None = None
    peer_window: int | None = None
    peer_processing_delay: int | None = None
    connect_speed: int | None = None
    phone_number: str = ""
    deadline: float | None = None

    def info(self) -> CallInfo:
        return CallInfo(
            call_id=self.call_id,
            peer_call_id=self.peer_call_id,
            direction=self.direction,
            state=self.state,
            serial_number=self.serial_number,
            our_window=self.our_window,
            our_processing_delay=self.our_processing_delay,
            peer_window=self.peer_window,
            peer_processing_delay=self.peer_processing_delay,
            connect_speed=self.connect_speed,
            phone_number=self.phone_number,
        )


@dataclass(frozen=True, slots=True)
class _PendingClose:
    """Why we sent Stop-Control-Connection-Request: reported once the exchange ends."""

    cause: CloseCause
    reason: str
    code: int | None
    clean: bool


def _type_name(control_type: int) -> str:
    try:
        return ControlMessageType(control_type).name.replace("_", "-").title()
    except ValueError:
        return f"control message type {control_type}"


# --- the engine ----------------------------------------------------------------------------------


class ControlConnection:
    """One PPTP control connection (one TCP connection), client or server per ``config.role``.

    ``now`` is the time the TCP connection came up: the client queues its SCCRQ and starts the
    SCCRP timer, the server starts the start timer.  ``call_ids`` is the process-wide allocator
    (a private one is made when omitted); ``rng`` seeds echo identifiers, call serial numbers and
    the private allocator, so tests are deterministic.

    Public methods raise :class:`StateError` when the state does not allow them and
    :class:`ConfigError` for bad argument values; nothing the peer sends raises.
    """

    __slots__ = (
        '_call_ids', '_calls', '_echo_deadline', '_echo_next_id', '_echo_outstanding', '_ended',
        '_events', '_framer', '_last_rx', '_next_serial', '_out', '_peer', '_pending_close', '_rng',
        '_state', '_state_deadline', '_tokens', '_tokens_at', 'config', 'stats',
    )

    def __init__(
        self,
        config: ControlConfig,
        *,
        now: float,
        call_ids: CallIdAllocator | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.stats = ControlStats()
        self._rng = rng if rng is not None else _SHARED_RNG
        self._call_ids = call_ids if call_ids is not None else CallIdAllocator(rng=rng)
        # Peer call IDs of the calls we disconnected last: their Call-Clear-Request may cross our
        # Call-Disconnect-Notify on the wire.  Made on first use (most connections never need it).
        self._ended: deque[int] | None = None
        self._tokens = float(config.peer_message_burst)
        self._tokens_at = now
        self._framer = ControlStreamFramer()
        self._out = bytearray()
        self._events: list[ControlEvent] = []
        self._calls: dict[int, _Call] = {}
        self._peer: PeerInfo | None = None
        self._last_rx = now
        self._echo_next_id = self._rng.getrandbits(32)
        self._echo_outstanding: int | None = None
        self._echo_deadline: float | None = None
        self._next_serial = self._rng.getrandbits(16)
        self._pending_close: _PendingClose | None = None
        if config.role is Role.SERVER:
            self._state = ConnectionState.WAIT_START_REQUEST
            self._state_deadline: float | None = now + config.start_timeout
        else:
            self._state = ConnectionState.WAIT_START_REPLY
            self._state_deadline = now + config.start_reply_timeout
            self._send(
                StartControlConnectionRequest(
                    protocol_version=PROTOCOL_VERSION,
                    framing_capabilities=config.framing_capabilities,
                    bearer_capabilities=config.bearer_capabilities,
                    max_channels=config.effective_max_channels,
                    firmware_revision=config.firmware_revision,
                    host_name=config.host_name,
                    vendor=config.vendor,
                )
            )

    # --- properties ------------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.config.role

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the engine is done; close TCP after draining :meth:`data_to_send`."""
        return self._state is ConnectionState.CLOSED

    @property
    def peer(self) -> PeerInfo | None:
        return self._peer

    @property
    def calls(self) -> dict[int, CallInfo]:
        """Snapshot of every call this connection holds, keyed by our call ID."""
        return {cid: call.info() for cid, call in self._calls.items()}

    def get_call(self, call_id: int) -> CallInfo | None:
        call = self._calls.get(call_id)
        return None if call is None else call.info()

    # --- sans-IO plumbing ------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> ControlEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        if self._state is ConnectionState.CLOSED:
            return None
        deadlines: list[float] = []
        if self._state_deadline is not None:
            deadlines.append(self._state_deadline)
        if self._state is ConnectionState.ESTABLISHED:
            echo = self._echo_timer()
            if echo is not None:
                deadlines.append(echo)
            deadlines.extend(c.deadline for c in self._calls.values() if c.deadline is not None)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self._state is ConnectionState.CLOSED:
            return
        if self._state_deadline is not None and now >= self._state_deadline:
            self._state_timeout()
            return
        if self._state is not ConnectionState.ESTABLISHED:
            return
        if self._echo_outstanding is not None:
            if self._echo_deadline is not None and now >= self._echo_deadline:
                self._close(
                    CloseCause.ECHO_TIMEOUT,
                    f"no Echo-Reply within {self.config.echo_max_wait:g} s",
                    code=None,
                    initiated_by=Initiator.LOCAL,
                    clean=False,
                )
                return
        elif self.config.echo_interval is not None and now >= self._last_rx + self.config.echo_interval:
            self._send_echo(now)
        for call in list(self._calls.values()):
            if call.deadline is not None and now >= call.deadline:
                self._call_timeout(call)

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Feed bytes received on the TCP connection; never raises for anything the peer sends."""
        if self.closed:
            self.stats.bytes_ignored += len(data)
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _FEED_SLICE):
            try:
                self._framer.feed(view[start : start + _FEED_SLICE])
                while not self.closed:
                    frame = self._framer.next_frame()
                    if frame is None:
                        break
                    self._receive_frame(frame, now)
            except DecodeError as exc:
                # The stream itself no longer parses: RFC 2637 section 1.4 forbids resynchronising.
                self.stats.malformed += 1
                self._close(
                    CloseCause.LOSS_OF_SYNC,
                    f"control stream out of sync: {exc}",
                    code=exc.code,
                    initiated_by=Initiator.LOCAL,
                    clean=False,
                )
            if self.closed:
                self.stats.bytes_ignored += max(0, len(view) - start - _FEED_SLICE)
                return
            if len(self._out) > MAX_PENDING_OUTPUT:
                self._close(
                    CloseCause.PROTOCOL_ERROR,
                    f"more than {MAX_PENDING_OUTPUT} bytes of answers pending: peer floods us",
                    code=None,
                    initiated_by=Initiator.LOCAL,
                    clean=False,
                )
                return

    def connection_lost(self, now: float) -> None:
        """The TCP connection closed underneath us (EOF or reset)."""
        if self._state is ConnectionState.CLOSED:
            return
        pending = self._pending_close
        if pending is not None:
            self._close(pending.cause, f"{pending.reason}; peer closed TCP", code=pending.code,
                        initiated_by=Initiator.LOCAL, clean=pending.clean)
            return
        # pptpd answers Call-Clear-Request by closing TCP without Call-Disconnect-Notify: when
        # every remaining call was being cleared by us, this is an orderly end.
        clean = self._state is ConnectionState.ESTABLISHED and all(
            c.state is CallState.WAIT_DISCONNECT for c in self._calls.values()
        )
        self._close(CloseCause.CONNECTION_LOST, "TCP connection closed by the peer", code=None,
                    initiated_by=Initiator.REMOTE, clean=clean)

    # --- commands --------------------------------------------------------------------------------

    def stop(self, now: float, reason: StopReason | int = StopReason.NONE) -> None:
        """Close the control connection: Stop-Control-Connection-Request once established, at
        once before that.  All calls are implicitly cleared (RFC 2637 2.3)."""
        if self._state in (ConnectionState.CLOSED, ConnectionState.WAIT_STOP_REPLY):
            return
        if self._state is not ConnectionState.ESTABLISHED:
            self._close(CloseCause.STOPPED_LOCALLY, "closed before the control connection was up",
                        code=None, initiated_by=Initiator.LOCAL, clean=True)
            return
        self._begin_stop(now, reason, _PendingClose(
            CloseCause.STOPPED_LOCALLY, f"stopped locally ({enum_name(reason)})", int(reason), True))

    def open_call(self, now: float, *, phone_number: str = "", subaddress: str = "") -> int:
        """Client: send an Outgoing-Call-Request; returns our call ID.  The outcome arrives as
        :class:`CallEstablished` or :class:`CallFailed`."""
        self._require_role(Role.CLIENT, "open_call")
        self._require_established("open_call")
        try:
            check_text(phone_number, 64, "phone_number")
            check_text(subaddress, 64, "subaddress")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if len(self._calls) >= self.config.max_calls:
            raise StateError(f"max_calls ({self.config.max_calls}) reached")
        call_id = self._call_ids.allocate()
        serial = self._next_serial
        self._next_serial = (serial + 1) & U16_MAX
        cfg = self.config
        self._calls[call_id] = _Call(
            call_id=call_id,
            direction=CallDirection.OUTGOING,
            state=CallState.WAIT_REPLY,
            serial_number=serial,
            our_window=cfg.window,
            our_processing_delay=cfg.processing_delay,
            phone_number=phone_number,
            deadline=now + cfg.call_reply_timeout,
        )
        self._send(
            OutgoingCallRequest(
                call_id=call_id,
                call_serial_number=serial,
                minimum_bps=cfg.minimum_bps,
                maximum_bps=cfg.maximum_bps,
                bearer_type=cfg.bearer_type,
                framing_type=cfg.framing_type,
                packet_receive_window=cfg.window,
                packet_processing_delay=cfg.processing_delay,
                phone_number=phone_number,
                subaddress=subaddress,
            )
        )
        return call_id

    def accept_call(
        self,
        now: float,
        call_id: int,
        *,
        connect_speed: int | None = None,
        physical_channel_id: int = 0,
    ) -> CallInfo:
        """Server: answer a :class:`CallRequested` with a Connected Outgoing-Call-Reply."""
        self._require_role(Role.SERVER, "accept_call")
        call = self._waiting_call(call_id)
        speed = self.config.connect_speed if connect_speed is None else connect_speed
        check_u32("connect_speed", speed)
        check_u32("physical_channel_id", physical_channel_id)
        assert call.peer_call_id is not None  # set from the request
        self._send(
            OutgoingCallReply(
                call_id=call.call_id,
                peer_call_id=call.peer_call_id,
                result_code=OutgoingCallResult.CONNECTED,
                connect_speed=speed,
                packet_receive_window=call.our_window,
                packet_processing_delay=call.our_processing_delay,
                physical_channel_id=physical_channel_id,
            )
        )
        call.connect_speed = speed
        call.state = CallState.ESTABLISHED
        call.deadline = None
        info = call.info()
        self._push(CallEstablished(call=info))
        return info

    def reject_call(
        self,
        now: float,
        call_id: int,
        *,
        result: OutgoingCallResult | int = OutgoingCallResult.DO_NOT_ACCEPT,
        error: GeneralError | int = GeneralError.NONE,
        cause_code: int = 0,
    ) -> None:
        """Server: answer a :class:`CallRequested` with a failed Outgoing-Call-Reply."""
        self._require_role(Role.SERVER, "reject_call")
        call = self._waiting_call(call_id)
        if result == OutgoingCallResult.CONNECTED or not 0 <= result <= 0xFF:
            raise ConfigError(f"{result} is not a failure result code")
        if not 0 <= error <= 0xFF:
            raise ConfigError(f"error code {error} out of range")
        check_u16("cause_code", cause_code)
        assert call.peer_call_id is not None
        self._send(OutgoingCallReply(call_id=0, peer_call_id=call.peer_call_id, result_code=result,
                                     error_code=error, cause_code=cause_code))
        self._forget(call)

    def clear_call(
        self,
        now: float,
        call_id: int,
        *,
        result: DisconnectResult | int = DisconnectResult.ADMIN_SHUTDOWN,
        cause_code: int = 0,
        call_statistics: str = "",
    ) -> None:
        """Hang up a call.

        Client (PNS): Call-Clear-Request; :class:`CallCleared` follows on the peer's
        Call-Disconnect-Notify (or its closing TCP, as pptpd does, or ``call_reply_timeout``).
        Server (PAC): Call-Disconnect-Notify with ``result``; :class:`CallCleared` at once.
        """
        call = self._calls.get(call_id)
        if call is None:
            raise StateError(f"no call {call_id}")
        if self.role is Role.CLIENT:
            if call.state is CallState.WAIT_DISCONNECT:
                return
            self._send(CallClearRequest(call_id=call.call_id))
            call.state = CallState.WAIT_DISCONNECT
            call.deadline = now + self.config.call_reply_timeout
            return
        if call.state is CallState.WAIT_ANSWER:
            raise StateError(f"call {call_id} is not answered yet: use reject_call")
        if not 0 <= result <= 0xFF:
            raise ConfigError(f"result code {result} out of range")
        check_u16("cause_code", cause_code)
        try:
            notify = CallDisconnectNotify(call_id=call.call_id, result_code=result, cause_code=cause_code,
                                          call_statistics=call_statistics)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._send(notify)
        if call.peer_call_id is not None:
            ended = self._ended
            if ended is None:
                ended = self._ended = deque(maxlen=_MAX_ENDED)
            ended.append(call.peer_call_id)
        self._forget(call)
        self._push(CallCleared(call_id=call.call_id, peer_call_id=call.peer_call_id,
                               initiated_by=Initiator.LOCAL, result_code=int(result), error_code=0,
                               cause_code=cause_code, call_statistics=call_statistics,
                               reason="cleared locally"))

    def set_link_info(
        self, now: float, call_id: int, *, send_accm: int = U32_MAX, receive_accm: int = U32_MAX
    ) -> None:
        """Send Set-Link-Info (the ACCMs PPP negotiated) for an established call."""
        call = self._established_call(call_id)
        check_u32("send_accm", send_accm)
        check_u32("receive_accm", receive_accm)
        assert call.peer_call_id is not None
        self._send(
            SetLinkInfo(peer_call_id=call.peer_call_id, send_accm=send_accm, receive_accm=receive_accm)
        )

    def send_wan_error(
        self,
        now: float,
        call_id: int,
        *,
        crc_errors: int = 0,
        framing_errors: int = 0,
        hardware_overruns: int = 0,
        buffer_overruns: int = 0,
        timeout_errors: int = 0,
        alignment_errors: int = 0,
    ) -> None:
        """Send WAN-Error-Notify (cumulative counters) for an established call."""
        call = self._established_call(call_id)
        counters = {
            "crc_errors": crc_errors,
            "framing_errors": framing_errors,
            "hardware_overruns": hardware_overruns,
            "buffer_overruns": buffer_overruns,
            "timeout_errors": timeout_errors,
            "alignment_errors": alignment_errors,
        }
        for name, value in counters.items():
            check_u32(name, value)
        assert call.peer_call_id is not None
        self._send(WanErrorNotify(peer_call_id=call.peer_call_id, **counters))

    # --- internals: output and bookkeeping -------------------------------------------------------

    def _send(self, msg: ControlMessage) -> None:
        self._out += msg.encode()
        self.stats.messages_sent += 1

    def _push(self, event: ControlEvent) -> None:
        if len(self._events) >= MAX_PENDING_EVENTS:
            self.stats.events_dropped += 1
            return
        self._events.append(event)

    def _violation(self, reason: str, *, code: int | None, message_type: int | None) -> None:
        self.stats.protocol_errors += 1
        if self._spend(self._last_rx):
            self._push(ProtocolViolation(reason=reason, code=code, message_type=message_type))

    def _spend(self, now: float) -> bool:
        """Take a token for something the peer may repeat at will; False when over the rate
        (then the caller drops it, and a peer that keeps on is cut off)."""
        cfg = self.config
        tokens = min(float(cfg.peer_message_burst),
                     self._tokens + (now - self._tokens_at) * cfg.peer_message_rate)
        self._tokens_at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        stats = self.stats
        stats.rate_limited += 1
        if stats.rate_limited >= cfg.flood_limit and not self.closed:
            reason = (f"peer floods us: {stats.rate_limited} messages over the rate of "
                      f"{cfg.peer_message_rate:g} per second")
            self._push(ProtocolViolation(reason=f"{reason}; closing", code=None, message_type=None))
            self._close(CloseCause.PROTOCOL_ERROR, reason, code=None, initiated_by=Initiator.LOCAL,
                        clean=False)
        return False

    def _require_role(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise StateError(f"{what} is for the {role.value} role")

    def _require_established(self, what: str) -> None:
        if self._state is not ConnectionState.ESTABLISHED:
            raise StateError(f"{what} needs an established control connection (state {self._state.value})")

    def _waiting_call(self, call_id: int) -> _Call:
        self._require_established("answering a call")
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.WAIT_ANSWER:
            raise StateError(f"no call {call_id} waiting for an answer")
        return call

    def _established_call(self, call_id: int) -> _Call:
        self._require_established("this")
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.ESTABLISHED or call.peer_call_id is None:
            raise StateError(f"no established call {call_id}")
        return call

    def _find_by_peer_id(self, peer_call_id: int) -> _Call | None:
        for call in self._calls.values():
            if call.peer_call_id == peer_call_id:
                return call
        return None

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.call_id, None)
        self._call_ids.release(call.call_id)

    def _echo_timer(self) -> float | None:
        if self._echo_outstanding is not None:
            return self._echo_deadline
        if self.config.echo_interval is None:
            return None
        return self._last_rx + self.config.echo_interval

    def _send_echo(self, now: float) -> None:
        ident = self._echo_next_id
        self._echo_next_id = (ident + 1) & U32_MAX
        self._echo_outstanding = ident
        self._echo_deadline = now + self.config.echo_max_wait
        self.stats.echo_requests_sent += 1
        self._send(EchoRequest(identifier=ident))

    def _begin_stop(self, now: float, reason: StopReason | int, pending: _PendingClose) -> None:
        self._send(StopControlConnectionRequest(reason=reason))
        self._state = ConnectionState.WAIT_STOP_REPLY
        self._state_deadline = now + self.config.stop_reply_timeout
        self._pending_close = pending
        self._echo_outstanding = None
        self._echo_deadline = None
        # RFC 2637 2.3: a Stop implicitly clears every call.
        self._teardown_calls(Initiator.LOCAL, pending.reason)

    def _teardown_calls(self, initiated_by: Initiator, reason: str) -> None:
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            self._call_ids.release(call.call_id)
            if call.state is CallState.WAIT_DISCONNECT:
                self._push(CallCleared(call_id=call.call_id, peer_call_id=call.peer_call_id,
                                       initiated_by=Initiator.LOCAL, result_code=None, error_code=None,
                                       cause_code=None, call_statistics="",
                                       reason=f"cleared; no Call-Disconnect-Notify ({reason})"))
            elif call.state is CallState.ESTABLISHED:
                self._push(CallCleared(call_id=call.call_id, peer_call_id=call.peer_call_id,
                                       initiated_by=initiated_by, result_code=None, error_code=None,
                                       cause_code=None, call_statistics="", reason=reason))
            else:
                self._push(CallFailed(call_id=call.call_id, result_code=None, error_code=None,
                                      cause_code=None, reason=reason))

    def _close(self, cause: CloseCause, reason: str, *, code: int | None, initiated_by: Initiator,
               clean: bool) -> None:
        if self._state is ConnectionState.CLOSED:
            return
        self._state = ConnectionState.CLOSED
        self._state_deadline = None
        self._echo_outstanding = None
        self._echo_deadline = None
        self._pending_close = None
        self._teardown_calls(initiated_by, reason)
        self._push(ConnectionClosed(cause=cause, reason=reason, code=code, initiated_by=initiated_by,
                                    clean=clean))

    def _state_timeout(self) -> None:
        cfg = self.config
        if self._state is ConnectionState.WAIT_START_REQUEST:
            self._close(CloseCause.START_TIMEOUT,
                        f"no Start-Control-Connection-Request within {cfg.start_timeout:g} s",
                        code=None, initiated_by=Initiator.LOCAL, clean=False)
        elif self._state is ConnectionState.WAIT_START_REPLY:
            self._close(CloseCause.START_REPLY_TIMEOUT,
                        f"no Start-Control-Connection-Reply within {cfg.start_reply_timeout:g} s",
                        code=None, initiated_by=Initiator.LOCAL, clean=False)
        elif self._state is ConnectionState.WAIT_STOP_REPLY:
            pending = self._pending_close
            assert pending is not None
            missing = f"no Stop-Control-Connection-Reply within {cfg.stop_reply_timeout:g} s"
            if pending.cause is CloseCause.STOPPED_LOCALLY:
                self._close(CloseCause.STOP_REPLY_TIMEOUT, f"{pending.reason}; {missing}", code=pending.code,
                            initiated_by=Initiator.LOCAL, clean=False)
            else:
                self._close(pending.cause, f"{pending.reason}; {missing}", code=pending.code,
                            initiated_by=Initiator.LOCAL, clean=pending.clean)

    def _call_timeout(self, call: _Call) -> None:
        timeout = f"{self.config.call_reply_timeout:g} s"
        self._forget(call)
        if call.state is CallState.WAIT_DISCONNECT:
            self._push(CallCleared(call_id=call.call_id, peer_call_id=call.peer_call_id,
                                   initiated_by=Initiator.LOCAL, result_code=None, error_code=None,
                                   cause_code=None, call_statistics="",
                                   reason=f"no Call-Disconnect-Notify within {timeout}; forgotten"))
            return
        if call.state is CallState.WAIT_ANSWER:
            assert call.peer_call_id is not None
            self._send(OutgoingCallReply(call_id=0, peer_call_id=call.peer_call_id,
                                         result_code=OutgoingCallResult.TIMEOUT))
            reason = f"not answered within {timeout}; refused with Time-out"
        else:
            # PNS states (RFC 2637 3.2.4.2): abort with Call-Clear-Request so a PAC that did set
            # the call up releases it; we do not wait for its Call-Disconnect-Notify.
            self._send(CallClearRequest(call_id=call.call_id))
            outgoing = call.state is CallState.WAIT_REPLY
            awaited = "Outgoing-Call-Reply" if outgoing else "Incoming-Call-Connected"
            reason = f"no {awaited} within {timeout}; aborted with Call-Clear-Request"
        self._push(CallFailed(call_id=call.call_id, result_code=None, error_code=None, cause_code=None,
                              reason=reason))

    # --- internals: input ------------------------------------------------------------------------

    def _receive_frame(self, frame: bytes, now: float) -> None:
        try:
            msg = decode_message(frame)
        except DecodeError as exc:
            self._malformed(exc, frame, now)
            return
        self.stats.messages_received += 1
        self._last_rx = now
        self._dispatch(msg, now)

    def _malformed(self, exc: DecodeError, frame: bytes, now: float) -> None:
        # The frame boundary is intact, so we can still say goodbye properly (RFC 2637 section 3:
        # a malformed message closes the control connection).
        self.stats.malformed += 1
        message_type = int.from_bytes(frame[8:10], "big") if len(frame) >= 10 else None
        reason = f"malformed control message: {exc}"
        if self._state is ConnectionState.ESTABLISHED:
            self._push(ProtocolViolation(reason=f"{reason}; sending Stop-Control-Connection-Request",
                                         code=exc.code, message_type=message_type))
            self._begin_stop(now, StopReason.NONE,
                             _PendingClose(CloseCause.PROTOCOL_ERROR, reason, exc.code, False))
        elif self._state is ConnectionState.WAIT_STOP_REPLY:
            self._push(ProtocolViolation(reason=f"{reason}; ignored while stopping", code=exc.code,
                                         message_type=message_type))
        else:
            self._push(ProtocolViolation(reason=f"{reason}; closing", code=exc.code,
                                         message_type=message_type))
            self._close(CloseCause.PROTOCOL_ERROR, reason, code=exc.code, initiated_by=Initiator.LOCAL,
                        clean=False)

    def _dispatch(self, msg: ControlMessage, now: float) -> None:
        match msg:
            case StartControlConnectionRequest():
                self._on_start_request(msg, now)
            case StartControlConnectionReply():
                self._on_start_reply(msg, now)
            case StopControlConnectionRequest():
                self._on_stop_request(msg)
            case StopControlConnectionReply():
                self._on_stop_reply(msg)
            case EchoRequest():
                if self._spend(now):
                    self._on_echo_request(msg)
            case EchoReply():
                self._on_echo_reply(msg)
            case RawControlMessage():
                self.stats.unknown_messages += 1
                self._violation(f"unknown control message type {msg.raw_type} ignored", code=None,
                                message_type=msg.raw_type)
            case _:
                self._dispatch_call_message(msg, now)

    def _dispatch_call_message(self, msg: ControlMessage, now: float) -> None:
        if self._state is ConnectionState.WAIT_STOP_REPLY:
            return  # every call is already cleared; the peer has not seen our Stop yet
        if self._state is not ConnectionState.ESTABLISHED:
            self._not_connected(msg)
            return
        match msg:
            case OutgoingCallRequest():
                self._on_outgoing_call_request(msg, now)
            case OutgoingCallReply():
                self._on_outgoing_call_reply(msg)
            case IncomingCallRequest():
                self._on_incoming_call_request(msg, now)
            case IncomingCallReply():
                self._on_incoming_call_reply(msg)
            case IncomingCallConnected():
                self._on_incoming_call_connected(msg)
            case CallClearRequest():
                self._on_call_clear_request(msg)
            case CallDisconnectNotify():
                self._on_call_disconnect_notify(msg)
            case WanErrorNotify():
                self._on_wan_error(msg)
            case SetLinkInfo():
                self._on_set_link_info(msg)
            case _:  # pragma: no cover - every registered type is handled above
                raise AssertionError(f"unhandled {msg!r}")

    def _not_connected(self, msg: ControlMessage) -> None:
        # General Error "Not-Connected" exists for exactly this: a request before the Start
        # exchange.  Requests that expect a reply get one; the rest are counted and dropped.
        answer = "ignored"
        if isinstance(msg, OutgoingCallRequest):
            self._send(OutgoingCallReply(call_id=0, peer_call_id=msg.call_id,
                                         result_code=OutgoingCallResult.GENERAL_ERROR,
                                         error_code=GeneralError.NOT_CONNECTED))
            answer = "answered with Not-Connected"
        elif isinstance(msg, IncomingCallRequest):
            self._send(IncomingCallReply(call_id=0, peer_call_id=msg.call_id,
                                         result_code=IncomingCallResult.GENERAL_ERROR,
                                         error_code=GeneralError.NOT_CONNECTED))
            answer = "answered with Not-Connected"
        self._violation(f"{_type_name(msg.control_type)} before the control connection is up; {answer}",
                        code=GeneralError.NOT_CONNECTED, message_type=msg.control_type)

    def _our_start_reply(self, result: StartResult) -> StartControlConnectionReply:
        cfg = self.config
        return StartControlConnectionReply(
            protocol_version=PROTOCOL_VERSION,
            result_code=result,
            framing_capabilities=cfg.framing_capabilities,
            bearer_capabilities=cfg.bearer_capabilities,
            max_channels=cfg.effective_max_channels,
            firmware_revision=cfg.firmware_revision,
            host_name=cfg.host_name,
            vendor=cfg.vendor,
        )

    @staticmethod
    def _peer_info(msg: StartControlConnectionRequest | StartControlConnectionReply) -> PeerInfo:
        return PeerInfo(
            protocol_version=msg.protocol_version,
            framing_capabilities=int(msg.framing_capabilities),
            bearer_capabilities=int(msg.bearer_capabilities),
            max_channels=msg.max_channels,
            firmware_revision=msg.firmware_revision,
            host_name=msg.host_name,
            vendor=msg.vendor,
        )

    def _on_start_request(self, msg: StartControlConnectionRequest, now: float) -> None:
        """RFC 2637 §2.1 Start-Control-Connection-Request: a server in WAIT_START_REQUEST
        answers with its Reply and is established; anything else gets result Already-Exists."""
        if self.role is not Role.SERVER or self._state is not ConnectionState.WAIT_START_REQUEST:
            self._send(self._our_start_reply(StartResult.ALREADY_EXISTS))
            self._violation("Start-Control-Connection-Request on a connection that is not waiting for one; "
                            "answered Already-Exists", code=None, message_type=msg.TYPE)
            return
        if msg.protocol_version < PROTOCOL_VERSION:
            # RFC 2637 3.1.2: an older version we cannot support gets a reply with the
            # version result code, then the TCP connection is closed.
            self._send(self._our_start_reply(StartResult.BAD_VERSION))
            self._close(CloseCause.VERSION_MISMATCH,
                        f"peer speaks protocol version 0x{msg.protocol_version:04x}; refused",
                        code=StartResult.BAD_VERSION, initiated_by=Initiator.LOCAL, clean=False)
            return
        # Same or newer: reply with our version and let the originator decide (RFC 2637 3.1.2).
        self._send(self._our_start_reply(StartResult.SUCCESS))
        self._established(self._peer_info(msg))

    def _on_start_reply(self, msg: StartControlConnectionReply, now: float) -> None:
        """RFC 2637 §2.2 Start-Control-Connection-Reply: the client's connection is up on
        result OK and a protocol version we speak; otherwise it closes with the reason."""
        if self._state is not ConnectionState.WAIT_START_REPLY:
            self._violation("unexpected Start-Control-Connection-Reply; ignored", code=None,
                            message_type=msg.TYPE)
            return
        if msg.result_code != StartResult.SUCCESS:
            version = msg.result_code == StartResult.BAD_VERSION
            self._close(CloseCause.VERSION_MISMATCH if version else CloseCause.START_REJECTED,
                        f"peer refused the control connection: result {enum_name(msg.result_code)}, "
                        f"error {enum_name(msg.error_code)}",
                        code=int(msg.result_code), initiated_by=Initiator.REMOTE, clean=False)
            return
        if msg.protocol_version != PROTOCOL_VERSION:
            self._begin_stop(now, StopReason.STOP_PROTOCOL, _PendingClose(
                CloseCause.VERSION_MISMATCH,
                f"peer replied with protocol version 0x{msg.protocol_version:04x}",
                StopReason.STOP_PROTOCOL, False))
            return
        self._established(self._peer_info(msg))

    def _established(self, peer: PeerInfo) -> None:
        self._state = ConnectionState.ESTABLISHED
        self._state_deadline = None
        self._peer = peer
        self._push(ConnectionEstablished(peer=peer))

    def _on_stop_request(self, msg: StopControlConnectionRequest) -> None:
        """RFC 2637 §2.3 Stop-Control-Connection-Request: answered with a Stop Reply; every
        call is cleared and the connection closes."""
        self._send(StopControlConnectionReply(result_code=StopResult.OK))
        pending = self._pending_close
        if pending is not None:
            # Both sides asked at once: the reason we had is the one worth reporting.
            self._close(pending.cause, pending.reason, code=pending.code, initiated_by=Initiator.LOCAL,
                        clean=pending.clean)
            return
        self._close(CloseCause.STOPPED_BY_PEER,
                    f"peer sent Stop-Control-Connection-Request ({enum_name(msg.reason)})",
                    code=int(msg.reason), initiated_by=Initiator.REMOTE, clean=True)

    def _on_stop_reply(self, msg: StopControlConnectionReply) -> None:
        """RFC 2637 §2.4 Stop-Control-Connection-Reply: ends the stop we started."""
        pending = self._pending_close
        if self._state is not ConnectionState.WAIT_STOP_REPLY or pending is None:
            self._violation("unexpected Stop-Control-Connection-Reply; ignored", code=None,
                            message_type=msg.TYPE)
            return
        reason = pending.reason
        if msg.result_code != StopResult.OK:
            # The peer may refuse, but we asked to stop and close anyway; say so.
            reason += f"; peer answered {enum_name(msg.result_code)}/{enum_name(msg.error_code)}"
        self._close(pending.cause, reason, code=pending.code, initiated_by=Initiator.LOCAL,
                    clean=pending.clean)

    def _on_echo_request(self, msg: EchoRequest) -> None:
        """RFC 2637 §2.5 Echo-Request: answered with an Echo-Reply carrying the same
        identifier once the connection is up."""
        self.stats.echo_requests_received += 1
        if self._state in (ConnectionState.ESTABLISHED, ConnectionState.WAIT_STOP_REPLY):
            self._send(EchoReply(identifier=msg.identifier, result_code=EchoResult.OK))
        else:
            self._send(EchoReply(identifier=msg.identifier, result_code=EchoResult.GENERAL_ERROR,
                                 error_code=GeneralError.NOT_CONNECTED))

    def _on_echo_reply(self, msg: EchoReply) -> None:
        """RFC 2637 §2.6 Echo-Reply: answers our keepalive if the identifier matches."""
        self.stats.echo_replies_received += 1
        if self._echo_outstanding is None:
            return  # late or unsolicited: harmless, counted only
        if msg.identifier != self._echo_outstanding:
            # Still proof that the peer is alive; some peers do not copy the identifier.
            self.stats.echo_mismatched += 1
        self._echo_outstanding = None
        self._echo_deadline = None

    def _refuse(self, request: OutgoingCallRequest | IncomingCallRequest, result: int, error: int,
                reason: str) -> None:
        self.stats.calls_refused += 1
        if isinstance(request, OutgoingCallRequest):
            self._send(OutgoingCallReply(call_id=0, peer_call_id=request.call_id, result_code=result,
                                         error_code=error))
            direction = CallDirection.OUTGOING
        else:
            self._send(IncomingCallReply(call_id=0, peer_call_id=request.call_id, result_code=result,
                                         error_code=error))
            direction = CallDirection.INCOMING
        self._push(CallRejected(peer_call_id=request.call_id, direction=direction, result_code=result,
                                error_code=error, reason=reason))

    def _admit(self, request: OutgoingCallRequest | IncomingCallRequest, general_error: int) -> int | None:
        """Our call ID for a peer's call request, or None after refusing it."""
        if self._find_by_peer_id(request.call_id) is not None:
            self._refuse(request, general_error, GeneralError.BAD_CALL_ID,
                         f"peer call ID {request.call_id} is already in use on this connection")
            return None
        if len(self._calls) >= self.config.max_calls:
            self._refuse(request, general_error, GeneralError.NO_RESOURCE,
                         f"max_calls ({self.config.max_calls}) reached")
            return None
        try:
            return self._call_ids.allocate()
        except CallIdExhausted as exc:
            self._refuse(request, general_error, GeneralError.NO_RESOURCE, str(exc))
            return None

    def _on_outgoing_call_request(self, msg: OutgoingCallRequest, now: float) -> None:
        """RFC 2637 §2.7 Outgoing-Call-Request: a server reports it as
        :class:`CallRequested` (the owner accepts or rejects); a client refuses it."""
        if self.role is not Role.SERVER:
            self._send(OutgoingCallReply(call_id=0, peer_call_id=msg.call_id,
                                         result_code=OutgoingCallResult.GENERAL_ERROR,
                                         error_code=GeneralError.BAD_VALUE))
            self._violation("Outgoing-Call-Request sent to the PNS; answered General-Error/Bad-Value",
                            code=GeneralError.BAD_VALUE, message_type=msg.TYPE)
            return
        call_id = self._admit(msg, OutgoingCallResult.GENERAL_ERROR)
        if call_id is None:
            return
        self._calls[call_id] = _Call(
            call_id=call_id,
            direction=CallDirection.OUTGOING,
            state=CallState.WAIT_ANSWER,
            serial_number=msg.call_serial_number,
            our_window=self.config.window,
            our_processing_delay=self.config.processing_delay,
            peer_call_id=msg.call_id,
            peer_window=msg.packet_receive_window,
            peer_processing_delay=msg.packet_processing_delay,
            phone_number=msg.phone_number,
            deadline=now + self.config.call_reply_timeout,
        )
        self._push(CallRequested(
            call_id=call_id,
            peer_call_id=msg.call_id,
            serial_number=msg.call_serial_number,
            minimum_bps=msg.minimum_bps,
            maximum_bps=msg.maximum_bps,
            bearer_type=int(msg.bearer_type),
            framing_type=int(msg.framing_type),
            peer_window=msg.packet_receive_window,
            peer_processing_delay=msg.packet_processing_delay,
            phone_number=msg.phone_number,
            subaddress=msg.subaddress,
        ))

    def _on_outgoing_call_reply(self, msg: OutgoingCallReply) -> None:
        """RFC 2637 §2.8 Outgoing-Call-Reply: the client's call is established, or it
        failed with the peer's result and error codes."""
        call = self._calls.get(msg.peer_call_id) if self.role is Role.CLIENT else None
        if call is None or call.direction is not CallDirection.OUTGOING:
            self._violation(f"Outgoing-Call-Reply for unknown call {msg.peer_call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        if call.state is CallState.WAIT_DISCONNECT:
            # We aborted while it was being set up; learning its ID lets the coming
            # Call-Disconnect-Notify match.
            if call.peer_call_id is None and msg.result_code == OutgoingCallResult.CONNECTED:
                call.peer_call_id = msg.call_id
            return
        if call.state is not CallState.WAIT_REPLY:
            self._violation(f"duplicate Outgoing-Call-Reply for call {call.call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        if msg.result_code != OutgoingCallResult.CONNECTED:
            self._forget(call)
            self._push(CallFailed(
                call_id=call.call_id,
                result_code=int(msg.result_code),
                error_code=int(msg.error_code),
                cause_code=msg.cause_code,
                reason=f"peer refused the call: result {enum_name(msg.result_code)}, "
                       f"error {enum_name(msg.error_code)}, cause {msg.cause_code}",
            ))
            return
        call.peer_call_id = msg.call_id
        call.peer_window = msg.packet_receive_window
        call.peer_processing_delay = msg.packet_processing_delay
        call.connect_speed = msg.connect_speed
        call.state = CallState.ESTABLISHED
        call.deadline = None
        self._push(CallEstablished(call=call.info()))

    def _on_incoming_call_request(self, msg: IncomingCallRequest, now: float) -> None:
        """RFC 2637 §2.9 Incoming-Call-Request: answered with an Incoming-Call-Reply,
        accepted only when ``accept_incoming_calls`` is set."""
        if self.role is not Role.CLIENT:
            self._send(IncomingCallReply(call_id=0, peer_call_id=msg.call_id,
                                         result_code=IncomingCallResult.GENERAL_ERROR,
                                         error_code=GeneralError.BAD_VALUE))
            self._violation("Incoming-Call-Request sent to the PAC; answered General-Error/Bad-Value",
                            code=GeneralError.BAD_VALUE, message_type=msg.TYPE)
            return
        if not self.config.accept_incoming_calls:
            self._refuse(msg, IncomingCallResult.DO_NOT_ACCEPT, GeneralError.NONE,
                         "incoming calls are not accepted (accept_incoming_calls is off)")
            return
        call_id = self._admit(msg, IncomingCallResult.GENERAL_ERROR)
        if call_id is None:
            return
        cfg = self.config
        self._calls[call_id] = _Call(
            call_id=call_id,
            direction=CallDirection.INCOMING,
            state=CallState.WAIT_CONNECT,
            serial_number=msg.call_serial_number,
            our_window=cfg.window,
            our_processing_delay=cfg.processing_delay,
            peer_call_id=msg.call_id,
            phone_number=msg.dialing_number,
            deadline=now + cfg.call_reply_timeout,
        )
        self._send(IncomingCallReply(call_id=call_id, peer_call_id=msg.call_id,
                                     result_code=IncomingCallResult.CONNECT,
                                     packet_receive_window=cfg.window,
                                     packet_transmit_delay=cfg.processing_delay))

    def _on_incoming_call_reply(self, msg: IncomingCallReply) -> None:
        """RFC 2637 §2.10 Incoming-Call-Reply: we never send an Incoming-Call-Request,
        so any reply is out of place and ignored."""
        self._violation(f"unexpected Incoming-Call-Reply for call {msg.peer_call_id}: "
                        "we never send Incoming-Call-Request; ignored",
                        code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)

    def _on_incoming_call_connected(self, msg: IncomingCallConnected) -> None:
        """RFC 2637 §2.11 Incoming-Call-Connected: completes an incoming call we
        accepted."""
        call = self._calls.get(msg.peer_call_id) if self.role is Role.CLIENT else None
        if call is None or call.state is not CallState.WAIT_CONNECT:
            self._violation(f"Incoming-Call-Connected for unknown call {msg.peer_call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        call.connect_speed = msg.connect_speed
        call.peer_window = msg.packet_receive_window
        call.peer_processing_delay = msg.packet_transmit_delay
        call.state = CallState.ESTABLISHED
        call.deadline = None
        self._push(CallEstablished(call=call.info()))

    def _on_call_clear_request(self, msg: CallClearRequest) -> None:
        """RFC 2637 §2.12 Call-Clear-Request: answered with a Call-Disconnect-Notify; the
        call ends.  One for a call we have just disconnected ourselves crossed our notify on the
        wire and is not a violation."""
        call = self._find_by_peer_id(msg.call_id)
        if call is None:
            if self._ended is not None and msg.call_id in self._ended:
                self.stats.crossed_clears += 1
                return
            self._violation(f"Call-Clear-Request for unknown call {msg.call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        self._send(CallDisconnectNotify(call_id=call.call_id, result_code=DisconnectResult.REQUEST))
        self._forget(call)
        if call.state in (CallState.ESTABLISHED, CallState.WAIT_DISCONNECT):
            self._push(CallCleared(call_id=call.call_id, peer_call_id=call.peer_call_id,
                                   initiated_by=Initiator.REMOTE, result_code=None, error_code=None,
                                   cause_code=None, call_statistics="",
                                   reason="peer sent Call-Clear-Request"))
        else:
            self._push(CallFailed(call_id=call.call_id, result_code=None, error_code=None, cause_code=None,
                                  reason="peer cleared the call before it was established"))

    def _on_call_disconnect_notify(self, msg: CallDisconnectNotify) -> None:
        """RFC 2637 §2.13 Call-Disconnect-Notify: the peer ended the call (or
        confirms the clear we asked for)."""
        call = self._find_by_peer_id(msg.call_id)
        if call is None:
            self._violation(f"Call-Disconnect-Notify for unknown call {msg.call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        self._forget(call)
        detail = (f"result {enum_name(msg.result_code)}, error {enum_name(msg.error_code)}, "
                  f"cause {msg.cause_code}")
        if call.state in (CallState.ESTABLISHED, CallState.WAIT_DISCONNECT):
            ours = call.state is CallState.WAIT_DISCONNECT
            self._push(CallCleared(
                call_id=call.call_id,
                peer_call_id=call.peer_call_id,
                initiated_by=Initiator.LOCAL if ours else Initiator.REMOTE,
                result_code=int(msg.result_code),
                error_code=int(msg.error_code),
                cause_code=msg.cause_code,
                call_statistics=msg.call_statistics,
                reason=f"{'cleared as requested' if ours else 'peer disconnected the call'}: {detail}",
            ))
        else:
            self._push(CallFailed(call_id=call.call_id, result_code=int(msg.result_code),
                                  error_code=int(msg.error_code), cause_code=msg.cause_code,
                                  reason=f"peer disconnected the call before it was established: {detail}"))

    def _on_wan_error(self, msg: WanErrorNotify) -> None:
        """RFC 2637 §2.14 WAN-Error-Notify: reported as :class:`WanErrorReceived`."""
        if msg.peer_call_id not in self._calls:
            self._violation(f"WAN-Error-Notify for unknown call {msg.peer_call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        self._push(WanErrorReceived(
            call_id=msg.peer_call_id,
            crc_errors=msg.crc_errors,
            framing_errors=msg.framing_errors,
            hardware_overruns=msg.hardware_overruns,
            buffer_overruns=msg.buffer_overruns,
            timeout_errors=msg.timeout_errors,
            alignment_errors=msg.alignment_errors,
        ))

    def _on_set_link_info(self, msg: SetLinkInfo) -> None:
        """RFC 2637 §2.15 Set-Link-Info: the ACCMs, reported as :class:`LinkInfoReceived`."""
        if msg.peer_call_id not in self._calls:
            self._violation(f"Set-Link-Info for unknown call {msg.peer_call_id}; ignored",
                            code=GeneralError.BAD_CALL_ID, message_type=msg.TYPE)
            return
        self._push(LinkInfoReceived(call_id=msg.peer_call_id, send_accm=msg.send_accm,
                                    receive_accm=msg.receive_accm))
