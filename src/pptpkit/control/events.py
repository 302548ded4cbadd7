"""What the control engine reports: events, call snapshots, states and counters.

Events are frozen keyword-only dataclasses drained with
:meth:`~pptpkit.control.connection.ControlConnection.next_event`, in order;
:class:`ConnectionClosed` is always the last.  The state enums name RFC 2637 section 3.1's
control-connection and call states as the engine keeps them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CallCleared",
    "CallDirection",
    "CallEstablished",
    "CallFailed",
    "CallInfo",
    "CallRejected",
    "CallRequested",
    "CallState",
    "CloseCause",
    "ConnectionClosed",
    "ConnectionEstablished",
    "ConnectionState",
    "ControlEvent",
    "ControlStats",
    "Initiator",
    "LinkInfoReceived",
    "PeerInfo",
    "ProtocolViolation",
    "WanErrorReceived",
]


class ConnectionState(enum.Enum):
    WAIT_START_REQUEST = "wait_start_request"
    WAIT_START_REPLY = "wait_start_reply"
    ESTABLISHED = "established"
    WAIT_STOP_REPLY = "wait_stop_reply"
    CLOSED = "closed"


class CallState(enum.Enum):
    WAIT_REPLY = "wait_reply"
    """PNS: Outgoing-Call-Request sent, waiting for the Outgoing-Call-Reply."""
    WAIT_ANSWER = "wait_answer"
    """PAC: Outgoing-Call-Request received, waiting for the owner's accept/reject."""
    WAIT_CONNECT = "wait_connect"
    """PNS: Incoming-Call-Reply (accept) sent, waiting for Incoming-Call-Connected."""
    ESTABLISHED = "established"
    WAIT_DISCONNECT = "wait_disconnect"
    """PNS: Call-Clear-Request sent, waiting for Call-Disconnect-Notify."""


class CallDirection(enum.Enum):
    OUTGOING = "outgoing"
    """Set up with Outgoing-Call-Request (every PPTP VPN call)."""
    INCOMING = "incoming"
    """Set up with Incoming-Call-Request from the PAC."""


class Initiator(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"


class CloseCause(enum.Enum):
    STOPPED_BY_PEER = "stopped_by_peer"
    STOPPED_LOCALLY = "stopped_locally"
    STOP_REPLY_TIMEOUT = "stop_reply_timeout"
    START_TIMEOUT = "start_timeout"
    """Server: no Start-Control-Connection-Request within ``start_timeout``."""
    START_REPLY_TIMEOUT = "start_reply_timeout"
    """Client: no Start-Control-Connection-Reply within ``start_reply_timeout``."""
    START_REJECTED = "start_rejected"
    VERSION_MISMATCH = "version_mismatch"
    ECHO_TIMEOUT = "echo_timeout"
    CONNECTION_LOST = "connection_lost"
    PROTOCOL_ERROR = "protocol_error"
    LOSS_OF_SYNC = "loss_of_sync"
    """The byte stream no longer parses (bad Length or magic): closed at once, RFC 2637 1.4."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerInfo:
    """What the peer announced in its Start-Control-Connection-Request/-Reply."""

    protocol_version: int
    framing_capabilities: int
    bearer_capabilities: int
    max_channels: int
    firmware_revision: int
    host_name: str
    vendor: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CallInfo:
    """A snapshot of one call.  ``peer_*`` fields are None until the peer has told us."""

    call_id: int
    peer_call_id: int | None
    direction: CallDirection
    state: CallState
    serial_number: int
    our_window: int
    our_processing_delay: int
    peer_window: int | None
    peer_processing_delay: int | None
    connect_speed: int | None
    phone_number: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionEstablished:
    peer: PeerInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionClosed:
    """Always the last event.  ``code`` is the wire code involved (stop reason, start result or
    general error) where there is one; ``clean`` is False when calls or the connection were cut
    short by a failure rather than an orderly shutdown."""

    cause: CloseCause
    reason: str
    code: int | None
    initiated_by: Initiator
    clean: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class CallRequested:
    """Server: the peer asks for a call; answer with accept_call/reject_call(call_id)."""

    call_id: int
    peer_call_id: int
    serial_number: int
    minimum_bps: int
    maximum_bps: int
    bearer_type: int
    framing_type: int
    peer_window: int
    peer_processing_delay: int
    phone_number: str
    subaddress: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CallEstablished:
    call: CallInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class CallFailed:
    """A call ended before it was established.  Result/error/cause codes are the peer's (from
    the Outgoing-Call-Reply or Call-Disconnect-Notify) or None when the failure was local."""

    call_id: int
    result_code: int | None
    error_code: int | None
    cause_code: int | None
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CallRejected:
    """We refused a call request from the peer (max_calls, no free ID, incoming calls off ...)."""

    peer_call_id: int
    direction: CallDirection
    result_code: int
    error_code: int
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CallCleared:
    """An established call ended; codes are from the Call-Disconnect-Notify when there was one."""

    call_id: int
    peer_call_id: int | None
    initiated_by: Initiator
    result_code: int | None
    error_code: int | None
    cause_code: int | None
    call_statistics: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkInfoReceived:
    call_id: int
    send_accm: int
    receive_accm: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WanErrorReceived:
    call_id: int
    crc_errors: int
    framing_errors: int
    hardware_overruns: int
    buffer_overruns: int
    timeout_errors: int
    alignment_errors: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ProtocolViolation:
    """The peer sent something malformed or out of place; ``code`` is the General Error Code that
    describes it where one fits.  What we answered is in ``reason``."""

    reason: str
    code: int | None
    message_type: int | None


ControlEvent = (
    ConnectionEstablished
    | ConnectionClosed
    | CallRequested
    | CallEstablished
    | CallFailed
    | CallRejected
    | CallCleared
    | LinkInfoReceived
    | WanErrorReceived
    | ProtocolViolation
)


@dataclass(slots=True)
class ControlStats:
    """Counters; every one is bounded only by the connection's lifetime (plain ints)."""

    messages_received: int = 0
    messages_sent: int = 0
    malformed: int = 0
    protocol_errors: int = 0
    unknown_messages: int = 0
    echo_requests_sent: int = 0
    echo_replies_received: int = 0
    echo_requests_received: int = 0
    echo_mismatched: int = 0
    calls_refused: int = 0
    events_dropped: int = 0
    bytes_ignored: int = 0
    crossed_clears: int = 0
    rate_limited: int = 0
