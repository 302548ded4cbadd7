"""PPP frame and control-packet codecs: known bytes, round trips, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.ppp.frame import decode_frame, encode_frame, frame_header
from pptpkit.ppp.packet import MAX_OPTIONS, Option, Packet, decode_options, encode_options
from pptpkit.ppp.protocols import PppProtocol

# A real pppd LCP Configure-Request as seen on the wire inside GRE.
PPPD_CONFREQ = bytes.fromhex("ff03c0210101001402060000000005068a1b2c3d07020802")


def test_decode_every_spelling() -> None:
    for raw in (b"\xff\x03\x00\x21ip", b"\x00\x21ip", b"\xff\x03\x21ip", b"\x21ip"):
        proto, info = decode_frame(raw)
        assert proto == PppProtocol.IP and bytes(info) == b"ip"
    proto, info = decode_frame(PPPD_CONFREQ)
    assert proto == PppProtocol.LCP and bytes(info) == PPPD_CONFREQ[4:]


@pytest.mark.parametrize(
    "raw", [b"", b"\xff", b"\xff\x03", b"\xff\x05\x00\x21", b"\x00", b"\x00\x22x", b"\xff\x03\x80"]
)
def test_decode_rejects_malformed(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(raw)


def test_encode_compression_rules() -> None:
    assert encode_frame(0x0021, b"x") == b"\xff\x03\x00\x21x"
    assert encode_frame(0x0021, b"x", acfc=True, pfc=True) == b"\x21x"
    assert encode_frame(0x80FD, b"x", acfc=True, pfc=True) == b"\x80\xfdx"
    # LCP is never compressed, whatever was negotiated.
    assert frame_header(PppProtocol.LCP, acfc=True, pfc=True) == b"\xff\x03\xc0\x21"
    with pytest.raises(ValueError):
        frame_header(0x10000)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([int(p) for p in PppProtocol]), st.binary(max_size=40), st.booleans(), st.booleans())
def test_frame_round_trip(proto: int, info: bytes, acfc: bool, pfc: bool) -> None:
    got_proto, got_info = decode_frame(encode_frame(proto, info, acfc=acfc, pfc=pfc))
    assert (got_proto, bytes(got_info)) == (proto, info)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_frame_fuzz(raw: bytes) -> None:
    try:
        proto, info = decode_frame(raw)
    except PptpkitError:
        return
    assert proto & 1 and len(info) <= len(raw)


def test_packet_known_bytes_and_padding() -> None:
    pkt = Packet.decode(PPPD_CONFREQ[4:] + b"\0\0\0")  # trailing padding is ignored
    assert (pkt.code, pkt.identifier) == (1, 1)
    assert pkt.encode() == PPPD_CONFREQ[4:]
    opts = decode_options(pkt.data)
    assert [o.type for o in opts] == [2, 5, 7, 8]
    assert opts[1].data == bytes.fromhex("8a1b2c3d")
    assert encode_options(opts) == pkt.data


@pytest.mark.parametrize(
    "raw", [b"", b"\x01\x01\x00", b"\x01\x01\x00\x03", b"\x01\x01\x00\x09abcd", b"\x01\x01\xff\xff"]
)
def test_packet_rejects_bad_length(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Packet.decode(raw)


@pytest.mark.parametrize("raw", [b"\x01", b"\x01\x00", b"\x01\x01", b"\x01\x05ab", b"\x07\x02\x01\x04a"])
def test_options_reject_bad_length(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_options(raw)


def test_options_capped() -> None:
    decode_options(b"\x07\x02" * MAX_OPTIONS)
    with pytest.raises(DecodeError):
        decode_options(b"\x07\x02" * (MAX_OPTIONS + 1))


def test_unknown_option_and_code_keep_raw_bytes() -> None:
    raw = bytes.fromhex("2a0712345678ff")
    assert encode_options(decode_options(raw)) == raw
    pkt = Packet.decode(b"\x63\x09\x00\x07xyz")
    assert pkt.code == 0x63 and pkt.encode() == b"\x63\x09\x00\x07xyz"


options_st = st.lists(st.builds(Option, type=st.integers(0, 255), data=st.binary(max_size=20)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(options_st, st.integers(0, 255), st.integers(0, 255))
def test_packet_round_trip(options: list[Option], code: int, ident: int) -> None:
    pkt = Packet(code=code, identifier=ident, data=encode_options(options))
    back = Packet.decode(pkt.encode())
    assert back == pkt and decode_options(back.data) == options


@settings(max_examples=500, deadline=None)
@given(options_st, st.data())
def test_packet_and_options_fuzz(options: list[Option], data: st.DataObject) -> None:
    raw = bytearray(Packet(code=1, identifier=1, data=encode_options(options)).encode())
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, max(0, len(raw) - 1)), st.integers(0, 255)), max_size=3)
    )
    mutated = bytearray(raw[:cut]) if data.draw(st.booleans()) else raw
    for pos, value in flips:
        if pos < len(mutated):
            mutated[pos] = value
    try:
        pkt = Packet.decode(bytes(mutated))
        decode_options(pkt.data)
    except PptpkitError:
        pass
