"""Enhanced GRE codec (RFC 2637 section 4.1) and the raw-socket IPv4 header helper."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.gre.packet import GrePacket, encode_gre, strip_ipv4_header

# Hand-assembled from the RFC drawing: C R K S s Recur A Flags Ver | protocol 880B | key | ...
DATA_SEQ_ACK = bytes.fromhex(
    "3081"  # K, S, A set, version 1 -> 0b0011_0000_1000_0001
    "880b"
    "0004"  # payload length
    "1234"  # call id
    "00000007"  # sequence
    "00000005"  # acknowledgement
    "ff03c021"
)
DATA_SEQ_ONLY = bytes.fromhex("3001" "880b" "0002" "0001" "ffffffff" "c021")
ACK_ONLY = bytes.fromhex("2081" "880b" "0000" "beef" "00000010")
BARE = bytes.fromhex("2001" "880b" "0000" "0000")


def test_decode_data_with_seq_and_ack() -> None:
    p = GrePacket.decode(DATA_SEQ_ACK)
    assert p == GrePacket(call_id=0x1234, payload=b"\xff\x03\xc0\x21", seq=7, ack=5)
    assert p.is_data
    assert p.encode() == DATA_SEQ_ACK


def test_decode_data_seq_only() -> None:
    p = GrePacket.decode(DATA_SEQ_ONLY)
    assert (p.call_id, p.payload, p.seq, p.ack) == (1, b"\xc0\x21", 0xFFFFFFFF, None)
    assert p.encode() == DATA_SEQ_ONLY


def test_decode_ack_only() -> None:
    p = GrePacket.decode(ACK_ONLY)
    assert (p.call_id, p.payload, p.seq, p.ack) == (0xBEEF, b"", None, 16)
    assert not p.is_data
    assert p.encode() == ACK_ONLY


def test_decode_bare_keyed_packet() -> None:
    p = GrePacket.decode(BARE)
    assert (p.call_id, p.payload, p.seq, p.ack) == (0, b"", None, None)
    assert p.encode() == BARE


def test_decode_accepts_memoryview_and_bytearray() -> None:
    assert GrePacket.decode(memoryview(DATA_SEQ_ACK)) == GrePacket.decode(bytearray(DATA_SEQ_ACK))
    assert type(GrePacket.decode(memoryview(DATA_SEQ_ACK)).payload) is bytes


def test_data_packet_with_empty_payload() -> None:
    raw = encode_gre(5, b"", 3, None)
    assert raw == bytes.fromhex("3001880b000000050000 0003".replace(" ", ""))
    assert GrePacket.decode(raw) == GrePacket(5, b"", 3)


def _with_word(raw: bytes, word: int) -> bytes:
    return struct.pack("!H", word) + raw[2:]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with_word(DATA_SEQ_ACK, 0x3080), "GRE version 0"),
        (_with_word(DATA_SEQ_ACK, 0x3082), "GRE version 2"),
        (DATA_SEQ_ACK[:2] + b"\x08\x00" + DATA_SEQ_ACK[4:], "protocol type 0x0800"),
        (_with_word(DATA_SEQ_ACK, 0x1081), "key bit (K) clear"),
        (_with_word(DATA_SEQ_ACK, 0xB081), "checksum-present bit (C)"),
        (_with_word(DATA_SEQ_ACK, 0x7081), "routing-present bit (R)"),
        (_with_word(DATA_SEQ_ACK, 0x3881), "strict-source-route bit (s)"),
        (_with_word(DATA_SEQ_ACK, 0x3281), "recursion control 2"),
        (_with_word(DATA_SEQ_ACK, 0x3089), "reserved flags 0x1"),
        (_with_word(DATA_SEQ_ACK, 0x30C1), "reserved flags 0x8"),
        (DATA_SEQ_ACK + b"\x00", "payload length 4 does not match the 5 bytes"),
        (DATA_SEQ_ACK[:-1], "payload length 4 does not match the 3 bytes"),
        (DATA_SEQ_ACK[:15], "S and A header needs 16"),
        (DATA_SEQ_ONLY[:11], "S header needs 12"),
        (ACK_ONLY[:11], "A header needs 12"),
        (BARE[:7], "header needs 8"),
        (b"", "header needs 8"),
        (bytes.fromhex("2081880b0002000100000001abcd"), "payload without a sequence number"),
        (bytes.fromhex("2001880b00020001abcd"), "payload without a sequence number"),
    ],
)
def test_decode_errors_are_distinct(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GrePacket.decode(raw)


def test_construction_validates_fields() -> None:
    with pytest.raises(ValueError):
        GrePacket(call_id=0x10000)
    with pytest.raises(ValueError):
        GrePacket(call_id=1, payload=b"x", seq=1 << 32)
    with pytest.raises(ValueError):
        GrePacket(call_id=1, ack=-1)
    with pytest.raises(ValueError):
        GrePacket(call_id=1, payload=b"x")  # data needs a sequence number
    with pytest.raises(ValueError):
        GrePacket(call_id=1, payload=b"x" * 0x10000, seq=0)
    with pytest.raises(ValueError):
        encode_gre(1, b"x", None, 3)
    with pytest.raises(ValueError):
        encode_gre(0x10000, b"", None, None)
    with pytest.raises(ValueError):
        encode_gre(1, b"x" * 0x10000, 0, None)


packets = st.builds(
    lambda cid, payload, seq, ack, data: GrePacket(
        cid, payload if data else b"", seq if data else None, ack
    ),
    st.integers(0, 0xFFFF),
    st.binary(max_size=200),
    st.integers(0, 0xFFFFFFFF),
    st.none() | st.integers(0, 0xFFFFFFFF),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(packets)
def test_round_trip(p: GrePacket) -> None:
    raw = p.encode()
    assert GrePacket.decode(raw) == p
    hdr = 8 + (4 if p.seq is not None else 0) + (4 if p.ack is not None else 0)
    assert len(raw) == hdr + len(p.payload)
    assert struct.unpack_from("!H", raw, 4)[0] == len(p.payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes_only_decode_errors(raw: bytes) -> None:
    try:
        GrePacket.decode(raw)
    except PptpkitError as exc:
        assert isinstance(exc, DecodeError)


@settings(max_examples=300, deadline=None)
@given(packets, st.data())
def test_fuzz_truncated_always_rejected(p: GrePacket, data: st.DataObject) -> None:
    raw = p.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DecodeError):
        GrePacket.decode(raw[:cut])


@settings(max_examples=400, deadline=None)
@given(packets, st.data())
def test_fuzz_mutated(p: GrePacket, data: st.DataObject) -> None:
    raw = bytearray(p.encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    try:
        q = GrePacket.decode(bytes(raw))
    except DecodeError:
        return
    assert q.encode() == bytes(raw)  # anything accepted is canonical


# ---------------------------------------------------------------- IPv4 header


def ipv4(src: str, payload: bytes, *, options: bytes = b"", proto: int = 47, frag: int = 0,
         total: int | None = None) -> bytes:
    ihl = (20 + len(options)) // 4
    length = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, length, 1, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton("192.0.2.1"),
    )
    return header + options + payload


def test_strip_ipv4_plain() -> None:
    src, gre = strip_ipv4_header(ipv4("198.51.100.7", DATA_SEQ_ACK))
    assert src == "198.51.100.7"
    assert isinstance(gre, memoryview)
    assert bytes(gre) == DATA_SEQ_ACK
    assert GrePacket.decode(gre).seq == 7


def test_strip_ipv4_with_options_and_trailing_bytes() -> None:
    data = ipv4("203.0.113.9", ACK_ONLY, options=b"\x01\x01\x01\x00") + b"\xee\xee"
    data = data[:2] + struct.pack("!H", 24 + len(ACK_ONLY)) + data[4:]
    src, gre = strip_ipv4_header(data)
    assert src == "203.0.113.9"
    assert bytes(gre) == ACK_ONLY  # bytes past the IP total length are not GRE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (ipv4("192.0.2.2", BARE)[:19], "IPv4 header truncated"),
        (b"\x60" + ipv4("192.0.2.2", BARE)[1:], "IP version 6"),
        (b"\x44" + ipv4("192.0.2.2", BARE)[1:], "header length 16"),
        (ipv4("192.0.2.2", BARE, total=19), "total length 19 smaller"),
        (ipv4("192.0.2.2", BARE, total=29), "truncated: total length 29"),
        (ipv4("192.0.2.2", BARE, proto=17), "IP protocol 17"),
        (ipv4("192.0.2.2", BARE, frag=0x2000), "fragment"),
        (ipv4("192.0.2.2", BARE, frag=0x0001), "fragment"),
        (b"\x4f" + ipv4("192.0.2.2", BARE)[1:], "total length 28 smaller than its header \\(60\\)"),
    ],
)
def test_strip_ipv4_errors(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        strip_ipv4_header(data)


def test_strip_ipv4_dont_fragment_is_fine() -> None:
    _src, gre = strip_ipv4_header(ipv4("192.0.2.2", BARE, frag=0x4000))
    assert bytes(gre) == BARE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_strip_ipv4_fuzz(raw: bytes) -> None:
    try:
        _src, gre = strip_ipv4_header(raw)
    except PptpkitError as exc:
        assert isinstance(exc, DecodeError)
        return
    assert len(gre) <= len(raw) - 20
