"""The packet codec and attributes by name: round trips, tags, VSAs, and fuzzing (only
PptpkitError escapes the decoders)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.radius.packet import (
    Attribute,
    AttributeEncodeError,
    RawAttribute,
    RawPacket,
    decode_attributes,
    encode_attributes,
)

AUTH = bytes(range(16))
SALT = lambda: b"\x80\0"  # noqa: E731


def _round(attrs: list[Attribute | tuple[str, object]]) -> tuple[Attribute, ...]:
    raw = encode_attributes(attrs, secret=b"s3cret", authenticator=AUTH,  # type: ignore[arg-type]
                            salt=lambda: b"\x80\x01")
    packet = RawPacket(code=2, identifier=9, authenticator=AUTH, attributes=tuple(raw)).encode()
    return decode_attributes(RawPacket.decode(packet).attributes, secret=b"s3cret",
                             request_authenticator=AUTH)


def test_types_values_tags_and_vendor_attributes_round_trip() -> None:
    out = _round([
        ("User-Name", "alice"), ("Service-Type", "Framed-User"), ("NAS-Port", 7),
        ("Framed-IP-Address", ipaddress.IPv4Address("198.51.100.7")),
        Attribute("Tunnel-Type", "PPTP", tag=0), ("Tunnel-Client-Endpoint", "192.0.2.2"),
        ("MS-CHAP-Challenge", b"\x01" * 16), ("MS-MPPE-Send-Key", b"K" * 16),
        ("MS-CHAP-MPPE-Keys", b"L" * 8 + b"N" * 16 + bytes(8)), ("Class", b"\x00\xff"),
    ])
    got = {a.name: a.value for a in out}
    assert got["User-Name"] == "alice" and got["Service-Type"] == 2 and got["NAS-Port"] == 7
    assert got["Framed-IP-Address"] == ipaddress.IPv4Address("198.51.100.7")
    assert got["Tunnel-Type"] == 1 and next(a.tag for a in out if a.name == "Tunnel-Type") == 0
    assert got["Tunnel-Client-Endpoint"] == "192.0.2.2"
    assert got["MS-MPPE-Send-Key"] == b"K" * 16
    assert got["MS-CHAP-MPPE-Keys"] == b"L" * 8 + b"N" * 16 + bytes(8)
    assert got["Class"] == b"\x00\xff"
    assert "KKKK" not in repr(out) and "<hidden>" in repr(out)  # keys stay out of logs


def test_unknown_and_malformed_attributes_are_kept_and_named() -> None:
    raw = [RawAttribute(200, b"xyz"), RawAttribute(8, b"\x01\x02"), RawAttribute(26, b"\x00\x00\x01"),
           RawAttribute(26, (9).to_bytes(4, "big") + b"\x01\x05abc"),
           RawAttribute(26, (311).to_bytes(4, "big") + b"\x10\x03x")]
    out = decode_attributes(raw, secret=b"s", request_authenticator=AUTH)
    assert [(a.name, a.malformed) for a in out] == [
        ("Attr-200", False), ("Framed-IP-Address", True), ("Vendor-Specific", True),
        ("Vendor-9-Attr-1", False), ("MS-MPPE-Send-Key", True)]


def test_encoding_errors_are_ours() -> None:
    with pytest.raises(AttributeEncodeError):
        encode_attributes([("No-Such", 1)], secret=b"s", authenticator=AUTH, salt=SALT)
    with pytest.raises(AttributeEncodeError):
        encode_attributes([("Service-Type", "Bogus")], secret=b"s", authenticator=AUTH, salt=SALT)
    with pytest.raises(AttributeEncodeError):
        encode_attributes([("NAS-Port", "x" * 3)], secret=b"s", authenticator=AUTH, salt=SALT)
    with pytest.raises(AttributeEncodeError):
        encode_attributes([("Class", b"x" * 254)], secret=b"s", authenticator=AUTH, salt=SALT)


def test_decode_rules() -> None:
    ok = RawPacket(code=2, identifier=1, authenticator=AUTH, attributes=(RawAttribute(1, b"a"),)).encode()
    assert RawPacket.decode(ok + b"padding").encode() == ok  # RFC 2865 3: padding ignored
    for bad in (ok[:19], ok[:-1], ok[:3] + b"\x13" + ok[4:], ok[:21] + b"\x01" + ok[22:]):
        with pytest.raises(DecodeError):
            RawPacket.decode(bad)


@given(st.binary(max_size=600))
def test_fuzz_packet_and_attribute_decoders(data: bytes) -> None:
    try:
        packet = RawPacket.decode(data)
    except PptpkitError:
        packet = RawPacket(code=2, identifier=0, authenticator=AUTH,
                           attributes=tuple(RawAttribute(t, data[:253]) for t in (26, 8, 66, 64, 12, 17)))
    decode_attributes(packet.attributes, secret=b"s", request_authenticator=AUTH)


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=253)), max_size=12),
       st.integers(0, 2**32 - 1))
def test_fuzz_every_attribute_type_and_vendor(items: list[tuple[int, bytes]], vendor: int) -> None:
    raw = [RawAttribute(t, v) for t, v in items]
    ms = (311).to_bytes(4, "big")
    raw += [RawAttribute(26, ms + bytes([t, len(v[:200]) + 2]) + v[:200]) for t, v in items]
    raw += [RawAttribute(26, vendor.to_bytes(4, "big") + v[:249]) for _, v in items]
    for attr in decode_attributes(raw, secret=b"s", request_authenticator=AUTH):
        repr(attr)
