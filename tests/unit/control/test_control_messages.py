"""RFC 2637 control messages: exact layouts, round trips, decode errors, the stream framer."""

from __future__ import annotations

import contextlib
import struct

import pytest
from control_harness import any_message, message_strategy, raw_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pptpkit.control.messages import (
    MAGIC_COOKIE,
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPES,
    BearerCapability,
    CallClearRequest,
    CallDisconnectNotify,
    ControlMessage,
    ControlStreamFramer,
    DisconnectResult,
    EchoReply,
    EchoRequest,
    FramingCapability,
    GeneralError,
    IncomingCallRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    OutgoingCallResult,
    RawControlMessage,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
    StartResult,
    StopControlConnectionRequest,
    StopReason,
    decode_message,
)
from pptpkit.errors import DecodeError, PptpkitError

MAGIC = bytes.fromhex("1a2b3c4d")


def header(length: int, control_type: int) -> bytes:
    return length.to_bytes(2, "big") + b"\x00\x01" + MAGIC + control_type.to_bytes(2, "big") + b"\x00\x00"


def pad(text: bytes, size: int) -> bytes:
    return text + b"\x00" * (size - len(text))


# --- exact byte vectors, built field by field from the RFC 2637 section 2 diagrams ---------------

PPTP_LINUX_SCCRQ = (
    header(156, 1)
    + bytes.fromhex("0100 0000")  # protocol version 1.0, reserved1
    + bytes.fromhex("00000003")  # framing: async | sync
    + bytes.fromhex("00000003")  # bearer: analog | digital
    + bytes.fromhex("ffff 0001")  # max channels 65535, firmware 1
    + pad(b"local", 64)
    + pad(b"cananian", 64)
)


def test_sccrq_matches_pptp_linux_bytes() -> None:
    msg = StartControlConnectionRequest(
        framing_capabilities=3, bearer_capabilities=3, max_channels=65535, firmware_revision=1,
        host_name="local", vendor="cananian",
    )
    assert msg.encode() == PPTP_LINUX_SCCRQ
    decoded = decode_message(PPTP_LINUX_SCCRQ)
    assert decoded == msg
    assert isinstance(decoded, StartControlConnectionRequest)
    assert decoded.framing_capabilities == FramingCapability.ASYNC | FramingCapability.SYNC
    assert decoded.bearer_capabilities == BearerCapability.ANALOG | BearerCapability.DIGITAL
    assert decoded.protocol_version == 0x0100


def test_sccrp_as_pptpd_sends_it() -> None:
    data = (
        header(156, 2)
        + bytes.fromhex("0100 01 00")  # version, result Success, error None
        + bytes.fromhex("00000000 00000000")  # framing 0, bearer 0 (pptpd)
        + bytes.fromhex("0001 0001")  # max channels 1, firmware 1
        + pad(b"local", 64)
        + pad(b"linux", 64)
    )
    msg = decode_message(data)
    assert msg == StartControlConnectionReply(
        result_code=StartResult.SUCCESS, framing_capabilities=0, bearer_capabilities=0, max_channels=1,
        firmware_revision=1, host_name="local", vendor="linux",
    )
    assert msg.encode() == data


def test_echo_request_and_reply_bytes() -> None:
    assert EchoRequest(identifier=0xDEADBEEF).encode() == header(16, 5) + bytes.fromhex("deadbeef")
    reply = EchoReply(identifier=7, result_code=2, error_code=GeneralError.NOT_CONNECTED)
    assert reply.encode() == header(20, 6) + bytes.fromhex("00000007 02 01 0000")


def test_stop_request_bytes() -> None:
    data = StopControlConnectionRequest(reason=StopReason.LOCAL_SHUTDOWN).encode()
    assert data == header(16, 3) + bytes.fromhex("03 00 0000")


def test_outgoing_call_request_bytes() -> None:
    msg = OutgoingCallRequest(
        call_id=0x1234, call_serial_number=0x0042, minimum_bps=2400, maximum_bps=10_000_000,
        bearer_type=3, framing_type=3, packet_receive_window=3, packet_processing_delay=0,
        phone_number="555", subaddress="",
    )
    expected = (
        header(168, 7)
        + bytes.fromhex("1234 0042")
        + (2400).to_bytes(4, "big")
        + (10_000_000).to_bytes(4, "big")
        + bytes.fromhex("00000003 00000003")
        + bytes.fromhex("0003 0000")  # window 3, delay 0
        + bytes.fromhex("0003 0000")  # phone number length 3, reserved
        + pad(b"555", 64)
        + pad(b"", 64)
    )
    assert msg.encode() == expected
    assert decode_message(expected) == msg


