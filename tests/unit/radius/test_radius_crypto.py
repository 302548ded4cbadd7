"""RADIUS crypto against the RFCs' own examples, plus round trips and the error contract."""

from __future__ import annotations

import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from radius_vectors import VectorFile

from pptpkit.errors import PptpkitError
from pptpkit.radius import crypto
from pptpkit.radius.packet import RawPacket, decode_attributes

V = VectorFile("radius_rfc_examples.txt")
SECRET = V.s("secret").encode()


def test_rfc2865_7_1_user_password_is_unhidden_and_hidden_back() -> None:
    request = RawPacket.decode(V.b("rfc2865_7_1_request"))
    hidden = next(a.value for a in request.attributes if a.type == 2)
    plain = crypto.unhide_password(hidden, SECRET, request.authenticator)
    assert plain == V.s("rfc2865_7_1_password").encode()
    assert crypto.hide_password(plain, SECRET, request.authenticator) == hidden


def test_rfc2865_7_1_the_request_reencodes_byte_for_byte() -> None:
    data = V.b("rfc2865_7_1_request")
    assert RawPacket.decode(data).encode() == data


@pytest.mark.parametrize("example", ["7_1", "7_2"])
def test_rfc2865_response_authenticators(example: str) -> None:
    request = RawPacket.decode(V.b(f"rfc2865_{example}_request"))
    accept = V.b(f"rfc2865_{example}_accept")
    assert crypto.verify_response_authenticator(accept, request.authenticator, SECRET)
    assert not crypto.verify_response_authenticator(accept, request.authenticator, b"wrong")
    tampered = accept[:-1] + bytes([accept[-1] ^ 1])
    assert not crypto.verify_response_authenticator(tampered, request.authenticator, SECRET)


def test_rfc2865_7_2_accept_asks_for_a_pool_address() -> None:
    from ipaddress import IPv4Address

    from pptpkit.radius.access import FramedAddress, parse_access_answer

    accept = RawPacket.decode(V.b("rfc2865_7_2_accept"))
    attrs = decode_attributes(accept.attributes, secret=SECRET, request_authenticator=b"\0" * 16)
    result = parse_access_answer(True, attrs)
    assert result.framed_ip is FramedAddress.POOL
    assert ("Framed-IP-Address", IPv4Address("255.255.255.254")) in [(a.name, a.value) for a in attrs]
    # Framed-Routing, Framed-Compression and Framed-MTU are not ours to honour: reported.
    assert result.unused == ("Framed-Routing", "Framed-Compression", "Framed-MTU")


def test_rfc5997_status_server_message_authenticator() -> None:
    packet = V.b("rfc5997_status_server")
    assert crypto.verify_message_authenticator(packet, SECRET)
    assert crypto.message_authenticator(packet, SECRET) == packet[22:38]
    assert not crypto.verify_message_authenticator(packet, b"xyzzy5462")


def test_message_authenticator_of_a_response_uses_the_request_authenticator() -> None:
    request_auth = bytes(range(16))
    body = bytes([80, 18]) + bytes(16)
    draft = bytes([2, 7, 0, 20 + len(body)]) + request_auth + body
    ma = crypto.message_authenticator(draft, b"s")
    response = draft[:22] + ma + draft[38:]
    response = response[:4] + crypto.response_authenticator(response, request_auth, b"s") + response[20:]
    assert crypto.verify_message_authenticator(response, b"s", request_auth)
    assert not crypto.verify_message_authenticator(response, b"s")  # own field: wrong
    # An independent computation (RFC 3579 3.2).
    zeroed = response[:4] + request_auth + bytes([80, 18]) + bytes(16)
    assert hmac.new(b"s", zeroed, hashlib.md5).digest() == ma


def test_message_authenticator_rules() -> None:
    base = bytes([1, 1, 0, 20 + 36]) + bytes(16) + bytes([80, 18]) + bytes(16) + bytes([80, 18]) + bytes(16)
    with pytest.raises(crypto.RadiusCryptoError, match="more than one"):
        crypto.verify_message_authenticator(base, b"s")
    short = bytes([1, 1, 0, 26]) + bytes(16) + bytes([80, 6]) + bytes(4)
    with pytest.raises(crypto.RadiusCryptoError, match="length"):
        crypto.message_authenticator(short, b"s")
    assert not crypto.verify_message_authenticator(bytes([1, 1, 0, 20]) + bytes(16), b"s")


