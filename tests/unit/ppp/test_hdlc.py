"""RFC 1662 async HDLC framing: FCS-16, escaping, streaming decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.ppp.hdlc import (
    FCS16_GOOD,
    HdlcDecoder,
    encode_frame,
    escape,
    fcs16,
    fcs16_check,
    fcs16_trailer,
    unescape,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "vectors" / "fcs16_hdlc.json").read_text()
)


def bit_serial_fcs(data: bytes, fcs: int = 0xFFFF) -> int:
    """RFC 1662's FCS as the shift register it describes: one bit at a time, LSB first."""
    for byte in data:
        for i in range(8):
            feedback = (fcs ^ (byte >> i)) & 1
            fcs >>= 1
            if feedback:
                fcs ^= 0x8408
    return fcs


def reference_escape(data: bytes, accm: int) -> bytes:
    out = bytearray()
    for b in data:
        if b in (0x7D, 0x7E) or (b < 0x20 and accm >> b & 1):
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def with_fcs(frame: bytes) -> bytes:
    return frame + fcs16_trailer(frame)


# ---------------------------------------------------------------- FCS


def test_good_residue_constant_matches_vector_file() -> None:
    assert FCS16_GOOD == int(VECTORS["good_residue"], 16) == 0xF0B8


@pytest.mark.parametrize("case", VECTORS["fcs"], ids=lambda c: c["name"])
def test_fcs_known_answers(case: dict[str, str]) -> None:
    data = bytes.fromhex(case["data"])
    assert fcs16(data) ^ 0xFFFF == int(case["fcs"], 16)
    assert fcs16_trailer(data).hex() == case["trailer"]
    assert fcs16(data + fcs16_trailer(data)) == FCS16_GOOD
    assert fcs16_check(data + fcs16_trailer(data))


def test_fcs_table_row_from_rfc_appendix_c() -> None:
    # fcstab[b] is the register after one zero-initialised step on octet b.
    assert [fcs16(bytes((b,)), 0) for b in range(8)] == [
        0x0000, 0x1189, 0x2312, 0x329B, 0x4624, 0x57AD, 0x6536, 0x74BF,
    ]
    assert fcs16(b"\xff", 0) == 0x0F78


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_fcs_matches_bit_serial_model(data: bytes, init: int) -> None:
    assert fcs16(data, init) == bit_serial_fcs(data, init)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_fcs_is_incremental(a: bytes, b: bytes) -> None:
    assert fcs16(b, fcs16(a)) == fcs16(a + b)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 7), st.data())
def test_fcs_detects_single_bit_errors(frame: bytes, bit: int, data: st.DataObject) -> None:
    good = bytearray(with_fcs(frame))
    pos = data.draw(st.integers(0, len(good) - 1))
    good[pos] ^= 1 << bit
    assert not fcs16_check(bytes(good))


# ---------------------------------------------------------------- escaping


@pytest.mark.parametrize("case", VECTORS["escape_examples"], ids=lambda c: c["octet"])
def test_rfc_escape_examples(case: dict[str, str]) -> None:
    assert escape(bytes.fromhex(case["octet"]), 0xFFFFFFFF).hex() == case["escaped"]
    assert unescape(bytes.fromhex(case["escaped"])).hex() == case["octet"]


def test_flag_and_escape_always_escaped_even_with_accm_zero() -> None:
    assert escape(b"\x7e\x7d\x00\x11", 0) == b"\x7d\x5e\x7d\x5d\x00\x11"


def test_xon_xoff_with_parity_not_escaped_by_32bit_accm() -> None:
    # 0x91/0x93 are outside the 32-bit ACCM: they go out as they are.
    assert escape(b"\x11\x13\x91\x93", 0x000A0000) == b"\x7d\x31\x7d\x33\x91\x93"


@pytest.mark.parametrize("bit", range(32))
def test_each_accm_bit_escapes_exactly_its_octet(bit: int) -> None:
    data = bytes(range(256))
    assert escape(data, 1 << bit) == reference_escape(data, 1 << bit)
    escaped = escape(data, 1 << bit)
    assert len(escaped) == 256 + 3  # 7d, 7e and the flagged octet


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFFFFFF))
def test_escape_matches_reference_and_unescape_inverts(data: bytes, accm: int) -> None:
    escaped = escape(data, accm)
    assert escaped == reference_escape(data, accm)
    assert 0x7E not in escaped
    assert unescape(escaped) == data


def test_unescape_handles_escaped_0x5d_and_optional_escapes() -> None:
    # 7d 7d is an escaped 0x5d (senders may escape any octet); the second 7d is data.
    assert unescape(b"\x7d\x7d\x7d\x5e") == b"\x5d\x7e"
    assert unescape(b"a\x7d\x7d\x7d\x7db") == b"a\x5d\x5db"
    # An escaped ordinary octet (0x41 sent as 7d 61) is legal too.
    assert unescape(b"\x7d\x61\x7d\x5d") == b"\x41\x7d"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.booleans()), max_size=200))