def test_outgoing_call_reply_bytes() -> None:
    data = (
        header(32, 8)
        + bytes.fromhex("0000 1234")  # call id 0 (pptpd's first), peer's call id
        + bytes.fromhex("01 00 0000")  # Connected, no error, cause 0
        + (100_000_000).to_bytes(4, "big")
        + bytes.fromhex("0040 0000")  # window 64, delay 0
        + bytes.fromhex("00000000")  # physical channel
    )
    msg = decode_message(data)
    assert msg == OutgoingCallReply(call_id=0, peer_call_id=0x1234, result_code=OutgoingCallResult.CONNECTED,
                                    connect_speed=100_000_000, packet_receive_window=64)
    assert msg.encode() == data


def test_call_clear_and_disconnect_bytes() -> None:
    assert CallClearRequest(call_id=0xBEEF).encode() == header(16, 12) + bytes.fromhex("beef 0000")
    cdn = CallDisconnectNotify(call_id=7, result_code=DisconnectResult.REQUEST, cause_code=0x10,
                               call_statistics="stats")
    assert cdn.encode() == header(148, 13) + bytes.fromhex("0007 04 00 0010 0000") + pad(b"stats", 128)


def test_set_link_info_bytes() -> None:
    sli = SetLinkInfo(peer_call_id=0x1234, send_accm=0xFFFFFFFF, receive_accm=0)
    assert sli.encode() == header(24, 15) + bytes.fromhex("1234 0000 ffffffff 00000000")


def test_every_type_has_the_rfc_size() -> None:
    sizes = {1: 156, 2: 156, 3: 16, 4: 16, 5: 16, 6: 20, 7: 168, 8: 32, 9: 220, 10: 24, 11: 28, 12: 16,
             13: 148, 14: 40, 15: 24}
    assert {t: cls.SIZE for t, cls in MESSAGE_TYPES.items()} == sizes
    assert MAX_MESSAGE_SIZE == 220


# --- decode tolerance and errors -----------------------------------------------------------------


def test_fixed_string_garbage_after_nul_is_ignored() -> None:
    data = bytearray(PPTP_LINUX_SCCRQ)
    host_at = 12 + 16
    data[host_at + 6 : host_at + 19] = b"GARBAGE\xff\x01junk"
    msg = decode_message(bytes(data))
    assert isinstance(msg, StartControlConnectionRequest)
    assert msg.host_name == "local"


def test_nonzero_reserved_fields_are_ignored() -> None:
    data = bytearray(EchoReply(identifier=1).encode())
    data[10:12] = b"\xff\xff"  # Reserved0
    data[18:20] = b"\xff\xff"  # Reserved1
    assert decode_message(bytes(data)) == EchoReply(identifier=1)


def test_unknown_control_type_is_kept_raw() -> None:
    data = header(20, 99) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    msg = decode_message(data)
    assert msg == RawControlMessage(raw_type=99, body=b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert msg.control_type == 99
    assert msg.encode() == data


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (PPTP_LINUX_SCCRQ[:11], GeneralError.BAD_FORMAT),  # shorter than the header
        (PPTP_LINUX_SCCRQ[:-1], GeneralError.BAD_FORMAT),  # truncated: Length disagrees
        (PPTP_LINUX_SCCRQ + b"\x00", GeneralError.BAD_FORMAT),  # overlong
        (PPTP_LINUX_SCCRQ[:4] + b"\x1a\x2b\x3c\x4e" + PPTP_LINUX_SCCRQ[8:], GeneralError.BAD_FORMAT),
        (PPTP_LINUX_SCCRQ[:2] + b"\x00\x02" + PPTP_LINUX_SCCRQ[4:], GeneralError.BAD_VALUE),  # management
        (PPTP_LINUX_SCCRQ[:2] + b"\x00\x07" + PPTP_LINUX_SCCRQ[4:], GeneralError.BAD_VALUE),
        # Length consistent with the data but not the type's fixed size:
        (header(20, 5) + b"\x00" * 8, GeneralError.BAD_FORMAT),
        (header(12, 1), GeneralError.BAD_FORMAT),
        (header(224, 99) + b"\x00" * 212, GeneralError.BAD_FORMAT),  # longer than any message
    ],
)
def test_decode_errors_carry_general_error_codes(data: bytes, code: int) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(data)
    assert info.value.code == code


def test_class_decode_checks_the_type() -> None:
    assert EchoRequest.decode(EchoRequest(identifier=3).encode()) == EchoRequest(identifier=3)
    with pytest.raises(DecodeError):
        EchoReply.decode(EchoRequest(identifier=3).encode())


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        StartControlConnectionRequest(host_name="x" * 65)
    with pytest.raises(ValueError):
        OutgoingCallRequest(call_id=1, phone_number="12\x003")
    with pytest.raises(ValueError):
        IncomingCallRequest(call_id=1, dialed_number="\u20ac")
    with pytest.raises(ValueError):
        EchoRequest(identifier=1 << 32).encode()
    with pytest.raises(ValueError):
        RawControlMessage(raw_type=99, body=b"\x00" * 300).encode()
    with pytest.raises(ValueError):
        RawControlMessage(raw_type=5, body=b"\x00" * 4).encode()