@given(key=st.binary(max_size=200), secret=st.binary(min_size=1, max_size=64),
       auth=st.binary(min_size=16, max_size=16), salt=st.binary(min_size=2, max_size=2))
def test_salt_round_trip(key: bytes, secret: bytes, auth: bytes, salt: bytes) -> None:
    salt = bytes([salt[0] | 0x80, salt[1]])
    value = crypto.salt_encrypt(key, secret, auth, salt)
    assert (len(value) - 2) % 16 == 0 and value[:2] == salt
    assert crypto.salt_decrypt(value, secret, auth) == key


def test_salt_scheme_written_out_from_rfc2548() -> None:
    """RFC 2548 2.4.2's recipe, step by step, for a 16-octet key (two blocks)."""
    secret, auth, salt, key = b"secret", bytes(range(16)), b"\x81\x02", bytes(range(100, 116))
    p = bytes([16]) + key + bytes(15)
    b1 = hashlib.md5(secret + auth + salt).digest()
    c1 = bytes(x ^ y for x, y in zip(p[:16], b1, strict=True))
    b2 = hashlib.md5(secret + c1).digest()
    c2 = bytes(x ^ y for x, y in zip(p[16:], b2, strict=True))
    assert crypto.salt_encrypt(key, secret, auth, salt) == salt + c1 + c2


def test_salt_decrypt_refuses_what_a_wrong_secret_gives() -> None:
    value = crypto.salt_encrypt(b"k" * 16, b"right", bytes(16), b"\x80\x00")
    wrong = 0
    for n in range(50):
        try:
            crypto.salt_decrypt(value, b"wrong%d" % n, bytes(16))
        except crypto.RadiusCryptoError:
            wrong += 1
    assert wrong > 30  # Key-Length > 31 for most wrong keys
    with pytest.raises(crypto.RadiusCryptoError, match="most significant"):
        crypto.salt_decrypt(b"\x00" + value[1:], b"right", bytes(16))
    with pytest.raises(crypto.RadiusCryptoError):
        crypto.salt_decrypt(value[:-1], b"right", bytes(16))


@given(password=st.binary(max_size=128), secret=st.binary(min_size=1, max_size=64),
       auth=st.binary(min_size=16, max_size=16))
def test_password_round_trip(password: bytes, secret: bytes, auth: bytes) -> None:
    hidden = crypto.hide_password(password, secret, auth)
    assert len(hidden) % 16 == 0 and 16 <= len(hidden) <= 128
    assert crypto.unhide_password(hidden, secret, auth, strip=False).rstrip(b"\0") == password.rstrip(b"\0")


@given(value=st.binary(max_size=300), secret=st.binary(max_size=40), auth=st.binary(max_size=20))
def test_only_our_error_escapes(value: bytes, secret: bytes, auth: bytes) -> None:
    calls = (lambda: crypto.salt_decrypt(value, secret, auth),
             lambda: crypto.unhide_password(value, secret, auth),
             lambda: crypto.verify_message_authenticator(value, secret),
             lambda: crypto.verify_response_authenticator(value, auth, secret))
    for call in calls:
        with contextlib.suppress(PptpkitError):
            call()



def test_rfc2548_mppe_keys_from_freeradius_decrypt_to_the_rfc3079_keys() -> None:
    m = VectorFile("radius_rfc2548_mppe_keys.txt")
    k = VectorFile("rfc3079_mschapv2_keys.txt")
    secret, auth = m.s("secret").encode(), m.b("request_authenticator")
    send = crypto.salt_decrypt(m.b("ms_mppe_send_key"), secret, auth)
    recv = crypto.salt_decrypt(m.b("ms_mppe_recv_key"), secret, auth)
    assert send == k.b("send_start_key_128") and recv == k.b("recv_start_key_128")
    # And back: encrypting with the captured salt gives FreeRADIUS's bytes exactly.
    salt = m.b("ms_mppe_send_key")[:2]
    assert crypto.salt_encrypt(send, secret, auth, salt) == m.b("ms_mppe_send_key")
    from pptpkit.crypto import mschap

    nt = mschap.generate_nt_response(k.b("authenticator_challenge"), k.b("peer_challenge"),
                                     k.s("username"), k.s("password"))
    assert mschap.generate_authenticator_response(
        mschap.nt_password_hash(k.s("password")), nt, k.b("peer_challenge"),
        k.b("authenticator_challenge"), k.s("username")) == m.s("authenticator_response")
