"""MPPE: key derivation (RFC 3079) and the packet transform (RFC 3078).

Key derivation is a set of pure functions.  The transform is one sans-IO object per direction:
:class:`MppeEncryptor` turns a PPP protocol number + payload into the body of a protocol-0x00FD
frame, :class:`MppeDecryptor` does the reverse, keeping the RC4 state, coherency count and key
changes in step with the peer.

Wire format of the body (RFC 3078 section 3.1)::

    | A B C D | coherency count (12 bits) | RC4( protocol (2 octets) + payload ) |

A = FLUSHED (RC4 tables re-initialised before this packet), C = MPPC-compressed (never
negotiated here, so rejected), D = encrypted (must be set).

Interoperability notes, checked against the Linux kernel's ppp_mppe (what the real pppd uses)
and FreeBSD's ng_mppc:

* The initial session key is GetNewKeyFromSHA(start, start) reduced to 40/56 bits, without the
  RC4 step that later key changes have (RFC 3079's sample keys confirm it).
* Coherency counts start at 0.  In stateless mode the first packet is already encrypted under
  the first *changed* key (a key change precedes every packet, RFC 3078 7.1); in stateful mode
  packet 0 uses the initial session key and the first packet does not carry FLUSHED (Linux
  would re-key on it).
* Stateful "flag" packets are those whose count has low octet 0xFF (RFC 3078 7.2); the key
  changes *before* the flag packet is encrypted.  We also set FLUSHED on flag packets, which
  Linux requires and which RFC-style receivers treat as a no-op.
* What FLUSHED means in stateful mode differs between implementations.  RFC 3078 8.2 (and
  FreeBSD): on a CCP Reset-Request the sender re-initialises RC4 with the *current* session key.
  Linux: the sender performs a full key change, and a receiver performs a key change on every
  FLUSHED packet.  The two do not interoperate after a reset, so this is configurable
  (:attr:`MppeConfig.flushed_means_rekey`); the default follows Linux because the real pppd peer
  runs on Linux.  pppd negotiates stateless mode by default, where both agree.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from Crypto.Cipher import ARC4

from pptpkit.crypto.mschap import CryptoInputError, hash_nt_password_hash
from pptpkit.crypto.rc4 import RC4_BACKEND, Buffer, Rc4, Rc4Factory, new_rc4
from pptpkit.errors import ConfigError

__all__ = [
    "BIT_COMPRESSED",
    "BIT_ENCRYPTED",
    "BIT_FLUSHED",
    "BIT_RESTART",
    "COHERENCY_MODULUS",
    "KEY_BITS",
    "MAX_STATELESS_JUMP",
    "MPPE_OVERHEAD",
    "RC4_BACKEND",
    "Buffer",
    "DropReason",
    "MppeConfig",
    "MppeDecryptor",
    "MppeEncryptor",
    "MppeStats",
    "change_key",
    "get_asymmetric_start_key",
    "get_master_key",
    "get_new_key_from_sha",
    "get_start_key",
    "initial_session_key",
    "is_encryptable_protocol",
    "key_length",
    "mschapv1_lm_start_key",
    "mschapv1_start_key",
    "mschapv1_start_key_from_hash",
    "mschapv2_start_keys",
    "reduce_key",
]

# Header bits (top nibble of the first octet).
BIT_FLUSHED: Final = 0x80  # "A"
BIT_RESTART: Final = 0x40  # "B", MPPC history restart; meaningless for MPPE
BIT_COMPRESSED: Final = 0x20  # "C"
BIT_ENCRYPTED: Final = 0x10  # "D"

COHERENCY_MODULUS: Final = 0x1000
_CC_MASK: Final = 0x0FFF
#: Octets MPPE adds to a PPP payload: its 2-octet header plus the always-uncompressed protocol.
MPPE_OVERHEAD: Final = 4
#: Stateless receivers follow the count forward by at most this many steps; a bigger distance is
#: a late, replayed or forged packet (half the 12-bit space, as Linux decides).
MAX_STATELESS_JUMP: Final = COHERENCY_MODULUS // 2 - 1

KEY_BITS: Final = (40, 56, 128)

_SHA_PAD1: Final = b"\x00" * 40
_SHA_PAD2: Final = b"\xf2" * 40
# RFC 3079 3.4 magic strings (ASCII, spelled out for readability).
_MAGIC1: Final = b"This is the MPPE Master Key"
_MAGIC2: Final = b"On the client side, this is the send key; on the server side, it is the receive key."
_MAGIC3: Final = b"On the client side, this is the receive key; on the server side, it is the send key."
assert len(_MAGIC1) == 27 and len(_MAGIC2) == 84 and len(_MAGIC3) == 84

# Octets that replace the top of a 64-bit key to weaken it to 40 or 56 effective bits.
_SALT: Final = {40: b"\xd1\x26\x9e", 56: b"\xd1", 128: b""}


def key_length(key_bits: int) -> int:
    """Session key length in octets: 8 for 40- and 56-bit keys, 16 for 128-bit keys."""
    if key_bits not in _SALT:
        raise CryptoInputError(f"MPPE key bits must be one of {KEY_BITS}, not {key_bits}")
    return 16 if key_bits == 128 else 8


def _need(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise CryptoInputError(f"{name} must be {size} octets, got {len(value)}")


def _start_key(start_key: bytes, key_bits: int) -> bytes:
    n = key_length(key_bits)
    # A 16-octet start key may be used for a 64-bit session key: every derivation here produces
    # the shorter key as the prefix of the longer one, and pppd hands the kernel 16 octets.
    if len(start_key) not in (n, 16):
        raise CryptoInputError(f"{key_bits}-bit MPPE needs a {n}-octet start key, got {len(start_key)}")
    return bytes(start_key[:n])


# --------------------------------------------------------------------------------------------
# Key changes (RFC 3078 7.3, RFC 3079 2.4)


def get_new_key_from_sha(start_key: bytes, session_key: bytes, key_length: int) -> bytes:
    """GetNewKeyFromSHA() / Get_Key(): SHA-1(start, pad1, session, pad2), first ``key_length`` octets."""
    if key_length not in (8, 16):
        raise CryptoInputError(f"MPPE key length must be 8 or 16 octets, not {key_length}")
    _need("start key", start_key[:key_length], key_length)
    _need("session key", session_key[:key_length], key_length)
    digest = hashlib.sha1(start_key[:key_length] + _SHA_PAD1 + session_key[:key_length] + _SHA_PAD2).digest()
    return digest[:key_length]


def reduce_key(key: bytes, key_bits: int) -> bytes:
    """Weaken a 64-bit key to 40 bits (first octets D1 26 9E) or 56 bits (first octet D1)."""
    n = key_length(key_bits)
    _need("session key", key, n)
    salt = _SALT[key_bits]
    return salt + bytes(key[len(salt) :])


def initial_session_key(start_key: bytes, key_bits: int) -> bytes:
    """The first session key of a direction: GetNewKeyFromSHA(start, start), reduced.

    No RC4 step here, unlike :func:`change_key` (RFC 3079 sections 2 and 3; Linux does the same).
    """
    start = _start_key(start_key, key_bits)
    return reduce_key(get_new_key_from_sha(start, start, len(start)), key_bits)


def change_key(start_key: bytes, session_key: bytes, key_bits: int) -> bytes:
    """RFC 3078 7.3 key change: interim key from SHA-1, encrypted with RC4 keyed by itself, reduced."""
    start = _start_key(start_key, key_bits)
    n = len(start)
    _need("session key", session_key, n)
    interim = get_new_key_from_sha(start, session_key, n)
    return reduce_key(ARC4.new(interim).encrypt(interim), key_bits)


# --------------------------------------------------------------------------------------------
# MS-CHAPv2 keys (RFC 3079 section 3)


def get_master_key(password_hash_hash: bytes, nt_response: bytes) -> bytes:
    """GetMasterKey(): first 16 octets of SHA-1(hash-hash, NT-Response, Magic1)."""
    _need("password hash hash", password_hash_hash, 16)
    _need("NT-Response", nt_response, 24)
    return hashlib.sha1(password_hash_hash + nt_response + _MAGIC1).digest()[:16]


def get_asymmetric_start_key(master_key: bytes, key_length: int, is_send: bool, is_server: bool) -> bytes:
    """GetAsymmetricStartKey(): the start key of one direction, ``key_length`` (8 or 16) octets.

    The client's send key is the server's receive key and vice versa.
    """
    _need("master key", master_key, 16)
    if key_length not in (8, 16):
        raise CryptoInputError(f"MPPE key length must be 8 or 16 octets, not {key_length}")
    magic = _MAGIC3 if is_send == is_server else _MAGIC2
    return hashlib.sha1(master_key + _SHA_PAD1 + magic + _SHA_PAD2).digest()[:key_length]


def mschapv2_start_keys(
    password_hash_hash: bytes, nt_response: bytes, *, is_server: bool, key_bits: int
) -> tuple[bytes, bytes]:
    """``(send_start_key, receive_start_key)`` for this end after MS-CHAPv2.

    ``password_hash_hash`` is MD4(MD4(UTF-16LE password)) of the authenticating peer,
    ``nt_response`` the 24-octet NT-Response of the *first* successful Response.  Feed the
    results to :class:`MppeConfig` ``start_key``.
    """
    n = key_length(key_bits)
    master = get_master_key(password_hash_hash, nt_response)
    return (
        get_asymmetric_start_key(master, n, True, is_server),
        get_asymmetric_start_key(master, n, False, is_server),
    )


# --------------------------------------------------------------------------------------------
# MS-CHAPv1 keys (RFC 3079 section 2)


def get_start_key(challenge: bytes, password_hash_hash: bytes) -> bytes:
    """RFC 3079 2.4 Get_Start_Key(): first 16 octets of SHA-1(hash-hash, hash-hash, challenge)."""
    _need("challenge", challenge, 8)
    _need("password hash hash", password_hash_hash, 16)
    return hashlib.sha1(password_hash_hash + password_hash_hash + challenge).digest()[:16]


def mschapv1_start_key(password_hash_hash: bytes, challenge: bytes, key_bits: int) -> bytes:
    """Start key after MS-CHAPv1, the same in both directions.

    ``challenge`` is the authenticator's 8-octet Challenge.  This is the NT-hash route that the
    RFC describes for 128-bit keys; pppd uses it for *every* key length (its 40-bit key is the
    first 8 octets of the same digest), so we do too, which keeps 40-bit MS-CHAPv1 links
    interoperable with pppd.  The RFC's LAN Manager route for 40/56 bits is
    :func:`mschapv1_lm_start_key`.
    """
    return get_start_key(challenge, password_hash_hash)[: key_length(key_bits)]


def mschapv1_start_key_from_hash(password_hash: bytes, challenge: bytes, key_bits: int) -> bytes:
    """:func:`mschapv1_start_key` from the NT hash instead of the hash of the hash."""
    return mschapv1_start_key(hash_nt_password_hash(password_hash), challenge, key_bits)


def mschapv1_lm_start_key(lm_hash: bytes, key_bits: int) -> bytes:
    """RFC 3079 2.1/2.2 start key for 40/56-bit keys: the first 8 octets of the LM hash.

    Only for peers that really use the LAN Manager route; pppd and Linux do not.
    """
    _need("LM password hash", lm_hash, 16)
    if key_bits not in (40, 56):
        raise CryptoInputError("the LAN Manager route only defines 40- and 56-bit keys")
    return bytes(lm_hash[:8])


def is_encryptable_protocol(protocol: int) -> bool:
    """RFC 3078 3: only protocols 0x0021-0x00FA go through MPPE; others are sent in the clear."""
    return 0x0021 <= protocol <= 0x00FA


# --------------------------------------------------------------------------------------------
# RC4 for the per-packet path
#
# The RC4 backends (OpenSSL through ctypes, or pycryptodome) are in :mod:`pptpkit.crypto.rc4`.


# --------------------------------------------------------------------------------------------
# The transform


@dataclass(frozen=True, kw_only=True, slots=True)
class MppeConfig:
    """One direction of MPPE as CCP negotiated it.

    ``start_key``: the direction's start ("master") key, 8 octets for 40/56-bit or 16 octets
    (a 16-octet key is accepted for 40/56-bit too and its first 8 octets used).
    ``stateless``: the H bit was negotiated (key change on every packet).
    ``flushed_means_rekey``: stateful mode only; see the module notes (True = Linux behaviour).
    ``max_stateless_jump``: decryptor only; largest forward step of the coherency count a
    stateless receiver follows (each step costs one key change).  ``rc4``: the RC4 backend
    (:data:`pptpkit.crypto.rc4.BACKENDS`; None: the fastest this machine has).
    """

    start_key: bytes
    key_bits: int = 128
    stateless: bool = True
    flushed_means_rekey: bool = True
    max_stateless_jump: int = MAX_STATELESS_JUMP
    rc4: Rc4Factory | None = None

    def __post_init__(self) -> None:
        if self.key_bits not in KEY_BITS:
            raise ConfigError(f"MPPE key_bits must be one of {KEY_BITS}, not {self.key_bits}")
        n = 16 if self.key_bits == 128 else 8
        if not isinstance(self.start_key, bytes) or len(self.start_key) not in (n, 16):
            raise ConfigError(f"{self.key_bits}-bit MPPE needs an {n}-octet start key")
        if not 1 <= self.max_stateless_jump <= MAX_STATELESS_JUMP:
            raise ConfigError(f"max_stateless_jump must be 1..{MAX_STATELESS_JUMP}")


class DropReason(enum.Enum):
    """Why :meth:`MppeDecryptor.decrypt` returned None (also counted in :class:`MppeStats`)."""

    SHORT = "shorter than header + protocol"
    NOT_ENCRYPTED = "D bit clear"
    COMPRESSED = "C bit set (MPPC not negotiated)"
    NOT_FLUSHED = "stateless packet without FLUSHED"
    LATE = "coherency count behind or too far ahead (stateless)"
    LOSS = "coherency count gap (stateful); reset requested"
    DISCARDING = "waiting for a FLUSHED packet after loss (stateful)"
    BAD_PROTOCOL = "decrypted protocol field is not a valid PPP protocol"


@dataclass(slots=True)
class MppeStats:
    """Counters of one direction.

    ``packets``/``octets``: packets and payload octets encrypted or successfully decrypted.
    ``rekeys``: key changes performed.  ``flushed``: packets sent/accepted with FLUSHED.
    ``resets``: encryptor - Reset-Requests honoured (:meth:`MppeEncryptor.reset`);
    decryptor - Reset-Requests asked for.  ``lost``: coherency-count steps never received.
    ``discarded``: packets dropped while re-synchronising (stateful), the one that revealed the
    loss included.  ``late``: stateless packets behind the count or too far ahead.
    ``malformed``: bad header, bad protocol field, missing FLUSHED in stateless mode.
    """

    packets: int = 0
    octets: int = 0
    rekeys: int = 0
    flushed: int = 0
    resets: int = 0
    lost: int = 0
    discarded: int = 0
    late: int = 0
    malformed: int = 0


class _Keys:
    """Session-key state of one direction, shared by the encryptor and decryptor.

    ``rc4`` doubles as the scratch cipher of a key change: a key change is always followed by
    ``rc4.set_key(new key)`` (or by a stateless packet that sets its own key), so the stream it
    overwrites is never needed again.
    """

    __slots__ = ("key", "rc4", "salt", "start", "stats")

    def __init__(self, config: MppeConfig, stats: MppeStats) -> None:
        # The key change is the backend's (one compiled call, or hashlib + RC4 in Python): it
        # needs only the start key and the salt, two shared immutable bytes objects per
        # direction, where a prepared SHA-1 state would cost a hash object per direction.
        self.start = start = _start_key(config.start_key, config.key_bits)
        self.salt = _SALT[config.key_bits]
        self.key = initial_session_key(start, config.key_bits)
        self.rc4: Rc4 = (config.rc4 or new_rc4)()
        self.rc4.set_key(self.key)
        self.stats = stats

    def next_after(self, key: bytes) -> bytes:
        return self.rc4.change_key(self.start, key, self.salt)

    def derive(self, steps: int) -> bytes:
        """The session key ``steps`` key changes ahead, without moving to it (clobbers ``rc4``)."""
        key = self.key
        for _ in range(steps):
            key = self.next_after(key)
        return key

    def rekey(self, steps: int = 1) -> None:
        self.key = key = self.derive(steps)
        self.rc4.set_key(key)
        self.stats.rekeys += steps

    def reinit(self) -> None:
        self.rc4.set_key(self.key)


class MppeEncryptor:
    """Sender side of one MPPE direction.

    ``encrypt(protocol, payload)`` returns the body of a PPP frame of protocol 0x00FD.  Call
    :meth:`reset` when a CCP Reset-Request arrives (stateful mode; harmless in stateless mode).
    """

    __slots__ = ("_cc", "_flush_pending", "_keys", "_rekey_on_flush", "_stateless", "stats")

    def __init__(self, config: MppeConfig) -> None:
        self.stats = MppeStats()
        self._keys = _Keys(config, self.stats)
        self._stateless = config.stateless
        self._rekey_on_flush = config.flushed_means_rekey
        self._cc = _CC_MASK  # so that the first packet carries count 0
        self._flush_pending = False

    @property
    def coherency_count(self) -> int:
        """Count of the last packet sent (4095 before the first)."""
        return self._cc

    @property
    def session_key(self) -> bytes:
        return self._keys.key

    def reset(self) -> None:
        """A CCP Reset-Request arrived: the next packet carries FLUSHED from fresh RC4 tables.

        Repeated calls before the next packet count once (the peer cannot tell how many
        Reset-Requests reached us, only whether the next packet is flushed).
        """
        if self._stateless:
            return
        if not self._flush_pending:
            self.stats.resets += 1
        self._flush_pending = True

    def encrypt(self, protocol: int, payload: bytes | bytearray | memoryview) -> bytes:
        """The body of a protocol-0x00FD frame carrying ``payload`` of ``protocol``."""
        return self.encrypt_frame(b"", protocol, payload)

    def encrypt_frame(self, prefix: bytes, protocol: int, payload: bytes | bytearray | memoryview) -> bytes:
        """``prefix + encrypt(protocol, payload)``, built in one piece.

        ``prefix`` is the PPP frame header in front of the MPPE body (address, control and the
        protocol 0x00FD, compressed or not); the per-packet path uses this to avoid copying the
        packet once more for the concatenation.
        """
        if not 0x0021 <= protocol <= 0x00FA:
            raise CryptoInputError(f"protocol 0x{protocol:04x} is not one MPPE encrypts (0x0021-0x00FA)")
        cc = (self._cc + 1) & _CC_MASK
        self._cc = cc
        keys = self._keys
        stats = self.stats
        if self._stateless:
            # The per-packet case: key change and packet in one backend call.
            stats.rekeys += 1
            stats.flushed += 1
            stats.packets += 1
            stats.octets += len(payload)
            head = ((BIT_ENCRYPTED | BIT_FLUSHED) << 8) | cc
            keys.key, frame = keys.rc4.rekey_seal(keys.start, keys.salt, keys.key, prefix, head, protocol,
                                                   payload)
            return frame
        bits = BIT_ENCRYPTED
        if (cc & 0xFF) == 0xFF:
            key = keys.key = keys.next_after(keys.key)
            keys.rc4.set_key(key)
            self.stats.rekeys += 1
            bits = BIT_ENCRYPTED | BIT_FLUSHED
        elif self._flush_pending:
            if self._rekey_on_flush:
                keys.rekey()
            else:
                keys.reinit()
            bits = BIT_ENCRYPTED | BIT_FLUSHED
        self._flush_pending = False
        stats.packets += 1
        stats.octets += len(payload)
        if bits & BIT_FLUSHED:
            stats.flushed += 1
        return keys.rc4.seal(prefix, (bits << 8) | cc, protocol, payload)

    def encrypt_frames(self, prefix: bytes, protocol: int, payloads: Sequence[Buffer]) -> list[bytes]:
        """:meth:`encrypt_frame` of each payload in turn (all of one ``protocol``), with the
        same frames, counts, key and counters as those calls.  Stateless: the whole batch in
        one backend call (``rekey_seal_many``, consecutive coherency counts); stateful: the
        per-packet calls, since flag packets and flushes may fall anywhere in the batch."""
        if not self._stateless:
            return [self.encrypt_frame(prefix, protocol, payload) for payload in payloads]
        if not 0x0021 <= protocol <= 0x00FA:
            raise CryptoInputError(f"protocol 0x{protocol:04x} is not one MPPE encrypts (0x0021-0x00FA)")
        n = len(payloads)
        if not n:
            return []
        keys = self._keys
        cc = (self._cc + 1) & _CC_MASK
        keys.key, frames = keys.rc4.rekey_seal_many(keys.start, keys.salt, keys.key, prefix, cc, protocol,
                                                    payloads)
        self._cc = (cc + n - 1) & _CC_MASK
        stats = self.stats
        stats.rekeys += n
        stats.flushed += n
        stats.packets += n
        stats.octets += sum(map(len, payloads))
        return frames


class MppeDecryptor:
    """Receiver side of one MPPE direction.

    ``decrypt(body)`` takes the body of a protocol-0x00FD frame and returns ``(protocol,
    payload)`` or None when the packet is dropped (counted in :attr:`stats`, reason in
    :attr:`last_drop`).  It never raises on peer input.

    Stateful mode: after a loss :attr:`reset_requested` becomes True; the CCP layer sends a
    Reset-Request when :meth:`take_reset_request` returns True and retransmits it per RFC 1962
    until a Reset-Ack arrives (pppd acks every Reset-Request and its kernel changes key once per
    ack, so with ``flushed_means_rekey`` a retransmission after the ack, or a lost FLUSHED
    answer, costs synchronisation exactly as it does between two Linux peers; RFC mode is immune).
    :attr:`discarding` says whether we are still waiting for the FLUSHED packet.
    """

    __slots__ = (
        "_discarding",
        "_expected",
        "_keys",
        "_max_jump",
        "_rekey_on_flush",
        "_reset_requested",
        "_stateless",
        "last_drop",
        "stats",
    )

    def __init__(self, config: MppeConfig) -> None:
        self.stats = MppeStats()
        self._keys = _Keys(config, self.stats)
        self._stateless = config.stateless
        self._rekey_on_flush = config.flushed_means_rekey
        self._max_jump = config.max_stateless_jump
        self._expected = 0
        self._discarding = False
        self._reset_requested = False
        self.last_drop: DropReason | None = None

    @property
    def discarding(self) -> bool:
        """Stateful: packets are being discarded until one with FLUSHED arrives."""
        return self._discarding

    @property
    def reset_requested(self) -> bool:
        return self._reset_requested

    def take_reset_request(self) -> bool:
        """True once per detected loss: time to send a CCP Reset-Request."""
        pending = self._reset_requested
        self._reset_requested = False
        return pending

    @property
    def expected_count(self) -> int:
        """Coherency count the next in-sequence packet should carry."""
        return self._expected

    @property
    def session_key(self) -> bytes:
        return self._keys.key

    def _drop(self, reason: DropReason) -> None:
        self.last_drop = reason
        stats = self.stats
        if reason is DropReason.LATE:
            stats.late += 1
        elif reason is DropReason.LOSS or reason is DropReason.DISCARDING:
            stats.discarded += 1
        else:
            stats.malformed += 1

    @property
    def stateless(self) -> bool:
        return self._stateless

    def open_frame(self, frame: bytes | bytearray | memoryview) -> tuple[int, bytes] | None:
        """The stateless receiver's common case straight from the whole PPP frame: protocol
        0x00FD, FLUSHED + ENCRYPTED, the count expected next, a valid protocol inside.  One
        backend call (``rekey_unseal_frame``) parses, changes key and decrypts; the result and
        every counter are what :func:`~pptpkit.ppp.frame.decode_frame` + :meth:`decrypt` give.
        None for anything else, with nothing changed: the caller then takes that general path,
        which decides (and counts) the packet.  Stateful receivers always get None."""
        if not self._stateless:
            return None
        keys = self._keys
        opened = keys.rc4.rekey_unseal_frame(keys.start, keys.salt, keys.key, frame, self._expected)
        if opened is None:
            return None
        keys.key, protocol, payload = opened
        stats = self.stats
        stats.rekeys += 1
        stats.flushed += 1
        stats.packets += 1
        stats.octets += len(payload)
        self._expected = (self._expected + 1) & _CC_MASK
        return protocol, payload

    def open_frames(self, frames: Sequence[bytes | bytearray | memoryview]
                    ) -> tuple[list[bytes], list[int], int, int]:
        """:meth:`open_frame` over a run of frames, in one backend call
        (``rekey_unseal_frames``): ``(payloads, protocols, frame octets, payload octets)`` of
        the longest prefix that :meth:`open_frame` would open one by one, with the same state
        changes and counters; the frame after it (if any) is the caller's, untouched, for the
        per-frame path.  Stateful receivers take nothing."""
        if not self._stateless:
            return [], [], 0, 0
        keys = self._keys
        key, payloads, protocols, frame_octets, payload_octets = keys.rc4.rekey_unseal_frames(
            keys.start, keys.salt, keys.key, frames, self._expected)
        k = len(payloads)
        if k:
            keys.key = key
            stats = self.stats
            stats.rekeys += k
            stats.flushed += k
            stats.packets += k
            stats.octets += payload_octets
            self._expected = (self._expected + k) & _CC_MASK
        return payloads, protocols, frame_octets, payload_octets

    def decrypt(self, body: bytes | bytearray | memoryview) -> tuple[int, bytes] | None:
        if len(body) < 3:
            self._drop(DropReason.SHORT)
            return None
        b0 = body[0]
        if not b0 & BIT_ENCRYPTED:
            self._drop(DropReason.NOT_ENCRYPTED)
            return None
        if b0 & BIT_COMPRESSED:
            self._drop(DropReason.COMPRESSED)
            return None
        cc = ((b0 & 0x0F) << 8) | body[1]
        flushed = b0 & BIT_FLUSHED
        keys = self._keys
        stats = self.stats

        if self._stateless:
            if not flushed:
                self._drop(DropReason.NOT_FLUSHED)
                return None
            steps = (cc - self._expected + 1) & _CC_MASK
            if steps == 0 or steps > self._max_jump:
                # Behind us (late, reordered or replayed): its key is gone.  Too far ahead: a
                # forged count would cost thousands of key changes and desynchronise us.
                self._drop(DropReason.LATE)
                return None
            # Nothing is committed until the packet proves the key right, so a corrupted or
            # forged count that decrypts to garbage does not drag the receiver ahead.
            rc4 = keys.rc4
            if steps == 1:
                # The per-packet case: key change and packet in one backend call.
                opened = rc4.rekey_unseal(keys.start, keys.salt, keys.key, body)
                if opened is None:
                    self._drop(DropReason.BAD_PROTOCOL)
                    return None
                keys.key, protocol, payload = opened
                result: tuple[int, bytes] = (protocol, payload)
            else:
                key = keys.derive(steps)
                rc4.set_key(key)
                unsealed = rc4.unseal(body)
                if unsealed is None:
                    self._drop(DropReason.BAD_PROTOCOL)
                    return None
                result = unsealed
                keys.key = key
            stats.rekeys += steps
            stats.lost += steps - 1
            stats.flushed += 1
            self._expected = (cc + 1) & _CC_MASK
        else:
            expected = self._expected
            if flushed:
                gap = (cc - expected) & _CC_MASK
                if gap and not self._discarding:
                    stats.lost += gap
                # The sender changed key at every flag packet we missed (counts in
                # [expected, cc) whose low octet is 0xFF).
                missed_flags = ((expected & 0xFF) + gap) >> 8
                flag = (cc & 0xFF) == 0xFF
                if self._rekey_on_flush:
                    keys.rekey(missed_flags + 1)
                elif missed_flags or flag:
                    keys.rekey(missed_flags + flag)
                else:
                    keys.reinit()
                self._discarding = False
            elif self._discarding:
                self._drop(DropReason.DISCARDING)
                return None
            elif cc != expected:
                stats.lost += (cc - expected) & _CC_MASK
                self._lose_sync(DropReason.LOSS)
                return None
            elif (cc & 0xFF) == 0xFF:
                # A flag packet without FLUSHED (Linux would call it a bogon); the sender still
                # changed key before it, so follow.
                keys.rekey()
            self._expected = (cc + 1) & _CC_MASK
            unsealed = keys.rc4.unseal(body)
            if unsealed is None:
                # Garbage: the RC4 state no longer matches the sender's, so resynchronise.
                self._lose_sync(DropReason.BAD_PROTOCOL)
                return None
            result = unsealed
            if flushed:
                stats.flushed += 1
        stats.packets += 1
        stats.octets += len(result[1])
        return result

    def _lose_sync(self, reason: DropReason) -> None:
        self._drop(reason)
        self._discarding = True
        self._reset_requested = True
        self.stats.resets += 1