def test_unescape_any_optionally_escaped_octets(octets: list[tuple[int, bool]]) -> None:
    # A sender may escape any octet but 0x5e (that would put a flag on the line; RFC 1662
    # 7.1), including 0x5d, which becomes 7d 7d.
    wire = bytearray()
    for b, esc in octets:
        if (esc and b != 0x5E) or b in (0x7D, 0x7E):
            wire += bytes((0x7D, b ^ 0x20))
        else:
            wire.append(b)
    plain = bytes(b for b, _ in octets)
    assert unescape(bytes(wire)) == plain
    dec = HdlcDecoder()
    frame = plain + fcs16_trailer(plain)
    trailer = escape(frame[-2:], 0)
    if len(frame) >= 4:
        assert dec.feed(b"\x7e" + bytes(wire) + trailer + b"\x7e") == [plain]


def test_escape_rejects_bad_accm() -> None:
    with pytest.raises(ValueError):
        escape(b"x", 1 << 32)


# ---------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_frame_known_answers(case: dict[str, str]) -> None:
    frame = bytes.fromhex(case["frame"])
    wire = bytes.fromhex(case["wire"])
    assert encode_frame(frame, int(case["accm"], 16)) == wire
    dec = HdlcDecoder()
    assert dec.feed(wire) == [frame]
    assert dec.stats.frames == 1


def test_encode_default_accm_escapes_every_control_character() -> None:
    wire = encode_frame(bytes(range(32)))
    body = wire[1:-1]
    assert wire[0] == wire[-1] == 0x7E
    assert not any(b < 0x20 for b in body)


@pytest.mark.parametrize("accm", [0, 0xFFFFFFFF, 0x000A0000, 0x80000001, 0x55555555])
def test_round_trip_all_octets(accm: int) -> None:
    frame = bytes(range(256)) * 2
    dec = HdlcDecoder()
    assert dec.feed(encode_frame(frame, accm)) == [frame]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=2, max_size=120), min_size=1, max_size=5), st.integers(0, 0xFFFFFFFF))
def test_round_trip_any_accm(frames: list[bytes], accm: int) -> None:
    dec = HdlcDecoder()
    stream = b"".join(encode_frame(f, accm) for f in frames)
    assert dec.feed(stream) == frames
    assert dec.stats.frames == len(frames)
    assert dec.stats.bad_fcs == 0


def test_split_feeds_at_every_position() -> None:
    frames = [b"\xff\x03\xc0\x21\x01\x01\x00\x04", b"\x7e\x7d\x00\x11hello", b"\x21" + bytes(range(40))]
    stream = b"".join(encode_frame(f) for f in frames)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            dec = HdlcDecoder()
            got = dec.feed(stream[:i]) + dec.feed(stream[i:j]) + dec.feed(stream[j:])
            assert got == frames, (i, j)


def test_byte_at_a_time() -> None:
    frame = b"\xff\x03\x00\x21" + bytes(range(256))
    dec = HdlcDecoder()
    got: list[bytes] = []
    for b in encode_frame(frame):
        got += dec.feed(bytes((b,)))
    assert got == [frame]


def test_shared_flag_between_frames_and_empty_frames() -> None:
    a, b = b"\xff\x03abc", b"\xff\x03defg"
    # One flag between frames, plus runs of flags (empty frames) that must be ignored silently.
    stream = b"\x7e\x7e" + with_fcs(a) + b"\x7e" + with_fcs(b) + b"\x7e\x7e\x7e"
    dec = HdlcDecoder()
    assert dec.feed(stream) == [a, b]
    assert (dec.stats.short, dec.stats.bad_fcs, dec.stats.aborted) == (0, 0, 0)


def test_garbage_before_first_flag_discarded() -> None:
    frame = b"\xff\x03\xc0\x21\x09"
    dec = HdlcDecoder()
    # Even a complete valid frame before any flag is line noise for a receiver that has not
    # synchronised yet.
    noise = with_fcs(frame)
    assert dec.feed(noise) == []
    assert dec.feed(b"xy" + encode_frame(frame)) == [frame]
    assert dec.stats.discarded_bytes == len(noise) + 2
    assert dec.stats.frames == 1


def test_garbage_between_frames_resyncs_at_next_flag() -> None:
    frame = b"\xff\x03\x80\x21\x01\x02\x03"
    dec = HdlcDecoder()
    stream = encode_frame(frame) + b"garbage!" + encode_frame(frame)
    assert dec.feed(stream) == [frame, frame]
    assert dec.stats.bad_fcs == 1  # the garbage between two flags is a frame with a bad FCS


def test_bad_fcs_dropped_and_counted() -> None:
    frame = b"\xff\x03\x80\x21\x01\x02\x03"
    wire = bytearray(encode_frame(frame, 0))
    wire[5] ^= 0x01
    dec = HdlcDecoder()
    assert dec.feed(bytes(wire) + encode_frame(frame)) == [frame]
    assert dec.stats.bad_fcs == 1
    assert dec.stats.frames == 1