def test_full_64_byte_string_without_terminator() -> None:
    msg = StartControlConnectionRequest(host_name="h" * 64, vendor="v" * 64)
    assert decode_message(msg.encode()) == msg


# --- hypothesis: round trips and fuzzing ---------------------------------------------------------

@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_type(cls: type[ControlMessage], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    encoded = msg.encode()
    assert len(encoded) == cls.SIZE
    assert struct.unpack_from("!HHIH", encoded) == (cls.SIZE, 1, MAGIC_COOKIE, cls.TYPE)
    assert decode_message(encoded) == msg
    assert cls.decode(encoded) == msg


@settings(max_examples=300, deadline=None)
@given(msg=raw_message)
def test_round_trip_raw(msg: RawControlMessage) -> None:
    assert decode_message(msg.encode()) == msg


def _decode_only_pptpkit_errors(data: bytes) -> None:
    with contextlib.suppress(PptpkitError):
        decode_message(data)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_pptpkit_errors(data)


@settings(max_examples=500, deadline=None)
@given(msg=any_message, cut=st.integers(0, 300))
def test_fuzz_truncated(msg: ControlMessage, cut: int) -> None:
    encoded = msg.encode()
    _decode_only_pptpkit_errors(encoded[: min(cut, len(encoded))])


@settings(max_examples=500, deadline=None)
@given(msg=any_message, flips=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 255)), max_size=8),
       extra=st.binary(max_size=8))
def test_fuzz_mutated(msg: ControlMessage, flips: list[tuple[int, int]], extra: bytes) -> None:
    data = bytearray(msg.encode())
    for pos, value in flips:
        data[pos % len(data)] = value
    _decode_only_pptpkit_errors(bytes(data))
    _decode_only_pptpkit_errors(bytes(data) + extra)


# --- the stream framer ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(any_message, min_size=1, max_size=6), cuts=st.lists(st.integers(1, 400), max_size=10))
def test_framer_reassembles_any_split(msgs: list[ControlMessage], cuts: list[int]) -> None:
    stream = b"".join(m.encode() for m in msgs)
    framer = ControlStreamFramer()
    frames: list[bytes] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        framer.feed(stream[pos : pos + cut])
        pos += cut
        while (frame := framer.next_frame()) is not None:
            frames.append(frame)
    framer.feed(stream[pos:])
    while (frame := framer.next_frame()) is not None:
        frames.append(frame)
    assert [decode_message(f) for f in frames] == msgs
    assert framer.buffered == 0


def test_framer_rejects_impossible_length_before_waiting() -> None:
    framer = ControlStreamFramer()
    framer.feed(b"\xff\xff")  # 65535: no message is that long; must not wait for 64 KiB
    with pytest.raises(DecodeError) as info:
        framer.next_frame()
    assert info.value.code == GeneralError.BAD_FORMAT
    assert framer.buffered == 0
    with pytest.raises(DecodeError):  # a broken stream stays broken
        framer.feed(EchoRequest(identifier=1).encode())


def test_framer_rejects_short_length_and_bad_magic_early() -> None:
    framer = ControlStreamFramer()
    framer.feed(b"\x00\x0b")
    with pytest.raises(DecodeError):
        framer.next_frame()
    framer = ControlStreamFramer()
    framer.feed(b"\x00\x10\x00\x01\xde\xad\xbe\xef")  # header incomplete, magic already wrong
    with pytest.raises(DecodeError):
        framer.next_frame()


def test_framer_waits_for_a_complete_message() -> None:
    data = EchoRequest(identifier=9).encode()
    framer = ControlStreamFramer()
    framer.feed(data[:1])
    assert framer.next_frame() is None
    framer.feed(data[1:15])
    assert framer.next_frame() is None
    framer.feed(data[15:] + data[:3])
    assert framer.next_frame() == data
    assert framer.next_frame() is None
    assert framer.buffered == 3


def test_framer_buffer_cap() -> None:
    framer = ControlStreamFramer(max_buffer=1000)
    framer.feed(b"\x00\x10\x00\x01" + MAGIC + b"\x00" * 500)
    with pytest.raises(DecodeError):
        framer.feed(b"\x00" * 600)
    with pytest.raises(ValueError):
        ControlStreamFramer(max_buffer=100)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), chunk=st.integers(1, 64))
def test_fuzz_framer_only_decode_errors(data: bytes, chunk: int) -> None:
    framer = ControlStreamFramer()
    try:
        for i in range(0, len(data), chunk):
            framer.feed(data[i : i + chunk])
            while (frame := framer.next_frame()) is not None:
                assert 12 <= len(frame) <= MAX_MESSAGE_SIZE
                _decode_only_pptpkit_errors(frame)
    except DecodeError:
        pass
    assert framer.buffered <= MAX_MESSAGE_SIZE
