"""MS-CHAP primitives: RFC 2433 (MS-CHAPv1) and RFC 2759 (MS-CHAPv2).

Pure functions, bytes in and bytes out; the function names are the RFC pseudocode names in
snake_case.  Every function that needs the plaintext password has a ``*_from_hash`` twin (or
takes the hash directly) so that a server holding only NT hashes can authenticate users.

User names and passwords:

* ``username`` may be ``str`` (encoded as UTF-8) or ``bytes``; pass the exact bytes of the
  Name field when you have them, because the hash covers those bytes.
* passwords are ``str`` and are hashed as UTF-16LE, which is what Windows and pppd do (pppd
  zero-extends each byte, identical for ASCII and Latin-1 secrets).

MD4 and single-block DES, which a call setup needs a few of on each side, come from OpenSSL's
one-shot ``MD4()`` and ``DES_set_key_unchecked``/``DES_ecb_encrypt`` through ctypes when
libcrypto exports them and they pass a known-answer check at import (as RC4 does in
:mod:`pptpkit.crypto.rc4`), and from pycryptodome otherwise (:data:`HASH_BACKEND` says which).
The work is tiny; what a call costs is the wrapper around it: pycryptodome's ``DES.new`` and
``MD4.new`` build cipher and hash objects through several layers of Python glue (~7 and ~4 us
here), the direct calls take under 1 us each.  OpenSSL 3 keeps MD4 out of its default provider,
so ``hashlib`` has no MD4; the low-level functions are still exported.

Wrong-sized inputs raise :class:`CryptoInputError`, which is both a ``ValueError`` (it is a
caller bug when the caller validated the packet) and a :class:`~pptpkit.errors.DecodeError`
(so an engine that forgot to check a peer's field length still catches it at its input).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
from collections.abc import Callable
from typing import Any, Final

from Crypto.Cipher import ARC4, DES
from Crypto.Hash import MD4

from pptpkit.errors import DecodeError

__all__ = [
    "HASH_BACKEND",
    "MAX_PASSWORD_CHARS",
    "PW_BLOCK_SIZE",
    "CryptoInputError",
    "challenge_hash",
    "challenge_response",
    "check_authenticator_response",
    "decrypt_pw_block",
    "des_encrypt",
    "des_key_with_parity",
    "encrypt_pw_block_with_password_hash",
    "generate_authenticator_response",
    "generate_nt_response",
    "generate_nt_response_from_hash",
    "hash_nt_password_hash",
    "lm_challenge_response",
    "lm_challenge_response_from_hash",
    "lm_password_hash",
    "nt_challenge_response",
    "nt_challenge_response_from_hash",
    "nt_password_hash",
    "nt_password_hash_encrypted_with_block",
    "strip_domain",
    "verify_mschapv1_nt_response",
    "verify_nt_response",
]

#: RFC 2759 passwords are 0 to 256 Unicode characters (the size of the change-password block).
MAX_PASSWORD_CHARS: Final = 256
#: Size of the RFC 2759 section 8.9 datatype-PWBLOCK: 256 UTF-16 characters + a 4-octet length.
PW_BLOCK_SIZE: Final = 2 * MAX_PASSWORD_CHARS + 4

# Known plaintext of RFC 2433 A.3 DesHash(), used to derive the LAN Manager hash.
_LM_MAGIC: Final = b"KGS!@#$%"

# RFC 2759 section 8.7 constants; ASCII text, spelled out here for readability.
_AUTH_MAGIC1: Final = b"Magic server to client signing constant"
_AUTH_MAGIC2: Final = b"Pad to make it do more than one iteration"
assert len(_AUTH_MAGIC1) == 39 and len(_AUTH_MAGIC2) == 41


class CryptoInputError(DecodeError, ValueError):
    """An input a primitive cannot take: a challenge, hash or response of the wrong size, or a
    value out of range (such as a protocol MPPE does not encrypt)."""


def _need(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise CryptoInputError(f"{name} must be {size} octets, got {len(value)}")


def _user_bytes(username: str | bytes) -> bytes:
    return username.encode("utf-8") if isinstance(username, str) else bytes(username)


def strip_domain(username: str | bytes) -> bytes:
    """The user name as RFC 2759 ChallengeHash() wants it: everything after the last backslash.

    Windows peers present ``DOMAIN\\user``; only ``user`` enters the hash (pppd cuts at the last
    backslash too, so a name containing several still hashes the same on both ends).
    """
    raw = _user_bytes(username)
    cut = raw.rfind(b"\\")
    return raw if cut < 0 else raw[cut + 1 :]


# --------------------------------------------------------------------------------------------
# DES and hashes


def _pycryptodome_md4(data: bytes) -> bytes:
    return bytes(MD4.new(data).digest())


def _pycryptodome_des(key8: bytes, clear: bytes) -> bytes:
    return bytes(DES.new(key8, DES.MODE_ECB).encrypt(clear))


def _load_openssl() -> tuple[Any, Any, Any] | None:
    names = [n for n in (ctypes.util.find_library("crypto"),) if n] + ["libcrypto.so.3", "libcrypto.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            md4, set_key, ecb = lib.MD4, lib.DES_set_key_unchecked, lib.DES_ecb_encrypt
        except (OSError, AttributeError):
            continue
        # No argtypes, as in pptpkit.crypto.rc4: the call sites pass bytes for const pointers,
        # ctypes buffers for the others and a c_size_t for the one length.
        md4.restype = ctypes.c_void_p
        set_key.restype = None
        ecb.restype = None
        return md4, set_key, ecb
    return None


_OPENSSL_FUNCTIONS = _load_openssl()
# DES_key_schedule: 16 round keys of 8 octets.
_DES_SCHEDULE_SIZE: Final = 128


def _openssl_md4(data: bytes) -> bytes:
    assert _OPENSSL_FUNCTIONS is not None
    # Buffers per call, not per module: ctypes releases the GIL during the foreign call.
    digest = ctypes.create_string_buffer(16)
    _OPENSSL_FUNCTIONS[0](data, ctypes.c_size_t(len(data)), digest)
    return digest.raw


def _openssl_des(key8: bytes, clear: bytes) -> bytes:
    assert _OPENSSL_FUNCTIONS is not None
    _, set_key, ecb = _OPENSSL_FUNCTIONS
    schedule = ctypes.create_string_buffer(_DES_SCHEDULE_SIZE)
    out = ctypes.create_string_buffer(8)
    set_key(key8, schedule)
    ecb(clear, out, schedule, 1)  # 1: DES_ENCRYPT
    return out.raw


def _openssl_works() -> bool:
    """Known answers, checked against pycryptodome: MD4 of a few lengths (the empty input, an
    NT hash's 16 octets, more than one 64-octet block), DES under keys with and without parity."""
    if _OPENSSL_FUNCTIONS is None:
        return False
    try:
        for data in (b"", bytes(range(16)), "password".encode("utf-16-le") * 9):
            if _openssl_md4(data) != _pycryptodome_md4(data):
                return False
        for key8, clear in ((b"\x01\x23\x45\x67\x89\xab\xcd\xef", b"Now is t"),
                            (bytes(range(8)), bytes(8)), (b"\xff" * 8, b"\x80" * 8)):
            if _openssl_des(key8, clear) != _pycryptodome_des(key8, clear):
                return False
    except (OSError, ctypes.ArgumentError, ValueError, TypeError):
        return False
    return True


_OPENSSL: Final = _openssl_works()
#: Where MD4 and DES come from: ``"openssl"`` or ``"pycryptodome"``.
HASH_BACKEND: Final = "openssl" if _OPENSSL else "pycryptodome"
_md4: Final[Callable[[bytes], bytes]] = _openssl_md4 if _OPENSSL else _pycryptodome_md4
_des: Final[Callable[[bytes, bytes], bytes]] = _openssl_des if _OPENSSL else _pycryptodome_des


# Each 7-bit septet of a key shifted left, with the low bit set when the seven hold an even
# number of ones (odd parity).
_WITH_PARITY: Final = bytes((septet << 1) | ((septet.bit_count() & 1) ^ 1) for septet in range(128))


def des_key_with_parity(key7: bytes) -> bytes:
    """Spread a 7-octet (56-bit) key over 8 octets with odd parity in each low bit (RFC 2759 9.3).

    Both DES backends ignore the parity bits, but setting them keeps the key a valid DES key
    for strict engines and lets the RFC's key-generation example be checked directly.
    """
    _need("DES key", key7, 7)
    bits = int.from_bytes(key7, "big")
    t = _WITH_PARITY
    # Unrolled: three of these per MS-CHAP response, and a loop costs twice as much.
    return bytes((t[bits >> 49 & 0x7F], t[bits >> 42 & 0x7F], t[bits >> 35 & 0x7F], t[bits >> 28 & 0x7F],
                  t[bits >> 21 & 0x7F], t[bits >> 14 & 0x7F], t[bits >> 7 & 0x7F], t[bits & 0x7F]))


def des_encrypt(clear: bytes, key7: bytes) -> bytes:
    """RFC 2759 8.6 DesEncrypt(): one DES-ECB block under a 7-octet key."""
    _need("DES clear text", clear, 8)
    return _des(des_key_with_parity(key7), bytes(clear))


def nt_password_hash(password: str) -> bytes:
    """RFC 2759 8.3 NtPasswordHash(): MD4 of the UTF-16LE password, no terminator (16 octets)."""
    return _md4(password.encode("utf-16-le"))


def hash_nt_password_hash(password_hash: bytes) -> bytes:
    """RFC 2759 8.4 HashNtPasswordHash(): MD4 of the 16-octet NT hash."""
    _need("password hash", password_hash, 16)
    return _md4(bytes(password_hash))


def lm_password_hash(password: str) -> bytes:
    """RFC 2433 A.2 LmPasswordHash() (16 octets).

    The OEM character set is approximated by Latin-1 (unencodable characters become ``?``) and
    only ASCII letters are upper-cased, as the LM hash is defined over at most 14 single-byte
    characters; longer passwords are truncated to 14, which is what the algorithm can see.
    """
    raw = password.encode("latin-1", "replace").upper()[:14].ljust(14, b"\0")
    return des_encrypt(_LM_MAGIC, raw[:7]) + des_encrypt(_LM_MAGIC, raw[7:])


# --------------------------------------------------------------------------------------------
# Challenge/response (shared by v1 and v2)


def challenge_response(challenge: bytes, password_hash: bytes) -> bytes:
    """RFC 2759 8.5 / RFC 2433 A.7 ChallengeResponse(): three DES blocks (24 octets)."""
    _need("challenge", challenge, 8)
    _need("password hash", password_hash, 16)
    z = password_hash + b"\0\0\0\0\0"
    return des_encrypt(challenge, z[0:7]) + des_encrypt(challenge, z[7:14]) + des_encrypt(challenge, z[14:21])


def challenge_hash(peer_challenge: bytes, authenticator_challenge: bytes, username: str | bytes) -> bytes:
    """RFC 2759 8.2 ChallengeHash(): first 8 octets of SHA-1(peer, authenticator, user name).

    Any ``DOMAIN\\`` prefix is removed before hashing (see :func:`strip_domain`).
    """
    _need("peer challenge", peer_challenge, 16)
    _need("authenticator challenge", authenticator_challenge, 16)
    digest = hashlib.sha1(peer_challenge + authenticator_challenge + strip_domain(username)).digest()
    return digest[:8]


# --------------------------------------------------------------------------------------------
# MS-CHAPv2 (RFC 2759)


def generate_nt_response_from_hash(
    authenticator_challenge: bytes, peer_challenge: bytes, username: str | bytes, password_hash: bytes
) -> bytes:
    """GenerateNTResponse() for a caller that holds the NT password hash (24 octets)."""
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    return challenge_response(challenge, password_hash)


def generate_nt_response(
    authenticator_challenge: bytes, peer_challenge: bytes, username: str | bytes, password: str
) -> bytes:
    """RFC 2759 8.1 GenerateNTResponse() (24 octets)."""
    return generate_nt_response_from_hash(
        authenticator_challenge, peer_challenge, username, nt_password_hash(password)
    )


def verify_nt_response(
    authenticator_challenge: bytes,
    peer_challenge: bytes,
    username: str | bytes,
    password_hash: bytes,
    nt_response: bytes,
) -> bool:
    """Authenticator side: does the peer's NT-Response prove knowledge of the password?

    Constant-time comparison; a response of the wrong size is simply wrong.
    """
    expected = generate_nt_response_from_hash(
        authenticator_challenge, peer_challenge, username, password_hash
    )
    return hmac.compare_digest(expected, bytes(nt_response))


def generate_authenticator_response(
    password_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: str | bytes,
) -> str:
    """RFC 2759 8.7 GenerateAuthenticatorResponse() from the NT hash: ``"S="`` + 40 upper-case hex.

    Takes the NT hash rather than the password (the RFC hashes the password first), so servers
    storing only NT hashes can produce it; derive the hash with :func:`nt_password_hash`.
    """
    _need("NT-Response", nt_response, 24)
    password_hash_hash = hash_nt_password_hash(password_hash)
    digest = hashlib.sha1(password_hash_hash + nt_response + _AUTH_MAGIC1).digest()
    challenge = challenge_hash(peer_challenge, authenticator_challenge, username)
    digest = hashlib.sha1(digest + challenge + _AUTH_MAGIC2).digest()
    return "S=" + digest.hex().upper()


def check_authenticator_response(
    password_hash: bytes,
    nt_response: bytes,
    peer_challenge: bytes,
    authenticator_challenge: bytes,
    username: str | bytes,
    received: str | bytes,
) -> bool:
    """RFC 2759 8.8 CheckAuthenticatorResponse(): the peer checks the authenticator's ``S=`` value.

    ``received`` is the 42-character ``S=...`` field of the Success message; hex digits in either
    case are accepted (some servers send lower case).  The comparison is constant-time.
    """
    expected = generate_authenticator_response(
        password_hash, nt_response, peer_challenge, authenticator_challenge, username
    ).encode("ascii")
    got = received.encode("utf-8", "replace") if isinstance(received, str) else bytes(received)
    return hmac.compare_digest(expected, got.upper())


# --------------------------------------------------------------------------------------------
# MS-CHAPv1 (RFC 2433)


def nt_challenge_response_from_hash(challenge: bytes, password_hash: bytes) -> bytes:
    """NtChallengeResponse() for a caller holding the NT hash (24 octets)."""
    return challenge_response(challenge, password_hash)


def nt_challenge_response(challenge: bytes, password: str) -> bytes:
    """RFC 2433 A.5 NtChallengeResponse() (24 octets)."""
    return challenge_response(challenge, nt_password_hash(password))


def lm_challenge_response_from_hash(challenge: bytes, lm_hash: bytes) -> bytes:
    """LmChallengeResponse() for a caller holding the LAN Manager hash (24 octets)."""
    return challenge_response(challenge, lm_hash)


def lm_challenge_response(challenge: bytes, password: str) -> bytes:
    """RFC 2433 A.1 LmChallengeResponse() (24 octets); obsolete, for completeness only."""
    return challenge_response(challenge, lm_password_hash(password))


def verify_mschapv1_nt_response(challenge: bytes, password_hash: bytes, nt_response: bytes) -> bool:
    """Authenticator side of MS-CHAPv1: constant-time check of the peer's NT response."""
    return hmac.compare_digest(challenge_response(challenge, password_hash), bytes(nt_response))


# --------------------------------------------------------------------------------------------
# Change-password blocks (RFC 2759 8.9-8.13, also RFC 2433 version 2)


def encrypt_pw_block_with_password_hash(password: str, password_hash: bytes, filler: bytes) -> bytes:
    """RFC 2759 8.10 EncryptPwBlockWithPasswordHash() (516 octets).

    ``filler`` supplies the random octets the RFC fills the unused part of the block with; the
    caller draws them (``os.urandom(516)``) so that this function stays deterministic.
    """
    _need("password hash", password_hash, 16)
    _need("filler", filler, PW_BLOCK_SIZE)
    pw = password.encode("utf-16-le")
    if len(pw) > 2 * MAX_PASSWORD_CHARS:
        raise CryptoInputError(f"password longer than {MAX_PASSWORD_CHARS} UTF-16 units")
    offset = 2 * MAX_PASSWORD_CHARS - len(pw)
    clear = filler[:offset] + pw + len(pw).to_bytes(4, "little")
    return bytes(ARC4.new(password_hash).encrypt(clear))


def decrypt_pw_block(block: bytes, password_hash: bytes) -> str:
    """Authenticator side of 8.10: recover the new password from an encrypted PW block.

    Raises :class:`CryptoInputError` when the decrypted length field is impossible, which is what a
    block encrypted under a different (wrong old) password looks like.
    """
    _need("password block", block, PW_BLOCK_SIZE)
    _need("password hash", password_hash, 16)
    clear = ARC4.new(password_hash).decrypt(block)
    size = int.from_bytes(clear[-4:], "little")
    if size > 2 * MAX_PASSWORD_CHARS or size % 2:
        raise CryptoInputError(f"decrypted password length {size} is impossible")
    raw = clear[2 * MAX_PASSWORD_CHARS - size : 2 * MAX_PASSWORD_CHARS]
    try:
        return bytes(raw).decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise CryptoInputError("decrypted password is not valid UTF-16") from exc


def nt_password_hash_encrypted_with_block(password_hash: bytes, block: bytes) -> bytes:
    """RFC 2759 8.13 NtPasswordHashEncryptedWithBlock() (16 octets).

    With ``block`` = the new NT hash this is 8.12 OldNtPasswordHashEncryptedWithNewNtPasswordHash.
    """
    _need("password hash", password_hash, 16)
    _need("block", block, 16)
    return des_encrypt(password_hash[:8], block[0:7]) + des_encrypt(password_hash[8:], block[7:14])
