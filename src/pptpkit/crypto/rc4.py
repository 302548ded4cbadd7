"""RC4 behind one small typed interface, with the fastest backend this machine has.

MPPE (RFC 3078) is RC4 run over every packet, and in stateless mode a key change (another RC4
run) before every packet too, so what RC4 costs per call decides MPPE's throughput.  The
transform in :mod:`pptpkit.crypto.mppe` knows only :class:`Rc4`: a keystream with ``set_key``
and ``crypt``, plus the three whole-packet operations MPPE needs, so that a backend can do each
with the fewest calls and copies.  Two backends implement it: OpenSSL's ``RC4_set_key``/``RC4``
through ctypes, used when libcrypto exports them and passes a known-answer check at import, and
pycryptodome's ARC4 otherwise.  The compiled backend (:mod:`pptpkit.speedups`, C, RC4 and SHA-1
written for it) drops in the same way (:data:`BACKENDS`) and is the default when it is built.

Stateless MPPE changes key before every packet (RFC 3078 7.1, RFC 3079 7.3: SHA-1 over the
start key and the current key, then RC4 of the result under itself), so besides the per-packet
RC4 operations each backend offers the key change itself (``change_key``) and the two
stateless packets whole (``rekey_seal``, ``rekey_unseal``; ``rekey_seal_many`` for a batch of
packets of one protocol, with consecutive coherency counts): the compiled backend does each in
one call, the Python ones (:class:`PacketOps`) compose them from their own ``next_key``,
``set_key``, ``seal`` and ``unseal``, which is the specification the compiled one is tested
against.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from Crypto.Cipher import ARC4

from pptpkit.speedups import EXT

__all__ = [
    "BACKENDS",
    "RC4_BACKEND",
    "Buffer",
    "OpenSslRc4",
    "PacketOps",
    "PyCryptodomeRc4",
    "Rc4",
    "Rc4Factory",
    "change_key",
    "mppe_body_at",
    "new_rc4",
    "split_protocol",
]

# Stateless MPPE runs RC4 twice per packet (the 16-octet key change, then the data), so the
# per-call overhead of the cipher wrapper dominates: pycryptodome's ARC4 class costs ~8 us per
# new key + 1400-octet packet through its ctypes glue, OpenSSL's RC4_set_key/RC4 called directly
# ~3 us, with no allocation per packet (one RC4_KEY per direction, reused).  OpenSSL is used when
# libcrypto exports them and passes a known-answer test at import; pycryptodome otherwise.
#
# Besides the plain ``set_key``/``crypt`` pair, each backend offers the three whole-packet
# operations the transform needs, so that the OpenSSL one can do each with the fewest foreign
# calls and copies: ``next_key`` (the RC4 step of a key change), ``seal`` (build a complete
# frame: caller's prefix, MPPE header, encrypted protocol + payload) and ``unseal`` (decrypt a
# body and split off the protocol).  ``seal``/``unseal`` work in place in one scratch buffer:
# the cleartext is copied in once, RC4 runs over it in place (OpenSSL allows in == out), and
# one slice of the buffer becomes the result.


Buffer = bytes | bytearray | memoryview


class Rc4(Protocol):
    """One RC4 keystream and the whole-packet operations MPPE needs (see the module docstring)."""

    def set_key(self, key: bytes, /) -> None: ...

    def crypt(self, data: bytes, /) -> bytes: ...

    def next_key(self, interim: bytes, /) -> bytes: ...

    def seal(self, prefix: bytes, head: int, protocol: int, payload: Buffer, /) -> bytes: ...

    def unseal(self, body: Buffer, /) -> tuple[int, bytes] | None: ...

    def change_key(self, start: bytes, key: bytes, salt: bytes, /) -> bytes: ...

    def rekey_seal(self, start: bytes, salt: bytes, key: bytes, prefix: bytes, head: int, protocol: int,
                   payload: Buffer, /) -> tuple[bytes, bytes]: ...

    def rekey_unseal(self, start: bytes, salt: bytes, key: bytes, body: Buffer, /
                     ) -> tuple[bytes, int, bytes] | None: ...

    def rekey_unseal_frame(self, start: bytes, salt: bytes, key: bytes, frame: Buffer, count: int, /
                           ) -> tuple[bytes, int, bytes] | None: ...

    def rekey_unseal_frames(self, start: bytes, salt: bytes, key: bytes, frames: Sequence[Buffer], count: int,
                            /) -> tuple[bytes, list[bytes], list[int], int, int]: ...
    def rekey_seal_many(self, start: bytes, salt: bytes, key: bytes, prefix: bytes, count: int, protocol: int,
                        payloads: Sequence[Buffer], /) -> tuple[bytes, list[bytes]]: ...


_SHA_PAD1: Final = b"\x00" * 40
_SHA_PAD2: Final = b"\xf2" * 40


def change_key(rc4: Rc4, start: bytes, key: bytes, salt: bytes) -> bytes:
    """The MPPE session key after ``key`` (RFC 3079 3.3 GetNewKeyFromSHA, then 7.3's RC4 step,
    then the 40/56-bit ``salt`` over the top octets); clobbers ``rc4``'s stream.

    ``start`` is the direction's start key, 8 or 16 octets, and ``key`` has its length.
    """
    if len(start) not in (8, 16) or len(key) != len(start) or len(salt) > len(start):
        raise ValueError("change_key: start key and key must be 8 or 16 octets alike")
    interim = hashlib.sha1(start + _SHA_PAD1 + key + _SHA_PAD2).digest()[: len(start)]
    new = rc4.next_key(interim)
    return salt + new[len(salt) :] if salt else new


class PacketOps:
    """The stateless whole-packet operations of :class:`Rc4`, composed from the basic ones."""

    __slots__ = ()

    def change_key(self: Rc4, start: bytes, key: bytes, salt: bytes, /) -> bytes:
        return change_key(self, start, key, salt)

    def rekey_seal(self: Rc4, start: bytes, salt: bytes, key: bytes, prefix: bytes, head: int, protocol: int,
                   payload: Buffer, /) -> tuple[bytes, bytes]:
        key = change_key(self, start, key, salt)
        self.set_key(key)
        return key, self.seal(prefix, head, protocol, payload)

    def rekey_unseal(self: Rc4, start: bytes, salt: bytes, key: bytes, body: Buffer, /
                     ) -> tuple[bytes, int, bytes] | None:
        key = change_key(self, start, key, salt)
        self.set_key(key)
        opened = self.unseal(body)
        return None if opened is None else (key, opened[0], opened[1])

    def rekey_unseal_frame(self: Rc4, start: bytes, salt: bytes, key: bytes, frame: Buffer, count: int, /
                           ) -> tuple[bytes, int, bytes] | None:
        if not 0 <= count <= 0x0FFF:
            raise ValueError("count must be 0..4095")
        at = mppe_body_at(frame, count)
        if at < 0:
            return None
        return self.rekey_unseal(start, salt, key, memoryview(frame)[at:])

    def rekey_unseal_frames(self: Rc4, start: bytes, salt: bytes, key: bytes, frames: Sequence[Buffer],
                            count: int, /) -> tuple[bytes, list[bytes], list[int], int, int]:
        """:meth:`rekey_unseal_frame` over the longest prefix of ``frames`` that opens, counts
        ``count``, ``count + 1``, ...: ``(key after the last frame taken, payloads, protocols,
        octets of the frames taken, octets of their payloads)``.  The receiver's batch entry
        point; the compiled backend runs the same loop in one call."""
        if not 0 <= count <= 0x0FFF:
            raise ValueError("count must be 0..4095")
        payloads: list[bytes] = []
        protocols: list[int] = []
        frame_octets = payload_octets = 0
        for frame in frames:
            opened = self.rekey_unseal_frame(start, salt, key, frame, count)
            if opened is None:
                break
            key, protocol, payload = opened
            protocols.append(protocol)
            payloads.append(payload)
            frame_octets += len(frame)
            payload_octets += len(payload)
            count = (count + 1) & 0x0FFF
        return key, payloads, protocols, frame_octets, payload_octets
    def rekey_seal_many(self: Rc4, start: bytes, salt: bytes, key: bytes, prefix: bytes, count: int,
                        protocol: int, payloads: Sequence[Buffer], /) -> tuple[bytes, list[bytes]]:
        # The stateless sender's batch: packet k is rekey_seal with count + k (12 bits) under
        # the key after packet k - 1's, FLUSHED and ENCRYPTED set.
        if not 0 <= count <= 0x0FFF:
            raise ValueError("count must be 0..4095")
        frames = []
        for k, payload in enumerate(payloads):
            key, frame = self.rekey_seal(start, salt, key, prefix, 0x9000 | ((count + k) & 0x0FFF), protocol,
                                         payload)
            frames.append(frame)
        return key, frames


#: What makes a fresh, unkeyed :class:`Rc4` (a backend class).
Rc4Factory = Callable[[], Rc4]


# RC4_KEY is {RC4_INT x, y; RC4_INT data[256]} with RC4_INT at most an unsigned int.
_RC4_KEY_SIZE: Final = 258 * 4
# Scratch, grown on demand: enough for a full-size packet on a 1500-octet link.
_SCRATCH_MIN: Final = 2048
# Where the RC4 region (protocol field on) starts in the scratch buffer; the MPPE header and
# the caller's frame prefix (at most address, control and a two-octet protocol) sit before it.
_RC4_AT: Final = 16
_MAX_PREFIX: Final = _RC4_AT - 2
# MPPE header (flags + count as two octets) and the always two-octet inner protocol.
_SEAL_HEAD: Final = struct.Struct("!HH")


def _load_libcrypto() -> ctypes.CDLL | None:
    names = [n for n in (ctypes.util.find_library("crypto"),) if n] + ["libcrypto.so.3", "libcrypto.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            set_key, rc4 = lib.RC4_set_key, lib.RC4
        except (OSError, AttributeError):
            continue
        # No argtypes on purpose: the per-argument from_param conversions cost ~200 ns per call.
        # Every call site passes only what converts exactly without them: ctypes buffers or
        # pointer objects for pointers, bytes for const pointers, small ints for lengths.
        set_key.restype = None
        rc4.restype = None
        return lib
    return None


class _Scratch:
    """Working memory for packet transforms: one per thread, shared by every session.

    Each transform copies its result out before returning, so nothing in here outlives a call;
    per session it would cost ~2.5 KiB for each direction of each active session.  Per thread,
    not per process, because ctypes releases the GIL during the RC4 call.
    """

    __slots__ = ("at", "buf", "kbuf", "mv")

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(_SCRATCH_MIN)
        self.mv = memoryview(self.buf).cast("B")
        # A prebuilt pointer to the RC4 region: no address arithmetic or conversion per call.
        self.at = ctypes.c_void_p(ctypes.addressof(self.buf) + _RC4_AT)
        self.kbuf = ctypes.create_string_buffer(16)

    def grow(self, size: int) -> memoryview:
        self.buf = ctypes.create_string_buffer(max(size, _SCRATCH_MIN))
        self.at = ctypes.c_void_p(ctypes.addressof(self.buf) + _RC4_AT)
        mv = self.mv = memoryview(self.buf).cast("B")
        return mv


_per_thread = threading.local()


def _scratch() -> _Scratch:
    try:
        scratch: _Scratch = _per_thread.scratch
    except AttributeError:
        scratch = _per_thread.scratch = _Scratch()
    return scratch


class OpenSslRc4(PacketOps):
    """One RC4 keystream in a private RC4_KEY; ``crypt`` continues the stream."""

    __slots__ = ("_ks",)

    def __init__(self) -> None:
        self._ks = ctypes.create_string_buffer(_RC4_KEY_SIZE)

    def set_key(self, key: bytes) -> None:
        _rc4_set_key(self._ks, len(key), key)

    def crypt(self, data: bytes) -> bytes:
        n = len(data)
        scratch = _scratch()
        mv = scratch.mv
        if n > len(mv):
            mv = scratch.grow(n)
        _rc4(self._ks, n, bytes(data), scratch.buf)
        return mv[:n].tobytes()

    def next_key(self, interim: bytes) -> bytes:
        ks = self._ks
        n = len(interim)
        kbuf = _scratch().kbuf
        _rc4_set_key(ks, n, interim)
        _rc4(ks, n, interim, kbuf)
        raw: bytes = kbuf.raw
        return raw if n == 16 else raw[:n]

    def seal(self, prefix: bytes, head: int, protocol: int, payload: Buffer) -> bytes:
        n = len(payload)
        start = _RC4_AT - 2 - len(prefix)
        end = _RC4_AT + 2 + n
        if start < 0:
            return prefix + self.seal(b"", head, protocol, payload)
        scratch = _scratch()
        mv = scratch.mv
        if end > len(mv):
            mv = scratch.grow(end)
        mv[start : _RC4_AT - 2] = prefix
        _SEAL_HEAD.pack_into(mv, _RC4_AT - 2, head, protocol)
        mv[_RC4_AT + 2 : end] = payload
        at = scratch.at
        _rc4(self._ks, n + 2, at, at)
        return mv[start:end].tobytes()

    def unseal(self, body: Buffer) -> tuple[int, bytes] | None:
        # The two header octets are copied along (one copy of the whole body, no slice of it)
        # and left out of the RC4 run.
        m = len(body) - 2
        end = _RC4_AT + m
        scratch = _scratch()
        mv = scratch.mv
        if end > len(mv):
            mv = scratch.grow(end)
        mv[_RC4_AT - 2 : end] = body
        at = scratch.at
        _rc4(self._ks, m, at, at)
        # The protocol field as _split_protocol reads it, without materialising the plaintext.
        p0 = mv[_RC4_AT]
        if p0 & 1:
            return p0, mv[_RC4_AT + 1 : end].tobytes()
        if m >= 2 and mv[_RC4_AT + 1] & 1:
            return (p0 << 8) | mv[_RC4_AT + 1], mv[_RC4_AT + 2 : end].tobytes()
        return None


class PyCryptodomeRc4(PacketOps):
    __slots__ = ("_cipher",)

    def __init__(self) -> None:
        self._cipher = ARC4.new(b"\0" * 16)

    def set_key(self, key: bytes) -> None:
        self._cipher = ARC4.new(key)

    def crypt(self, data: bytes) -> bytes:
        return self._cipher.encrypt(data)

    def next_key(self, interim: bytes) -> bytes:
        self._cipher = ARC4.new(interim)
        return self._cipher.encrypt(interim)

    def seal(self, prefix: bytes, head: int, protocol: int, payload: Buffer) -> bytes:
        return prefix + head.to_bytes(2, "big") + self._cipher.encrypt(bytes((0, protocol)) + payload)

    def unseal(self, body: Buffer) -> tuple[int, bytes] | None:
        return split_protocol(self._cipher.encrypt(bytes(body[2:])))


def _openssl_works() -> bool:
    # The RFC 6229 style check: a 5-octet key's first keystream octets, compared with
    # pycryptodome, on a fresh and on a continued stream, through every entry point.
    key = b"\x01\x02\x03\x04\x05"
    try:
        probe = OpenSslRc4()
        probe.set_key(key)
        first = probe.crypt(bytes(16)) + probe.crypt(bytes(3000))
        probe.set_key(key)
        sealed = probe.seal(b"\xff\x03\x00\xfd", 0x9001, 0x21, bytes(3000))
        interim = bytes(range(16))
        changed = probe.next_key(interim)
        probe.set_key(key)
        opened = probe.unseal(sealed[4:])
    except (OSError, ctypes.ArgumentError, ValueError, TypeError):
        return False
    stream = ARC4.new(key).encrypt(bytes(3016))
    return (
        first == stream
        and sealed == b"\xff\x03\x00\xfd\x90\x01" + ARC4.new(key).encrypt(b"\x00\x21" + bytes(3000))
        and changed == ARC4.new(interim).encrypt(interim)
        and opened == (0x21, bytes(3000))
    )


_libcrypto = _load_libcrypto()
_rc4_set_key: Any = _libcrypto.RC4_set_key if _libcrypto is not None else None
_rc4: Any = _libcrypto.RC4 if _libcrypto is not None else None
_OPENSSL: Final = _libcrypto is not None and _openssl_works()
#: Which RC4 implementation the transform uses ("compiled", "openssl" or "pycryptodome").
RC4_BACKEND: Final = "compiled" if EXT is not None else "openssl" if _OPENSSL else "pycryptodome"
#: The backends by name; :data:`RC4_BACKEND` names the default.
BACKENDS: Final[dict[str, Rc4Factory]] = {"pycryptodome": PyCryptodomeRc4}
if _OPENSSL:
    BACKENDS["openssl"] = OpenSslRc4
if EXT is not None:
    BACKENDS["compiled"] = EXT.Rc4


def new_rc4() -> Rc4:
    """A fresh keystream of the default backend (key it with ``set_key``)."""
    return BACKENDS[RC4_BACKEND]()




def mppe_body_at(frame: Buffer, count: int) -> int:
    """Where the MPPE body of ``frame`` starts when it is the stateless receiver's common case,
    else -1: a PPP frame of protocol 0x00FD (address and control optional, protocol compressed
    or not) whose MPPE header has FLUSHED and ENCRYPTED set, COMPRESSED clear, coherency count
    ``count``, and at least one octet after it.  The twin of the compiled ``rekey_unseal_frame``'s
    checks; anything else is for the general path (PPP decode, then the MPPE decryptor)."""
    n = len(frame)
    pos = 2 if n >= 2 and frame[0] == 0xFF and frame[1] == 0x03 else 0
    if pos < n and frame[pos] == 0xFD:
        pos += 1
    elif pos + 1 < n and frame[pos] == 0x00 and frame[pos + 1] == 0xFD:
        pos += 2
    else:
        return -1
    if n - pos < 3 or frame[pos] & 0xB0 != 0x90 or ((frame[pos] & 0x0F) << 8 | frame[pos + 1]) != count:
        return -1
    return pos


def split_protocol(plain: bytes) -> tuple[int, bytes] | None:
    """Protocol and payload of decrypted data; None when the protocol field is not valid.

    The sender may have compressed the protocol to one octet (PFC): an odd first octet is the
    whole protocol.  A two-octet protocol has an even first and an odd second octet (RFC 1661
    section 2); anything else means the data was decrypted with the wrong key.
    """
    p0 = plain[0]
    if p0 & 1:
        return p0, plain[1:]
    if len(plain) >= 2 and plain[1] & 1:
        return (p0 << 8) | plain[1], plain[2:]
    return None
