"""RADIUS's own cryptography, as pure functions over bytes.

* RFC 2865 3 and 5.2: the Request/Response Authenticators and User-Password hiding (also the
  scheme of RFC 2548 2.4.1 MS-CHAP-MPPE-Keys).
* RFC 2866 3: the Accounting-Request Authenticator (and RFC 5176 3.5 for CoA/Disconnect).
* RFC 3579 3.2 (RFC 2869 5.14): Message-Authenticator, HMAC-MD5 over the whole packet.
* RFC 2548 2.4.2/2.4.3 (= RFC 2868 3.5): the salt scheme of MS-MPPE-Send-Key/Recv-Key and
  Tunnel-Password.

Why not pyrad's: its versions hang off a mutable ``Packet`` (the request authenticator, the
secret and the attribute order are instance state), raise ``Exception``/``PacketError``, and
re-encode the attributes instead of hashing the bytes that were received.  These work on the
exact received bytes, raise only :class:`RadiusCryptoError`, compare digests in constant time,
and are checked against the RFCs' own examples (tests/vectors/radius_*.txt).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from pptpkit.errors import DecodeError

__all__ = [
    "MESSAGE_AUTHENTICATOR_TYPE",
    "RadiusCryptoError",
    "accounting_request_authenticator",
    "hide_password",
    "message_authenticator",
    "response_authenticator",
    "salt_decrypt",
    "salt_encrypt",
    "unhide_password",
    "verify_message_authenticator",
    "verify_response_authenticator",
]

MESSAGE_AUTHENTICATOR_TYPE: Final = 80
_HEADER: Final = 20
_BLOCK: Final = 16
# RFC 2865 5.2: the hidden password is at most 128 octets.
_MAX_PASSWORD: Final = 128


class RadiusCryptoError(DecodeError):
    """An encrypted value or a packet that cannot be processed (wrong length, bad padding)."""


def _md5(*parts: bytes) -> bytes:
    h = hashlib.md5()
    for p in parts:
        h.update(p)
    return h.digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _need_authenticator(authenticator: bytes) -> None:
    if len(authenticator) != _BLOCK:
        raise RadiusCryptoError(f"an authenticator is 16 octets, not {len(authenticator)}")


# -- User-Password (RFC 2865 5.2) ------------------------------------------------------------


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """The hidden User-Password: ``password`` padded with zeros to a multiple of 16, each block
    XORed with MD5(secret + previous ciphertext block, the Request Authenticator first)."""
    _need_authenticator(authenticator)
    if len(password) > _MAX_PASSWORD:
        raise RadiusCryptoError(f"a User-Password is at most 128 octets, not {len(password)}")
    padded = password + b"\0" * (-len(password) % _BLOCK or (0 if password else _BLOCK))
    out = bytearray()
    last = authenticator
    for i in range(0, len(padded), _BLOCK):
        block = _xor(padded[i : i + _BLOCK], _md5(secret, last))
        out += block
        last = block
    return bytes(out)


def unhide_password(hidden: bytes, secret: bytes, authenticator: bytes, *, strip: bool = True) -> bytes:
    """The reverse of :func:`hide_password`; trailing zero padding is removed when ``strip``."""
    _need_authenticator(authenticator)
    if not hidden or len(hidden) % _BLOCK or len(hidden) > _MAX_PASSWORD:
        raise RadiusCryptoError(f"a hidden value is 16..128 octets in blocks of 16, not {len(hidden)}")
    out = bytearray()
    last = authenticator
    for i in range(0, len(hidden), _BLOCK):
        block = hidden[i : i + _BLOCK]
        out += _xor(block, _md5(secret, last))
        last = block
    return bytes(out).rstrip(b"\0") if strip else bytes(out)


# -- salt encryption (RFC 2548 2.4.2, RFC 2868 3.5) ------------------------------------------


def salt_encrypt(plain: bytes, secret: bytes, request_authenticator: bytes, salt: bytes) -> bytes:
    """Salt + the encrypted String (Key-Length, Key, zero padding).  ``salt`` is 2 octets with
    its top bit set (RFC 2548 requires it; the caller picks it unique per packet)."""
    _need_authenticator(request_authenticator)
    if len(salt) != 2 or not salt[0] & 0x80:
        raise RadiusCryptoError("a salt is 2 octets with the most significant bit set")
    if len(plain) > 239:
        # 1 length octet + key padded to 16 must fit a 253-octet attribute with the salt (and the
        # 6 octets of the vendor header leave 247 for the value).
        raise RadiusCryptoError(f"a salt-encrypted value is at most 239 octets, not {len(plain)}")
    padded = bytes([len(plain)]) + plain
    padded += b"\0" * (-len(padded) % _BLOCK)
    out = bytearray(salt)
    last = request_authenticator + salt
    for i in range(0, len(padded), _BLOCK):
        block = _xor(padded[i : i + _BLOCK], _md5(secret, last))
        out += block
        last = block
    return bytes(out)


def salt_decrypt(value: bytes, secret: bytes, request_authenticator: bytes) -> bytes:
    """The Key out of a salt-encrypted attribute value (salt included), checked: the salt's top
    bit, whole blocks, and a Key-Length that fits what was decrypted."""
    _need_authenticator(request_authenticator)
    if len(value) < 2 + _BLOCK or (len(value) - 2) % _BLOCK:
        raise RadiusCryptoError(f"a salt-encrypted value is 2 + 16*n octets, not {len(value)}")
    salt, cipher = value[:2], value[2:]
    if not salt[0] & 0x80:
        raise RadiusCryptoError("the salt's most significant bit is not set (RFC 2548 2.4.2)")
    plain = bytearray()
    last = request_authenticator + salt
    for i in range(0, len(cipher), _BLOCK):
        block = cipher[i : i + _BLOCK]
        plain += _xor(block, _md5(secret, last))
        last = block
    length = plain[0]
    if length > len(plain) - 1:
        # What a wrong secret looks like; never hand a truncated or garbage key on.
        raise RadiusCryptoError(f"Key-Length {length} exceeds the {len(plain) - 1} decrypted octets")
    return bytes(plain[1 : 1 + length])


# -- authenticators ---------------------------------------------------------------------------


def _check_packet(packet: bytes) -> None:
    if len(packet) < _HEADER:
        raise RadiusCryptoError(f"a RADIUS packet has at least 20 octets, not {len(packet)}")


def response_authenticator(packet: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """MD5(Code+ID+Length+RequestAuth+Attributes+Secret) (RFC 2865 3), over ``packet`` as sent
    (its own Authenticator field is ignored)."""
    _check_packet(packet)
    _need_authenticator(request_authenticator)
    return _md5(packet[:4], request_authenticator, packet[_HEADER:], secret)


def verify_response_authenticator(packet: bytes, request_authenticator: bytes, secret: bytes) -> bool:
    expected = response_authenticator(packet, request_authenticator, secret)
    return hmac.compare_digest(expected, packet[4:_HEADER])


def accounting_request_authenticator(packet: bytes, secret: bytes) -> bytes:
    """RFC 2866 3 (and RFC 5176 3.5): MD5 over the packet with a zero Authenticator field."""
    _check_packet(packet)
    return _md5(packet[:4], b"\0" * _BLOCK, packet[_HEADER:], secret)


def _find_message_authenticator(packet: bytes) -> int | None:
    """The offset of the Message-Authenticator value, None when absent; raises on a second one
    (RFC 3579 3.2 allows one) or a wrong length."""
    found: int | None = None
    pos = _HEADER
    while pos + 2 <= len(packet):
        kind, length = packet[pos], packet[pos + 1]
        if length < 2 or pos + length > len(packet):
            raise RadiusCryptoError(f"attribute at offset {pos} has a bad length {length}")
        if kind == MESSAGE_AUTHENTICATOR_TYPE:
            if length != 2 + _BLOCK:
                raise RadiusCryptoError(f"Message-Authenticator of length {length}, not 18")
            if found is not None:
                raise RadiusCryptoError("more than one Message-Authenticator")
            found = pos + 2
        pos += length
    if pos != len(packet):
        raise RadiusCryptoError("attributes run past the end of the packet")
    return found


def message_authenticator(packet: bytes, secret: bytes, authenticator: bytes | None = None) -> bytes:
    """HMAC-MD5 over ``packet`` with its Message-Authenticator value zeroed (RFC 3579 3.2).

    ``authenticator`` replaces the Authenticator field while hashing: the Request
    Authenticator of the request for a response, 16 zeros for Accounting-, CoA- and
    Disconnect-Requests; None keeps the packet's own (Access-Request, Status-Server).
    """
    _check_packet(packet)
    offset = _find_message_authenticator(packet)
    if offset is None:
        raise RadiusCryptoError("the packet has no Message-Authenticator")
    if authenticator is not None:
        _need_authenticator(authenticator)
        head = packet[:4] + authenticator
    else:
        head = packet[:_HEADER]
    zeroed = head + packet[_HEADER:offset] + b"\0" * _BLOCK + packet[offset + _BLOCK :]
    return hmac.new(secret, zeroed, hashlib.md5).digest()


def verify_message_authenticator(packet: bytes, secret: bytes, authenticator: bytes | None = None) -> bool:
    """Is the packet's Message-Authenticator right?  False when it has none."""
    _check_packet(packet)
    offset = _find_message_authenticator(packet)
    if offset is None:
        return False
    expected = message_authenticator(packet, secret, authenticator)
    return hmac.compare_digest(expected, packet[offset : offset + _BLOCK])
