"""RFC 2637 control-connection messages (section 2) and a TCP stream framer.

Every message starts with the same 12-byte header::

    Length (16) | PPTP Message Type (16) = 1 | Magic Cookie (32) = 0x1A2B3C4D
    Control Message Type (16) | Reserved0 (16)

and has one fixed total size per control message type; a message whose Length field differs
from its type's size is malformed.  Reserved fields are written as zero and ignored on input, so a
peer that puts junk there still interoperates (nothing in them carries meaning).

Variable-length numbers (phone numbers and their "length" fields) are derived: the length field
is written as the byte length of the string and ignored on decode, where the NUL-terminated text
is authoritative (peers disagree on whether the length counts anything at all).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from pptpkit.enums import open_enum
from pptpkit.errors import DecodeError
from pptpkit.wire import Reader, Writer, decode_fixed_string

__all__ = [
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "MAX_MESSAGE_SIZE",
    "MESSAGE_TYPES",
    "PPTP_PORT",
    "PROTOCOL_VERSION",
    "BearerCapability",
    "BearerType",
    "CallClearRequest",
    "CallDisconnectNotify",
    "ControlMessage",
    "ControlMessageType",
    "ControlStreamFramer",
    "DisconnectResult",
    "EchoReply",
    "EchoRequest",
    "EchoResult",
    "FramingCapability",
    "FramingType",
    "GeneralError",
    "IncomingCallConnected",
    "IncomingCallReply",
    "IncomingCallRequest",
    "IncomingCallResult",
    "OutgoingCallReply",
    "OutgoingCallRequest",
    "OutgoingCallResult",
    "PptpMessageType",
    "RawControlMessage",
    "SetLinkInfo",
    "StartControlConnectionReply",
    "StartControlConnectionRequest",
    "StartResult",
    "StopControlConnectionReply",
    "StopControlConnectionRequest",
    "StopReason",
    "StopResult",
    "WanErrorNotify",
    "decode_message",
]

PPTP_PORT: Final = 1723
MAGIC_COOKIE: Final = 0x1A2B3C4D
#: Version 1, revision 0: the only version ever published.
PROTOCOL_VERSION: Final = 0x0100
HEADER_SIZE: Final = 12

_HEADER: Final = struct.Struct("!HHIHH")
_HOST_NAME_SIZE: Final = 64
_VENDOR_SIZE: Final = 64
_PHONE_SIZE: Final = 64
_SUBADDRESS_SIZE: Final = 64
_STATISTICS_SIZE: Final = 128


# --- codes ---------------------------------------------------------------------------------------


class PptpMessageType(enum.IntEnum):
    CONTROL = 1
    #: Reserved by RFC 2637 but never defined; we reject it.
    MANAGEMENT = 2


class ControlMessageType(enum.IntEnum):
    START_CONTROL_CONNECTION_REQUEST = 1
    START_CONTROL_CONNECTION_REPLY = 2
    STOP_CONTROL_CONNECTION_REQUEST = 3
    STOP_CONTROL_CONNECTION_REPLY = 4
    ECHO_REQUEST = 5
    ECHO_REPLY = 6
    OUTGOING_CALL_REQUEST = 7
    OUTGOING_CALL_REPLY = 8
    INCOMING_CALL_REQUEST = 9
    INCOMING_CALL_REPLY = 10
    INCOMING_CALL_CONNECTED = 11
    CALL_CLEAR_REQUEST = 12
    CALL_DISCONNECT_NOTIFY = 13
    WAN_ERROR_NOTIFY = 14
    SET_LINK_INFO = 15


class GeneralError(enum.IntEnum):
    """RFC 2637 section 2.16, carried in the Error Code field of replies."""

    NONE = 0
    NOT_CONNECTED = 1
    BAD_FORMAT = 2
    BAD_VALUE = 3
    NO_RESOURCE = 4
    BAD_CALL_ID = 5
    PAC_ERROR = 6


class StartResult(enum.IntEnum):
    """Start-Control-Connection-Reply result codes."""

    SUCCESS = 1
    GENERAL_ERROR = 2
    ALREADY_EXISTS = 3
    NOT_AUTHORIZED = 4
    BAD_VERSION = 5


class StopReason(enum.IntEnum):
    """Stop-Control-Connection-Request reasons."""

    NONE = 1
    STOP_PROTOCOL = 2
    LOCAL_SHUTDOWN = 3


class StopResult(enum.IntEnum):
    OK = 1
    GENERAL_ERROR = 2


class EchoResult(enum.IntEnum):
    OK = 1
    GENERAL_ERROR = 2


class OutgoingCallResult(enum.IntEnum):
    CONNECTED = 1
    GENERAL_ERROR = 2
    NO_CARRIER = 3
    BUSY = 4
    NO_DIAL_TONE = 5
    TIMEOUT = 6
    DO_NOT_ACCEPT = 7


class IncomingCallResult(enum.IntEnum):
    CONNECT = 1
    GENERAL_ERROR = 2
    DO_NOT_ACCEPT = 3


class DisconnectResult(enum.IntEnum):
    """Call-Disconnect-Notify result codes."""

    LOST_CARRIER = 1
    GENERAL_ERROR = 2
    ADMIN_SHUTDOWN = 3
    REQUEST = 4


class FramingCapability(enum.IntFlag):
    """Framing Capabilities bits of the Start-Control-Connection messages.

    An IntFlag rather than an IntEnum because the field is a bit set; IntFlag keeps unknown bits
    (boundary KEEP), so the type is open like every other code here.
    """

    ASYNC = 1
    SYNC = 2


class BearerCapability(enum.IntFlag):
    """Bearer Capabilities bits of the Start-Control-Connection messages (open, see above)."""

    ANALOG = 1
    DIGITAL = 2


class BearerType(enum.IntEnum):
    """Bearer Type of Outgoing-/Incoming-Call-Request (a value, not a bit set)."""

    ANALOG = 1
    DIGITAL = 2
    ANY = 3


class FramingType(enum.IntEnum):
    """Framing Type of Outgoing-Call-Request and Incoming-Call-Connected."""

    ASYNC = 1
    SYNC = 2
    ANY = 3


# --- helpers -------------------------------------------------------------------------------------


def check_text(value: str, size: int, name: str) -> None:
    """Fixed-size string fields: latin-1, no NUL (it would end the string on the wire)."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be latin-1 text") from None
    if len(raw) > size:
        raise ValueError(f"{name} is {len(raw)} bytes, the field holds {size}")
    if b"\0" in raw:
        raise ValueError(f"{name} must not contain NUL")