def test_short_frames_ignored_not_fcs_errors() -> None:
    dec = HdlcDecoder()
    assert dec.feed(b"\x7e\x01\x7e\x01\x02\x7e\x01\x02\x03\x7e\x7d\x41\x7d\x42\x7e") == []
    assert dec.stats.short == 4
    assert dec.stats.bad_fcs == 0


def test_smallest_frame_is_four_octets() -> None:
    # A two-octet payload plus FCS is the shortest frame that is delivered.
    dec = HdlcDecoder()
    assert dec.feed(encode_frame(b"\xc0\x21")) == [b"\xc0\x21"]
    assert dec.feed(encode_frame(b"\x01")) == []
    assert dec.stats.short == 1


def test_escape_before_closing_flag_aborts_frame() -> None:
    frame = b"\xff\x03\x80\x21\x01"
    dec = HdlcDecoder()
    assert dec.feed(b"\x7e" + with_fcs(frame) + b"\x7d\x7e" + encode_frame(frame)) == [frame]
    assert dec.stats.aborted == 1
    assert dec.stats.bad_fcs == 0


def test_max_frame_cap_on_decoded_size() -> None:
    dec = HdlcDecoder(max_frame=10)
    assert dec.feed(encode_frame(b"x" * 10, 0)) == [b"x" * 10]
    assert dec.feed(encode_frame(b"x" * 11, 0)) == []
    assert dec.stats.oversized == 1


def test_unterminated_frame_cannot_grow_the_buffer() -> None:
    dec = HdlcDecoder(max_frame=100)
    dec.feed(b"\x7e")
    for _ in range(50):
        dec.feed(b"\x41" * 64)
        assert dec.pending <= 2 * (100 + 2)
    assert dec.stats.oversized == 1
    # The rest of the runaway frame is discarded up to the next flag, then decoding resumes.
    frame = b"\xff\x03abcd"
    assert dec.feed(b"\x41\x41" + encode_frame(frame)) == [frame]
    assert dec.stats.oversized == 1


def test_runaway_frame_in_one_chunk_with_flag() -> None:
    dec = HdlcDecoder(max_frame=16)
    frame = b"\xff\x03abcd"
    assert dec.feed(b"\x7e" + b"A" * 500) == []
    assert dec.stats.oversized == 1
    assert dec.pending == 0
    assert dec.feed(b"B" * 10 + encode_frame(frame)) == [frame]


def test_receive_accm_discards_inserted_control_characters() -> None:
    frame = b"\xff\x03\x80\x21\x01\x02"
    wire = encode_frame(frame, 0xFFFFFFFF)
    # XON/XOFF inserted on the line by flow control, raw (unescaped).
    noisy = wire[:4] + b"\x11" + wire[4:7] + b"\x13" + wire[7:]
    plain = HdlcDecoder()
    assert plain.feed(noisy) == []
    assert plain.stats.bad_fcs == 1
    filtering = HdlcDecoder(rx_accm=0x000A0000)
    assert filtering.feed(noisy) == [frame]
    # Escaped control characters are data and survive the filter.
    escaped = HdlcDecoder(rx_accm=0xFFFFFFFF)
    assert escaped.feed(encode_frame(b"\x11\x13\x00\x01", 0xFFFFFFFF)) == [b"\x11\x13\x00\x01"]


def test_set_rx_accm_takes_effect_mid_stream() -> None:
    frame = b"\xff\x03\x80\x21"
    wire = encode_frame(frame)
    noisy = wire[:3] + b"\x01" + wire[3:]
    dec = HdlcDecoder()
    assert dec.feed(noisy) == []
    dec.set_rx_accm(0x2)
    assert dec.feed(noisy) == [frame]
    with pytest.raises(ValueError):
        dec.set_rx_accm(-1)


def test_decoder_rejects_bad_max_frame() -> None:
    with pytest.raises(ValueError):
        HdlcDecoder(max_frame=0)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(0, 0xFFFFFFFF))
def test_decoder_fuzz_never_raises(chunks: list[bytes], accm: int) -> None:
    dec = HdlcDecoder(max_frame=40, rx_accm=accm)
    for chunk in chunks:
        for frame in dec.feed(chunk):
            assert len(frame) <= 40
        assert dec.pending <= 2 * 42


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2, max_size=100), st.data())
def test_mutated_stream_recovers_for_following_frame(frame: bytes, data: st.DataObject) -> None:
    wire = bytearray(encode_frame(frame))
    pos = data.draw(st.integers(1, len(wire) - 2))
    wire[pos] = data.draw(st.integers(0, 255))
    dec = HdlcDecoder()
    got = dec.feed(bytes(wire) + encode_frame(b"\xff\x03next"))
    # Whatever the corruption did to the first frame, the next one is always recovered.
    assert got[-1] == b"\xff\x03next"
    assert len(got) <= 3
