"""Access-Request builders (RFC 2548 layouts) and the typed answer."""

from __future__ import annotations

import ipaddress

import pytest

from pptpkit.errors import ConfigError
from pptpkit.radius.access import (
    CallInfo,
    FramedAddress,
    NasInfo,
    chap_request,
    mschapv1_request,
    mschapv2_request,
    parse_access_answer,
)
from pptpkit.radius.packet import Attribute

NAS = NasInfo(nas_ip_address=ipaddress.IPv4Address("192.0.2.1"))
CALL = CallInfo(nas_port=3, client_address="192.0.2.2")


def _value(attrs: tuple[Attribute, ...], name: str) -> object:
    return next(a.value for a in attrs if a.name == name)


def test_layouts() -> None:
    v2 = mschapv2_request(NAS, CALL, "u", ident=5, authenticator_challenge=b"A" * 16,
                          peer_challenge=b"P" * 16, nt_response=b"N" * 24)
    assert _value(v2, "MS-CHAP2-Response") == b"\x05\x00" + b"P" * 16 + bytes(8) + b"N" * 24
    assert _value(v2, "MS-CHAP-Challenge") == b"A" * 16
    v1 = mschapv1_request(NAS, CALL, "u", ident=6, challenge=b"C" * 8, lm_response=bytes(24),
                          nt_response=b"N" * 24)
    assert _value(v1, "MS-CHAP-Response") == b"\x06\x01" + bytes(24) + b"N" * 24
    chap = chap_request(NAS, CALL, "u", ident=7, challenge=b"c" * 16, response=b"r" * 16)
    assert _value(chap, "CHAP-Password") == b"\x07" + b"r" * 16
    names = [a.name for a in chap]
    assert names[:8] == ["User-Name", "NAS-IP-Address", "NAS-Port", "NAS-Port-Type", "Service-Type",
                         "Framed-Protocol", "Calling-Station-Id", "Tunnel-Type"]
    with pytest.raises(ConfigError):
        mschapv1_request(NAS, CALL, "u", ident=1, challenge=b"short", lm_response=bytes(24),
                         nt_response=bytes(24))
    with pytest.raises(ConfigError):
        NasInfo()


def test_answer_parsing_reports_what_it_does_not_use_once() -> None:
    attrs = (
        Attribute("Framed-IP-Address", ipaddress.IPv4Address("255.255.255.255")),
        Attribute("MS-MPPE-Send-Key", b"s" * 16), Attribute("Class", b"a"), Attribute("Class", b"b"),
        Attribute("Framed-MTU", 1400), Attribute("Framed-MTU", 1400), Attribute("Attr-200", b"x"),
        Attribute("Session-Timeout", b"\x01", malformed=True), Attribute("Service-Type", 2),
        Attribute("Service-Type", 6),
    )
    r = parse_access_answer(True, attrs)
    assert r.framed_ip is FramedAddress.CLIENT_CHOOSES and r.classes == (b"a", b"b")
    assert r.mppe_keys is None  # half a key pair is no key pair
    assert r.unused == ("Framed-MTU", "Attr-200", "Session-Timeout (malformed)", "Service-Type",
                        "MS-MPPE-Send-Key")
    assert "sss" not in repr(parse_access_answer(True, (Attribute("MS-MPPE-Send-Key", b"s" * 16),
                                                        Attribute("MS-MPPE-Recv-Key", b"s" * 16))))