def _text_len(value: str) -> int:
    return len(value.encode("latin-1"))


def _header(control_type: int, size: int) -> Writer:
    return Writer().pack(_HEADER, size, PptpMessageType.CONTROL, MAGIC_COOKIE, control_type, 0)


def _fixed(r: Reader, size: int) -> str:
    return decode_fixed_string(r.take(size))


# --- messages ------------------------------------------------------------------------------------


class ControlMessage:
    """Base of every control message.

    Subclasses are frozen keyword-only dataclasses with ``TYPE`` (the Control Message Type),
    ``SECTION`` (where RFC 2637 defines it) and ``SIZE`` (the exact total length including the
    header).
    """

    __slots__ = ()

    TYPE: ClassVar[int]
    SECTION: ClassVar[str] = ""
    SIZE: ClassVar[int]

    @property
    def control_type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        w = _header(self.control_type, self.SIZE)
        try:
            self._encode_body(w)
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: field out of range: {exc}") from None
        data = w.getvalue()
        if len(data) != self.SIZE:  # pragma: no cover - a layout bug, caught by the tests
            raise AssertionError(f"{type(self).__name__} encoded to {len(data)} bytes, not {self.SIZE}")
        return data

    def _encode_body(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode one complete message (header included) that must be of this class."""
        msg = decode_message(data)
        if not isinstance(msg, cls):
            raise DecodeError(
                f"expected {cls.__name__}, got control message type {msg.control_type}",
                code=GeneralError.BAD_VALUE,
            )
        return msg


_SCC = struct.Struct("!HHIIHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class StartControlConnectionRequest(ControlMessage):
    """RFC 2637 §2.1 Start-Control-Connection-Request.

    Opens the control connection; either side may send it, and it must come first.
    """

    TYPE: ClassVar[int] = ControlMessageType.START_CONTROL_CONNECTION_REQUEST
    SECTION: ClassVar[str] = "2.1"
    SIZE: ClassVar[int] = 156

    protocol_version: int = PROTOCOL_VERSION
    framing_capabilities: FramingCapability | int = FramingCapability.ASYNC | FramingCapability.SYNC
    bearer_capabilities: BearerCapability | int = BearerCapability.ANALOG | BearerCapability.DIGITAL
    max_channels: int = 0
    firmware_revision: int = 0
    host_name: str = ""
    vendor: str = ""

    def __post_init__(self) -> None:
        check_text(self.host_name, _HOST_NAME_SIZE, "host_name")
        check_text(self.vendor, _VENDOR_SIZE, "vendor")

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _SCC,
            self.protocol_version,
            0,
            self.framing_capabilities,
            self.bearer_capabilities,
            self.max_channels,
            self.firmware_revision,
        )
        w.fixed_string(self.host_name, _HOST_NAME_SIZE).fixed_string(self.vendor, _VENDOR_SIZE)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        version, _res1, framing, bearer, channels, firmware = (int(v) for v in r.unpack(_SCC))
        return cls(
            protocol_version=version,
            framing_capabilities=FramingCapability(framing),
            bearer_capabilities=BearerCapability(bearer),
            max_channels=channels,
            firmware_revision=firmware,
            host_name=_fixed(r, _HOST_NAME_SIZE),
            vendor=_fixed(r, _VENDOR_SIZE),
        )


_SCCRP = struct.Struct("!HBBIIHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class StartControlConnectionReply(ControlMessage):
    """RFC 2637 §2.2 Start-Control-Connection-Reply.

    Answers a Start-Control-Connection-Request with a result code.
    """

    TYPE: ClassVar[int] = ControlMessageType.START_CONTROL_CONNECTION_REPLY
    SECTION: ClassVar[str] = "2.2"
    SIZE: ClassVar[int] = 156

    protocol_version: int = PROTOCOL_VERSION
    result_code: StartResult | int = StartResult.SUCCESS
    error_code: GeneralError | int = GeneralError.NONE
    framing_capabilities: FramingCapability | int = FramingCapability.ASYNC | FramingCapability.SYNC
    bearer_capabilities: BearerCapability | int = BearerCapability.ANALOG | BearerCapability.DIGITAL
    max_channels: int = 0
    firmware_revision: int = 0
    host_name: str = ""
    vendor: str = ""

    def __post_init__(self) -> None:
        check_text(self.host_name, _HOST_NAME_SIZE, "host_name")
        check_text(self.vendor, _VENDOR_SIZE, "vendor")

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _SCCRP,
            self.protocol_version,
            self.result_code,
            self.error_code,
            self.framing_capabilities,
            self.bearer_capabilities,
            self.max_channels,
            self.firmware_revision,
        )
        w.fixed_string(self.host_name, _HOST_NAME_SIZE).fixed_string(self.vendor, _VENDOR_SIZE)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        version, result, error, framing, bearer, channels, firmware = (int(v) for v in r.unpack(_SCCRP))
        return cls(
            protocol_version=version,
            result_code=open_enum(StartResult, result),
            error_code=open_enum(GeneralError, error),
            framing_capabilities=FramingCapability(framing),
            bearer_capabilities=BearerCapability(bearer),
            max_channels=channels,
            firmware_revision=firmware,
            host_name=_fixed(r, _HOST_NAME_SIZE),
            vendor=_fixed(r, _VENDOR_SIZE),
        )


_STOP_RQ = struct.Struct("!BBH")


@dataclass(frozen=True, kw_only=True, slots=True)
class StopControlConnectionRequest(ControlMessage):
    """RFC 2637 §2.3 Stop-Control-Connection-Request.

    Either peer closes the control connection, which clears every call on it.
    """

    TYPE: ClassVar[int] = ControlMessageType.STOP_CONTROL_CONNECTION_REQUEST
    SECTION: ClassVar[str] = "2.3"
    SIZE: ClassVar[int] = 16

    reason: StopReason | int = StopReason.NONE

    def _encode_body(self, w: Writer) -> None:
        w.pack(_STOP_RQ, self.reason, 0, 0)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        reason = int(r.unpack(_STOP_RQ)[0])
        return cls(reason=open_enum(StopReason, reason))


_RESULT_ERROR = struct.Struct("!BBH")


@dataclass(frozen=True, kw_only=True, slots=True)
class StopControlConnectionReply(ControlMessage):
    """RFC 2637 §2.4 Stop-Control-Connection-Reply.

    Answers a Stop-Control-Connection-Request.
    """

    TYPE: ClassVar[int] = ControlMessageType.STOP_CONTROL_CONNECTION_REPLY
    SECTION: ClassVar[str] = "2.4"
    SIZE: ClassVar[int] = 16

    result_code: StopResult | int = StopResult.OK
    error_code: GeneralError | int = GeneralError.NONE

    def _encode_body(self, w: Writer) -> None:
        w.pack(_RESULT_ERROR, self.result_code, self.error_code, 0)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        result, error, _res = (int(v) for v in r.unpack(_RESULT_ERROR))
        return cls(result_code=open_enum(StopResult, result), error_code=open_enum(GeneralError, error))


@dataclass(frozen=True, kw_only=True, slots=True)
class EchoRequest(ControlMessage):
    """RFC 2637 §2.5 Echo-Request.

    The control connection's keepalive, sent by either peer.
    """

    TYPE: ClassVar[int] = ControlMessageType.ECHO_REQUEST
    SECTION: ClassVar[str] = "2.5"
    SIZE: ClassVar[int] = 16

    identifier: int

    def _encode_body(self, w: Writer) -> None:
        w.u32(self.identifier)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        return cls(identifier=r.u32())


_ECHO_RP = struct.Struct("!IBBH")


@dataclass(frozen=True, kw_only=True, slots=True)
class EchoReply(ControlMessage):
    """RFC 2637 §2.6 Echo-Reply.

    Answers an Echo-Request with its identifier.
    """

    TYPE: ClassVar[int] = ControlMessageType.ECHO_REPLY
    SECTION: ClassVar[str] = "2.6"
    SIZE: ClassVar[int] = 20

    identifier: int
    result_code: EchoResult | int = EchoResult.OK
    error_code: GeneralError | int = GeneralError.NONE

    def _encode_body(self, w: Writer) -> None:
        w.pack(_ECHO_RP, self.identifier, self.result_code, self.error_code, 0)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        ident, result, error, _res = (int(v) for v in r.unpack(_ECHO_RP))
        return cls(
            identifier=ident,
            result_code=open_enum(EchoResult, result),
            error_code=open_enum(GeneralError, error),
        )


_OCRQ = struct.Struct("!HHIIIIHHHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingCallRequest(ControlMessage):
    """RFC 2637 §2.7 Outgoing-Call-Request.

    Sent by the PNS (a PPTP client) to have the PAC set up a call.
    """

    TYPE: ClassVar[int] = ControlMessageType.OUTGOING_CALL_REQUEST
    SECTION: ClassVar[str] = "2.7"
    SIZE: ClassVar[int] = 168

    call_id: int
    call_serial_number: int = 0
    minimum_bps: int = 0
    maximum_bps: int = 0
    bearer_type: BearerType | int = BearerType.ANY
    framing_type: FramingType | int = FramingType.ANY
    packet_receive_window: int = 0
    packet_processing_delay: int = 0
    phone_number: str = ""
    subaddress: str = ""

    def __post_init__(self) -> None:
        check_text(self.phone_number, _PHONE_SIZE, "phone_number")
        check_text(self.subaddress, _SUBADDRESS_SIZE, "subaddress")

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _OCRQ,
            self.call_id,
            self.call_serial_number,
            self.minimum_bps,
            self.maximum_bps,
            self.bearer_type,
            self.framing_type,
            self.packet_receive_window,
            self.packet_processing_delay,
            _text_len(self.phone_number),
            0,
        )
        w.fixed_string(self.phone_number, _PHONE_SIZE).fixed_string(self.subaddress, _SUBADDRESS_SIZE)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        call_id, serial, min_bps, max_bps, bearer, framing, window, delay, _plen, _res = (
            int(v) for v in r.unpack(_OCRQ)
        )
        return cls(
            call_id=call_id,
            call_serial_number=serial,
            minimum_bps=min_bps,
            maximum_bps=max_bps,
            bearer_type=open_enum(BearerType, bearer),
            framing_type=open_enum(FramingType, framing),
            packet_receive_window=window,
            packet_processing_delay=delay,
            phone_number=_fixed(r, _PHONE_SIZE),
            subaddress=_fixed(r, _SUBADDRESS_SIZE),
        )


_OCRP = struct.Struct("!HHBBHIHHI")


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingCallReply(ControlMessage):
    """RFC 2637 §2.8 Outgoing-Call-Reply.

    Sent by the PAC: the result of an Outgoing-Call-Request and its side of the call.
    """

    TYPE: ClassVar[int] = ControlMessageType.OUTGOING_CALL_REPLY
    SECTION: ClassVar[str] = "2.8"
    SIZE: ClassVar[int] = 32

    call_id: int
    peer_call_id: int
    result_code: OutgoingCallResult | int = OutgoingCallResult.CONNECTED
    error_code: GeneralError | int = GeneralError.NONE
    cause_code: int = 0
    connect_speed: int = 0
    packet_receive_window: int = 0
    packet_processing_delay: int = 0
    physical_channel_id: int = 0

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _OCRP,
            self.call_id,
            self.peer_call_id,
            self.result_code,
            self.error_code,
            self.cause_code,
            self.connect_speed,
            self.packet_receive_window,
            self.packet_processing_delay,
            self.physical_channel_id,
        )

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        call_id, peer, result, error, cause, speed, window, delay, channel = (int(v) for v in r.unpack(_OCRP))
        return cls(
            call_id=call_id,
            peer_call_id=peer,
            result_code=open_enum(OutgoingCallResult, result),
            error_code=open_enum(GeneralError, error),
            cause_code=cause,
            connect_speed=speed,
            packet_receive_window=window,
            packet_processing_delay=delay,
            physical_channel_id=channel,
        )


_ICRQ = struct.Struct("!HHIIHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class IncomingCallRequest(ControlMessage):
    """RFC 2637 §2.9 Incoming-Call-Request.

    Sent by the PAC for an inbound call; first of the incoming-call three-way handshake.
    """

    TYPE: ClassVar[int] = ControlMessageType.INCOMING_CALL_REQUEST
    SECTION: ClassVar[str] = "2.9"
    SIZE: ClassVar[int] = 220

    call_id: int
    call_serial_number: int = 0
    bearer_type: BearerType | int = BearerType.ANALOG
    physical_channel_id: int = 0
    dialed_number: str = ""
    dialing_number: str = ""
    subaddress: str = ""

    def __post_init__(self) -> None:
        check_text(self.dialed_number, _PHONE_SIZE, "dialed_number")
        check_text(self.dialing_number, _PHONE_SIZE, "dialing_number")
        check_text(self.subaddress, _SUBADDRESS_SIZE, "subaddress")

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _ICRQ,
            self.call_id,
            self.call_serial_number,
            self.bearer_type,
            self.physical_channel_id,
            _text_len(self.dialed_number),
            _text_len(self.dialing_number),
        )
        w.fixed_string(self.dialed_number, _PHONE_SIZE)
        w.fixed_string(self.dialing_number, _PHONE_SIZE)
        w.fixed_string(self.subaddress, _SUBADDRESS_SIZE)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        call_id, serial, bearer, channel, _dlen, _glen = (int(v) for v in r.unpack(_ICRQ))
        return cls(
            call_id=call_id,
            call_serial_number=serial,
            bearer_type=open_enum(BearerType, bearer),
            physical_channel_id=channel,
            dialed_number=_fixed(r, _PHONE_SIZE),
            dialing_number=_fixed(r, _PHONE_SIZE),
            subaddress=_fixed(r, _SUBADDRESS_SIZE),
        )


_ICRP = struct.Struct("!HHBBHHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class IncomingCallReply(ControlMessage):
    """RFC 2637 §2.10 Incoming-Call-Reply.

    Sent by the PNS: its answer to an Incoming-Call-Request.
    """

    TYPE: ClassVar[int] = ControlMessageType.INCOMING_CALL_REPLY
    SECTION: ClassVar[str] = "2.10"
    SIZE: ClassVar[int] = 24

    call_id: int
    peer_call_id: int
    result_code: IncomingCallResult | int = IncomingCallResult.CONNECT
    error_code: GeneralError | int = GeneralError.NONE
    packet_receive_window: int = 0
    packet_transmit_delay: int = 0

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _ICRP,
            self.call_id,
            self.peer_call_id,
            self.result_code,
            self.error_code,
            self.packet_receive_window,
            self.packet_transmit_delay,
            0,
        )

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        call_id, peer, result, error, window, delay, _res = (int(v) for v in r.unpack(_ICRP))
        return cls(
            call_id=call_id,
            peer_call_id=peer,
            result_code=open_enum(IncomingCallResult, result),
            error_code=open_enum(GeneralError, error),
            packet_receive_window=window,
            packet_transmit_delay=delay,
        )


_ICCN = struct.Struct("!HHIHHI")


@dataclass(frozen=True, kw_only=True, slots=True)
class IncomingCallConnected(ControlMessage):
    """RFC 2637 §2.11 Incoming-Call-Connected.

    Sent by the PAC to complete an incoming call the PNS accepted.
    """

    TYPE: ClassVar[int] = ControlMessageType.INCOMING_CALL_CONNECTED
    SECTION: ClassVar[str] = "2.11"
    SIZE: ClassVar[int] = 28

    peer_call_id: int
    connect_speed: int = 0
    packet_receive_window: int = 0
    packet_transmit_delay: int = 0
    framing_type: FramingType | int = FramingType.ASYNC

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _ICCN,
            self.peer_call_id,
            0,
            self.connect_speed,
            self.packet_receive_window,
            self.packet_transmit_delay,
            self.framing_type,
        )

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        peer, _res, speed, window, delay, framing = (int(v) for v in r.unpack(_ICCN))
        return cls(
            peer_call_id=peer,
            connect_speed=speed,
            packet_receive_window=window,
            packet_transmit_delay=delay,
            framing_type=open_enum(FramingType, framing),
        )


_CALL_ID_RES = struct.Struct("!HH")


@dataclass(frozen=True, kw_only=True, slots=True)
class CallClearRequest(ControlMessage):
    """RFC 2637 §2.12 Call-Clear-Request.

    Sent by the PNS; ``call_id`` is the PNS's own ID for the call (the peer's may be unknown).
    """

    TYPE: ClassVar[int] = ControlMessageType.CALL_CLEAR_REQUEST
    SECTION: ClassVar[str] = "2.12"
    SIZE: ClassVar[int] = 16

    call_id: int

    def _encode_body(self, w: Writer) -> None:
        w.pack(_CALL_ID_RES, self.call_id, 0)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        return cls(call_id=int(r.unpack(_CALL_ID_RES)[0]))


_CDN = struct.Struct("!HBBHH")


@dataclass(frozen=True, kw_only=True, slots=True)
class CallDisconnectNotify(ControlMessage):
    """RFC 2637 §2.13 Call-Disconnect-Notify.

    Sent by the PAC; ``call_id`` is the PAC's own ID for the call.
    """

    TYPE: ClassVar[int] = ControlMessageType.CALL_DISCONNECT_NOTIFY
    SECTION: ClassVar[str] = "2.13"
    SIZE: ClassVar[int] = 148

    call_id: int
    result_code: DisconnectResult | int = DisconnectResult.REQUEST
    error_code: GeneralError | int = GeneralError.NONE
    cause_code: int = 0
    call_statistics: str = ""

    def __post_init__(self) -> None:
        check_text(self.call_statistics, _STATISTICS_SIZE, "call_statistics")

    def _encode_body(self, w: Writer) -> None:
        w.pack(_CDN, self.call_id, self.result_code, self.error_code, self.cause_code, 0)
        w.fixed_string(self.call_statistics, _STATISTICS_SIZE)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        call_id, result, error, cause, _res = (int(v) for v in r.unpack(_CDN))
        return cls(
            call_id=call_id,
            result_code=open_enum(DisconnectResult, result),
            error_code=open_enum(GeneralError, error),
            cause_code=cause,
            call_statistics=_fixed(r, _STATISTICS_SIZE),
        )


_WEN = struct.Struct("!HHIIIIII")


@dataclass(frozen=True, kw_only=True, slots=True)
class WanErrorNotify(ControlMessage):
    """RFC 2637 §2.14 WAN-Error-Notify.

    Sent by the PAC; ``peer_call_id`` is the receiver's (the PNS's) ID for the call.
    """

    TYPE: ClassVar[int] = ControlMessageType.WAN_ERROR_NOTIFY
    SECTION: ClassVar[str] = "2.14"
    SIZE: ClassVar[int] = 40

    peer_call_id: int
    crc_errors: int = 0
    framing_errors: int = 0
    hardware_overruns: int = 0
    buffer_overruns: int = 0
    timeout_errors: int = 0
    alignment_errors: int = 0

    def _encode_body(self, w: Writer) -> None:
        w.pack(
            _WEN,
            self.peer_call_id,
            0,
            self.crc_errors,
            self.framing_errors,
            self.hardware_overruns,
            self.buffer_overruns,
            self.timeout_errors,
            self.alignment_errors,
        )

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        peer, _res, crc, framing, hw, buf, timeout, align = (int(v) for v in r.unpack(_WEN))
        return cls(
            peer_call_id=peer,
            crc_errors=crc,
            framing_errors=framing,
            hardware_overruns=hw,
            buffer_overruns=buf,
            timeout_errors=timeout,
            alignment_errors=align,
        )


_SLI = struct.Struct("!HHII")


@dataclass(frozen=True, kw_only=True, slots=True)
class SetLinkInfo(ControlMessage):
    """RFC 2637 §2.15 Set-Link-Info.

    ``peer_call_id`` is the receiver's ID for the call; ACCMs default to 0xFFFFFFFF (RFC).
    """

    TYPE: ClassVar[int] = ControlMessageType.SET_LINK_INFO
    SECTION: ClassVar[str] = "2.15"
    SIZE: ClassVar[int] = 24

    peer_call_id: int
    send_accm: int = 0xFFFFFFFF
    receive_accm: int = 0xFFFFFFFF

    def _encode_body(self, w: Writer) -> None:
        w.pack(_SLI, self.peer_call_id, 0, self.send_accm, self.receive_accm)

    @classmethod
    def _decode_body(cls, r: Reader) -> Self:
        peer, _res, send, recv = (int(v) for v in r.unpack(_SLI))
        return cls(peer_call_id=peer, send_accm=send, receive_accm=recv)


#: ``{control message type: class}`` for every message RFC 2637 defines.
MESSAGE_TYPES: Final[dict[int, type[ControlMessage]]] = {
    cls.TYPE: cls
    for cls in (
        StartControlConnectionRequest,
        StartControlConnectionReply,
        StopControlConnectionRequest,
        StopControlConnectionReply,
        EchoRequest,
        EchoReply,
        OutgoingCallRequest,
        OutgoingCallReply,
        IncomingCallRequest,
        IncomingCallReply,
        IncomingCallConnected,
        CallClearRequest,
        CallDisconnectNotify,
        WanErrorNotify,
        SetLinkInfo,
    )
}

#: No legitimate message is longer; the framer refuses a Length field above this.
MAX_MESSAGE_SIZE: Final = max(cls.SIZE for cls in MESSAGE_TYPES.values())


@dataclass(frozen=True, kw_only=True, slots=True)
class RawControlMessage(ControlMessage):
    """A control message of a type we do not know; ``body`` is everything after Reserved0."""

    TYPE: ClassVar[int] = -1
    SIZE: ClassVar[int] = -1

    raw_type: int
    body: bytes = b""

    @property
    def control_type(self) -> int:
        return self.raw_type

    def encode(self) -> bytes:
        size = HEADER_SIZE + len(self.body)
        if size > MAX_MESSAGE_SIZE:
            raise ValueError(f"raw control message of {size} bytes exceeds {MAX_MESSAGE_SIZE}")
        if self.raw_type in MESSAGE_TYPES:
            raise ValueError(f"control message type {self.raw_type} has a class of its own")
        try:
            return _header(self.raw_type, size).raw(self.body).getvalue()
        except struct.error as exc:
            raise ValueError(f"RawControlMessage: field out of range: {exc}") from None


def decode_message(data: bytes | bytearray | memoryview) -> ControlMessage:
    """Decode exactly one complete control message (header included).

    Raises :class:`DecodeError` with ``code`` set to the General Error Code that describes the
    fault: Bad-Format for length and magic problems, Bad-Value for a PPTP Message Type other than
    Control.
    """
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"control message of {len(data)} bytes is shorter than the header",
                          code=GeneralError.BAD_FORMAT)
    length, pptp_type, magic, control_type, _res0 = (int(v) for v in _HEADER.unpack_from(data))
    if length != len(data):
        raise DecodeError(f"Length field {length} but {len(data)} bytes given", code=GeneralError.BAD_FORMAT)
    if magic != MAGIC_COOKIE:
        raise DecodeError(f"bad magic cookie 0x{magic:08x}", code=GeneralError.BAD_FORMAT)
    if length > MAX_MESSAGE_SIZE:
        raise DecodeError(f"control message of {length} bytes exceeds {MAX_MESSAGE_SIZE}",
                          code=GeneralError.BAD_FORMAT)
    if pptp_type != PptpMessageType.CONTROL:
        raise DecodeError(f"unsupported PPTP message type {pptp_type}", code=GeneralError.BAD_VALUE)
    cls = MESSAGE_TYPES.get(control_type)
    if cls is None:
        return RawControlMessage(raw_type=control_type, body=data[HEADER_SIZE:])
    if length != cls.SIZE:
        raise DecodeError(
            f"{cls.__name__} must be {cls.SIZE} bytes, Length field says {length}",
            code=GeneralError.BAD_FORMAT,
        )
    r = Reader(data, HEADER_SIZE)
    msg = cls._decode_body(r)
    r.check_end()
    return msg


class ControlStreamFramer:
    """Splits the TCP byte stream into complete control messages.

    The header is checked as soon as it arrives (Length within [12, MAX_MESSAGE_SIZE], magic
    cookie), so a desynchronised stream is detected at once rather than after waiting for a bogus
    number of bytes; RFC 2637 section 1.4 says such a stream must be closed, never resynchronised,
    so after an error every further call raises again.

    Memory: at most ``max_buffer`` bytes are held; callers that drain :meth:`next_frame` after
    every :meth:`feed` keep less than ``MAX_MESSAGE_SIZE`` bytes between feeds.
    """

    __slots__ = ("_buf", "_error", "max_buffer")

    def __init__(self, *, max_buffer: int = 65536) -> None:
        if max_buffer < MAX_MESSAGE_SIZE:
            raise ValueError(f"max_buffer must be at least {MAX_MESSAGE_SIZE}")
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if len(self._buf) + len(data) > self.max_buffer:
            self._fail(DecodeError(f"receive buffer would exceed {self.max_buffer} bytes",
                                   code=GeneralError.BAD_FORMAT))
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next complete message's bytes, or None until more data arrives."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        if len(buf) < 2:
            return None
        length = (buf[0] << 8) | buf[1]
        if length < HEADER_SIZE or length > MAX_MESSAGE_SIZE:
            self._fail(
                DecodeError(f"impossible control message Length {length}", code=GeneralError.BAD_FORMAT)
            )
        if len(buf) >= 8:
            magic = int.from_bytes(buf[4:8], "big")
            if magic != MAGIC_COOKIE:
                self._fail(DecodeError(f"bad magic cookie 0x{magic:08x}", code=GeneralError.BAD_FORMAT))
        if len(buf) < length:
            return None
        frame = bytes(buf[:length])
        del buf[:length]
        return frame

    def _fail(self, error: DecodeError) -> None:
        self._error = error
        self._buf.clear()
        raise error
