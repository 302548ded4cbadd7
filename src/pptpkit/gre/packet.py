"""Enhanced GRE (RFC 2637 section 4.1): the PPTP data channel's packet format.

Layout (all big-endian)::

    flags+version (16) | protocol 0x880B (16) | payload length (16) | call id (16)
    [sequence number (32), when S]  [acknowledgement number (32), when A]  payload

Only K, S and A may be set and the version must be 1; everything else in the first 16 bits
must be zero.  This module is on the per-packet path, so decoding is one or two
``struct.unpack_from`` calls plus a slice, and encoding is one ``Struct.pack`` plus a
concatenation; validation is a handful of integer comparisons.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pptpkit.errors import DecodeError

GRE_PROTOCOL_PPP: Final = 0x880B
GRE_VERSION_ENHANCED: Final = 1
IPPROTO_GRE: Final = 47

# Bit masks over the first 16 bits (bit 0 of the RFC drawing is the most significant bit).
FLAG_C: Final = 0x8000
FLAG_R: Final = 0x4000
FLAG_K: Final = 0x2000
FLAG_S: Final = 0x1000
FLAG_SSR: Final = 0x0800  # "s", strict source route
RECUR_MASK: Final = 0x0700
FLAG_A: Final = 0x0080
FLAGS_MASK: Final = 0x0078
VERSION_MASK: Final = 0x0007

MAX_PAYLOAD: Final = 0xFFFF
SEQ_MASK: Final = 0xFFFFFFFF

# The four possible first words of a packet we send.
W_DATA_ACK: Final = FLAG_K | FLAG_S | FLAG_A | GRE_VERSION_ENHANCED
W_DATA: Final = FLAG_K | FLAG_S | GRE_VERSION_ENHANCED
_W_ACK: Final = FLAG_K | FLAG_A | GRE_VERSION_ENHANCED
_W_NONE: Final = FLAG_K | GRE_VERSION_ENHANCED

BASE_HEADER: Final = struct.Struct("!HHHH")
_ONE_U32: Final = struct.Struct("!I")
_TWO_U32: Final = struct.Struct("!II")
HDR_SEQ_ACK: Final = struct.Struct("!HHHHII")
HDR_ONE: Final = struct.Struct("!HHHHI")

HEADER_MIN: Final = BASE_HEADER.size  # 8
HEADER_MAX: Final = HDR_SEQ_ACK.size  # 16

# The bits that the RFC requires to be zero in an enhanced GRE header.
_MUST_BE_ZERO: Final = FLAG_C | FLAG_R | FLAG_SSR | RECUR_MASK | FLAGS_MASK

_IPV4_MIN: Final = 20
_IPV4_FIXED: Final = struct.Struct("!BBHHHBBH4s4s")

Buffer = bytes | bytearray | memoryview


def data_header(call_id: int, n: int, seq: int, ack: int) -> bytes:
    """The header of a data packet of ``n`` octets numbered ``seq`` (``ack`` < 0: no ack
    field), as :meth:`~pptpkit.gre.call.GreCall.send_run` numbers a batch: the pure twin of the
    headers the compiled ``send_gre_many`` builds."""
    if ack >= 0:
        return HDR_SEQ_ACK.pack(W_DATA_ACK, GRE_PROTOCOL_PPP, n, call_id, seq & SEQ_MASK, ack)
    return HDR_ONE.pack(W_DATA, GRE_PROTOCOL_PPP, n, call_id, seq & SEQ_MASK)


def encode_gre(call_id: int, payload: Buffer, seq: int | None, ack: int | None) -> bytes:
    """One enhanced GRE packet as bytes, without building a :class:`GrePacket`.

    ``call_id`` is the *peer's* call ID (the one it told us in its call message).  ``seq`` must
    be given when ``payload`` is non-empty.  Raises ``ValueError`` for values that cannot be
    represented, which is a bug in the caller, never something a peer can cause.
    """
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"GRE payload of {n} bytes exceeds {MAX_PAYLOAD}")
    try:
        if seq is not None:
            if ack is not None:
                return HDR_SEQ_ACK.pack(W_DATA_ACK, GRE_PROTOCOL_PPP, n, call_id, seq, ack) + payload
            return HDR_ONE.pack(W_DATA, GRE_PROTOCOL_PPP, n, call_id, seq) + payload
        if n:
            raise ValueError("a GRE packet with a payload needs a sequence number")
        if ack is not None:
            return HDR_ONE.pack(_W_ACK, GRE_PROTOCOL_PPP, 0, call_id, ack)
        return BASE_HEADER.pack(_W_NONE, GRE_PROTOCOL_PPP, 0, call_id)
    except struct.error as exc:
        raise ValueError(f"GRE field out of range: {exc}") from None


@dataclass(frozen=True, slots=True)
class GrePacket:
    """A decoded enhanced GRE packet.

    ``seq`` is None for an acknowledgement-only packet (S clear); ``ack`` is None when the A
    bit is clear.  A packet with a payload always has a ``seq``.
    """

    call_id: int
    payload: bytes = b""
    seq: int | None = None
    ack: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.call_id <= 0xFFFF:
            raise ValueError(f"call id {self.call_id} out of range")
        if self.seq is not None and not 0 <= self.seq <= SEQ_MASK:
            raise ValueError(f"sequence number {self.seq} out of range")
        if self.ack is not None and not 0 <= self.ack <= SEQ_MASK:
            raise ValueError(f"acknowledgement number {self.ack} out of range")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        if self.payload and self.seq is None:
            raise ValueError("a GRE packet with a payload needs a sequence number")

    @property
    def is_data(self) -> bool:
        return self.seq is not None

    def encode(self) -> bytes:
        return encode_gre(self.call_id, self.payload, self.seq, self.ack)

    @classmethod
    def decode(cls, data: Buffer) -> GrePacket:
        """Parse one packet; every inconsistency raises :class:`DecodeError`.

        The whole of ``data`` must be the packet: the payload length in the key has to match
        the bytes after the header exactly (a raw socket hands over exactly the IP payload, so
        any difference means a broken or forged packet).
        """
        total = len(data)
        if total < HEADER_MIN:
            raise DecodeError(f"GRE packet truncated: {total} bytes, header needs {HEADER_MIN}")
        word, proto, length, call_id = BASE_HEADER.unpack_from(data, 0)
        if word & VERSION_MASK != GRE_VERSION_ENHANCED:
            raise DecodeError(f"GRE version {word & VERSION_MASK}, expected 1 (enhanced GRE)")
        if proto != GRE_PROTOCOL_PPP:
            raise DecodeError(f"GRE protocol type {proto:#06x}, expected 0x880b (PPP)")
        if not word & FLAG_K:
            raise DecodeError("GRE key bit (K) clear: no payload length and call id")
        if word & _MUST_BE_ZERO:
            _raise_must_be_zero(word)
        seq: int | None = None
        ack: int | None = None
        if word & FLAG_S:
            if word & FLAG_A:
                if total < 16:
                    raise DecodeError(f"GRE packet truncated: {total} bytes, S and A header needs 16")
                seq, ack = _TWO_U32.unpack_from(data, 8)
                hdr = 16
            else:
                if total < 12:
                    raise DecodeError(f"GRE packet truncated: {total} bytes, S header needs 12")
                (seq,) = _ONE_U32.unpack_from(data, 8)
                hdr = 12
        elif word & FLAG_A:
            if total < 12:
                raise DecodeError(f"GRE packet truncated: {total} bytes, A header needs 12")
            (ack,) = _ONE_U32.unpack_from(data, 8)
            hdr = 12
        else:
            hdr = 8
        if total - hdr != length:
            raise DecodeError(
                f"GRE payload length {length} does not match the {total - hdr} bytes after the header"
            )
        if length and seq is None:
            raise DecodeError("GRE payload without a sequence number (S clear)")
        # Fields are in range by construction, so skip __post_init__'s checks on this hot path.
        pkt = object.__new__(cls)
        _set = object.__setattr__
        _set(pkt, "call_id", call_id)
        _set(pkt, "payload", bytes(data[hdr:]))
        _set(pkt, "seq", seq)
        _set(pkt, "ack", ack)
        return pkt


def _raise_must_be_zero(word: int) -> None:
    if word & FLAG_C:
        raise DecodeError("GRE checksum-present bit (C) set")
    if word & FLAG_R:
        raise DecodeError("GRE routing-present bit (R) set")
    if word & FLAG_SSR:
        raise DecodeError("GRE strict-source-route bit (s) set")
    if word & RECUR_MASK:
        raise DecodeError(f"GRE recursion control {(word & RECUR_MASK) >> 8} is not zero")
    raise DecodeError(f"GRE reserved flags {(word & FLAGS_MASK) >> 3:#x} are not zero")


def strip_ipv4_header(data: Buffer) -> tuple[str, memoryview]:
    """Split a datagram from a raw ``IPPROTO_GRE`` socket into (source address, GRE bytes).

    Linux delivers the whole IPv4 header (already reassembled) in front of the GRE packet, with
    the total length in network order.  The GRE bytes are a view into ``data`` (no copy); the
    source address is dotted-quad text, as ``recvfrom`` would report it.
    """
    n = len(data)
    if n < _IPV4_MIN:
        raise DecodeError(f"IPv4 header truncated: {n} bytes")
    vihl, _tos, total_len, _ident, frag, _ttl, proto, _csum, src, _dst = _IPV4_FIXED.unpack_from(data, 0)
    if vihl >> 4 != 4:
        raise DecodeError(f"IP version {vihl >> 4}, expected 4")
    ihl = (vihl & 0x0F) * 4
    if ihl < _IPV4_MIN:
        raise DecodeError(f"IPv4 header length {ihl} below 20")
    if total_len < ihl:
        raise DecodeError(f"IPv4 total length {total_len} smaller than its header ({ihl})")
    if total_len > n:
        raise DecodeError(f"IPv4 packet truncated: total length {total_len}, have {n} bytes")
    if proto != IPPROTO_GRE:
        raise DecodeError(f"IP protocol {proto}, expected 47 (GRE)")
    if frag & 0x3FFF:
        # A raw socket sees reassembled datagrams; a fragment here cannot be parsed as GRE.
        raise DecodeError("IPv4 fragment (MF set or non-zero offset)")
    view = memoryview(data).cast("B")
    return socket.inet_ntoa(src), view[ihl:total_len]


def data_run(packets: Sequence[Buffer], call_id: int, seq: int, acked: int, window: int
             ) -> tuple[list[bytes], list[int], int]:
    """The receiver's in-order run, parsed: the longest prefix of ``packets`` that are data
    packets (S set, A optional, nothing else, version 1, protocol PPP) of ``call_id``, with a
    matching length field, more than 16 octets in all, numbered ``seq``, ``seq + 1``, ... (mod
    2**32).  Returns their payloads (copies), the ack numbers of those that carry one (in
    order), and how many are numbered more than ``window`` past ``acked`` (serially; ``acked``
    negative: none).  :meth:`pptpkit.gre.call.GreCall.receive_run` builds on it; the compiled
    ``gre_data_run`` (:mod:`pptpkit.speedups`) is its twin."""
    payloads: list[bytes] = []
    acks: list[int] = []
    overruns = 0
    for data in packets:
        n = len(data)
        if n <= 16:
            break
        word = data[0] << 8 | data[1]
        if word == W_DATA_ACK:
            _w, proto, length, cid, got, ack = HDR_SEQ_ACK.unpack_from(data)
            hdr = 16
        elif word == W_DATA:
            _w, proto, length, cid, got = HDR_ONE.unpack_from(data)
            hdr = 12
        else:
            break
        if proto != GRE_PROTOCOL_PPP or length != n - hdr or cid != call_id or got != seq:
            break
        if acked >= 0 and window < (seq - acked) & SEQ_MASK < 0x80000000:
            overruns += 1
        payloads.append(bytes(data[hdr:]))
        if hdr == 16:
            acks.append(ack)
        seq = (seq + 1) & SEQ_MASK
    return payloads, acks, overruns
