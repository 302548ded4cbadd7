"""TUN offloads without I/O: the virtio-net header, TSO segmentation and GRO-style coalescing.

A TUN opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` prefixes every packet with a
``struct virtio_net_hdr`` (:class:`VnetHeader`).  In the read direction the local TCP stack then
hands us up to 64 KiB TCP super-segments plus packets whose checksum it left for us to finish:
:func:`segment` turns each into ordinary IP packets of at most the MSS.  In the write direction
:class:`Coalescer` merges consecutive segments of one TCP flow into one super-segment, so the
kernel runs its receive path once per batch instead of once per packet.

Checksums need the ones-complement sum of the payload's 16-bit words, modulo 0xFFFF.  The
compiled path (:mod:`pptpkit.speedups`) sums the words in C; the pure path uses one Python-level
trick: a buffer read as one big-endian integer is congruent, modulo 0xFFFF, to the sum of its
16-bit words (because 2**16 == 1 mod 0xFFFF), so ``int.from_bytes`` and one modulo do it.  Both
give a value congruent to the same sum (:func:`word_sum`), which is all the callers use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

from pptpkit.errors import DecodeError
from pptpkit.speedups import EXT

__all__ = [
    "MAX_QUEUE",
    "MAX_SEGMENTS",
    "VNET_HDR_SIZE",
    "ZERO_VNET_HDR",
    "Coalescer",
    "GsoType",
    "OffloadStats",
    "VnetFlags",
    "VnetHeader",
    "WriteUnit",
    "complete_checksum",
    "internet_checksum",
    "ones_sum",
    "segment",
    "word_sum",
    "word_sum_pure",
]


class VnetFlags(IntFlag):
    NEEDS_CSUM = 0x01
    DATA_VALID = 0x02


class GsoType(IntEnum):
    NONE = 0
    TCPV4 = 1
    UDP = 3
    TCPV6 = 4


_GSO_ECN: Final = 0x80
_NEEDS_CSUM: Final = 0x01

# Little-endian: TUN uses the host's order (x86, arm64 little-endian) unless TUNSETVNETBE is used,
# which we never do.
_VNET: Final = struct.Struct("<BBHHHH")
VNET_HDR_SIZE: Final = _VNET.size
ZERO_VNET_HDR: Final = bytes(VNET_HDR_SIZE)

#: At most this many segments from one super-segment (65535 octets at the kernel's 88-octet
#: minimum MSS is 745); a header asking for more is rejected instead of looping.
MAX_SEGMENTS: Final = 1024
#: A coalescing batch never exceeds the IPv4/IPv6 16-bit length fields.
_MAX_MERGED: Final = 65535
#: Packets a :class:`Coalescer` holds between flushes; feeding more flushes the caller's way
#: (``feed`` returns True when the cap is reached).
MAX_QUEUE: Final = 1024

_U16: Final = struct.Struct("!H")
# IPv6 + TCP header up to the TCP checksum, in the pieces segment() rewrites.
_SEG6: Final = struct.Struct("!4sH38sI5sB2sH")
_U32: Final = struct.Struct("!I")

_FIN: Final = 0x01
_PSH: Final = 0x08
_ACK: Final = 0x10
_CWR: Final = 0x80
_PROTO_TCP: Final = 6
_PROTO_UDP: Final = 17


@dataclass(frozen=True, slots=True, kw_only=True)
class VnetHeader:
    """``struct virtio_net_hdr`` (10 octets, host byte order)."""

    flags: int = 0
    gso_type: int = GsoType.NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def encode(self) -> bytes:
        try:
            return _VNET.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                              self.csum_start, self.csum_offset)
        except struct.error as exc:
            raise ValueError(f"virtio-net header field out of range: {exc}") from None

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        """The header at the start of ``data`` (the packet follows it)."""
        if len(data) < VNET_HDR_SIZE:
            raise DecodeError(f"virtio-net header needs {VNET_HDR_SIZE} octets, have {len(data)}")
        f, g, hl, gs, cs, co = _VNET.unpack_from(data, 0)
        return cls(flags=f, gso_type=g, hdr_len=hl, gso_size=gs, csum_start=cs, csum_offset=co)


@dataclass(slots=True)
class OffloadStats:
    """What the segmenter and coalescer did (all monotonic counters)."""

    gso_packets_in: int = 0  # super-segments read from the TUN
    segments_split: int = 0  # IP packets cut from them
    checksums_completed: int = 0  # non-GSO packets whose NEEDS_CSUM we finished
    unknown_gso_dropped: int = 0  # gso_type we do not segment (UFO, USO ...)
    malformed_dropped: int = 0  # a header/packet pair that does not parse
    coalesced_packets_out: int = 0  # super-segments handed to the kernel
    segments_merged: int = 0  # segments inside them
    bad_checksum_unmerged: int = 0  # TCP segments written alone because their checksum is wrong
    passthrough: int = 0  # packets written alone (non-TCP, not mergeable, singletons)


# -- checksums ------------------------------------------------------------------------------------


def word_sum_pure(data: bytes | bytearray | memoryview) -> int:
    """A non-negative integer congruent, mod 0xFFFF, to the sum of ``data``'s big-endian 16-bit
    words (an odd length padded with a zero octet); 0 only when every octet is 0."""
    v = int.from_bytes(data, "big")
    return v << 8 if len(data) & 1 else v


#: :func:`word_sum_pure`'s contract, in C when the extension is in use (its result is already
#: folded to 16 bits; the two differ in value, never modulo 0xFFFF or in being 0).
word_sum: Callable[[bytes | bytearray | memoryview], int] = EXT.csum if EXT is not None else word_sum_pure


def ones_sum(data: bytes | bytearray, initial: int = 0) -> int:
    """The folded 16-bit ones-complement sum of ``data`` plus ``initial``, in 0..0xFFFF.

    0 only when everything summed is zero; a non-zero total that folds to all ones is 0xFFFF.
    """
    v = word_sum(data) + initial
    s = v % 0xFFFF
    return 0xFFFF if s == 0 and v else s


def internet_checksum(data: bytes | bytearray, initial: int = 0) -> int:
    """The RFC 1071 checksum field value for ``data`` (with ``initial`` added to the sum)."""
    return 0xFFFF - ones_sum(data, initial)


def _fold(v: int) -> int:
    # v is a non-zero sum (every caller's includes a protocol number): 0 mod 0xFFFF is 0xFFFF.
    return v % 0xFFFF or 0xFFFF


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a NEEDS_CSUM packet: the field at ``csum_start + csum_offset`` holds the partial
    (pseudo-header) sum; store the complement of the sum over ``packet[csum_start:]`` there.

    A UDP checksum (offset 6) of 0 means "no checksum", so a computed 0 is sent as 0xFFFF.
    """
    where = csum_start + csum_offset
    if csum_start >= len(packet) or where + 2 > len(packet) or csum_start & 1:
        raise DecodeError(f"checksum start {csum_start}+{csum_offset} outside a {len(packet)}-octet packet")
    value = internet_checksum(packet[csum_start:])
    if value == 0 and csum_offset == 6:
        value = 0xFFFF
    return packet[:where] + _U16.pack(value) + packet[where + 2 :]


# -- TSO: one super-segment into MSS-sized packets ------------------------------------------------


def _tcp_layout(packet: bytes, v6: bool) -> tuple[int, int]:
    """(IP header length, IP+TCP header length) of a TCP packet; DecodeError if it has none."""
    n = len(packet)
    if v6:
        if n < 60 or packet[0] >> 4 != 6:
            raise DecodeError("not an IPv6 TCP packet")
        if packet[6] != _PROTO_TCP:
            raise DecodeError(f"IPv6 next header {packet[6]} is not TCP")
        iphl = 40
    else:
        if n < 40 or packet[0] >> 4 != 4:
            raise DecodeError("not an IPv4 TCP packet")
        iphl = (packet[0] & 0x0F) * 4
        if iphl < 20 or packet[9] != _PROTO_TCP:
            raise DecodeError("bad IPv4 header length or protocol")
    if iphl + 20 > n:
        raise DecodeError("TCP header truncated")
    hl = iphl + (packet[iphl + 12] >> 4) * 4
    if hl < iphl + 20 or hl > n:
        raise DecodeError("bad TCP data offset")
    return iphl, hl


def segment(hdr: VnetHeader, packet: bytes, stats: OffloadStats | None = None) -> list[bytes]:
    """The IP packets that ``packet`` (read after ``hdr``) stands for, checksums complete.

    A TCP super-segment is cut into ``gso_size`` payload pieces, each with its own IP and TCP
    header: IPv4 total length, ID (first + i) and header checksum, IPv6 payload length, TCP
    sequence number, flags (FIN and PSH only on the last, CWR only on the first) and a full TCP
    checksum.  A non-GSO packet with NEEDS_CSUM gets its checksum finished.  A gso_type we do not
    segment yields no packet (counted in ``unknown_gso_dropped``).  Malformed input raises
    :class:`DecodeError` (the caller counts it).
    """
    kind = hdr.gso_type & ~_GSO_ECN
    if kind == GsoType.NONE:
        if not packet:
            raise DecodeError("empty packet")
        if hdr.flags & _NEEDS_CSUM:
            packet = complete_checksum(packet, hdr.csum_start, hdr.csum_offset)
            if stats is not None:
                stats.checksums_completed += 1
        return [packet]
    if kind == GsoType.TCPV4:
        v6 = False
    elif kind == GsoType.TCPV6:
        v6 = True
    else:
        if stats is not None:
            stats.unknown_gso_dropped += 1
        return []
    mss = hdr.gso_size
    if mss == 0:
        raise DecodeError("GSO packet with gso_size 0")
    if hdr.hdr_len > len(packet):
        raise DecodeError(f"hdr_len {hdr.hdr_len} past the end of a {len(packet)}-octet packet")
    iphl, hl = _tcp_layout(packet, v6)
    total = len(packet) - hl
    if total <= 0:
        raise DecodeError("GSO packet without payload")
    if (total + mss - 1) // mss > MAX_SEGMENTS:
        raise DecodeError(f"GSO packet of {total} octets in {mss}-octet segments: too many")
    if not v6 and len(packet) > 65535:
        raise DecodeError("IPv4 packet longer than 65535 octets")
    if EXT is not None:
        # The loop below in C (pptpkit.speedups), segment for segment; the code below is its twin.
        out: list[bytes] = EXT.tso_split(packet, v6, iphl, hl, mss)
        if stats is not None:
            stats.gso_packets_in += 1
            stats.segments_split += len(out)
        return out
    return _split_pure(packet, v6, iphl, hl, mss, total, stats)


def _split_pure(packet: bytes, v6: bool, iphl: int, hl: int, mss: int, total: int,
                stats: OffloadStats | None) -> list[bytes]:
    # Every segment is summed from scratch (the kernel's partial checksum leaves out the
    # length): the sums of the fields that do not change are taken once, the per-segment ones
    # (lengths, IPv4 ID, sequence number, flags, payload) added as integers.
    tcp_off = iphl
    flags = packet[tcp_off + 13]
    first_flags = flags & ~(_FIN | _PSH)
    mid_flags = first_flags & ~_CWR
    last_flags = flags & ~_CWR
    seq = _U32.unpack_from(packet, tcp_off + 4)[0]
    tcphl = hl - iphl
    tail = packet[tcp_off + 18 : hl]  # urgent pointer and options
    # Ports, ack, data offset (flags byte zero), window, urgent pointer, options; the protocol.
    tcp_const = (int.from_bytes(packet[tcp_off : tcp_off + 4], "big")
                 + int.from_bytes(packet[tcp_off + 8 : tcp_off + 12], "big")
                 + (packet[tcp_off + 12] << 8)
                 + _U16.unpack_from(packet, tcp_off + 14)[0]
                 + int.from_bytes(tail, "big") + _PROTO_TCP)
    if v6:
        layout = _SEG6
        tcp_const += int.from_bytes(packet[8:40], "big")
        pre = packet[0:4]
        mid = packet[6 : tcp_off + 4]  # next header, hop limit, addresses, ports
    else:
        layout = struct.Struct(f"!2sHH4sH{8 + iphl - 20 + 4}sI5sB2sH")
        tcp_const += int.from_bytes(packet[12:20], "big")
        pre = packet[0:2]
        mid4 = packet[6:10]
        mid = packet[12 : tcp_off + 4]  # addresses, options, ports
        ident = _U16.unpack_from(packet, 4)[0]
        # Version/IHL/TOS, flags/fragment, TTL/protocol, addresses, options.
        ip_const = (int.from_bytes(pre, "big") + int.from_bytes(mid4, "big")
                    + int.from_bytes(packet[12:iphl], "big") + iphl)
    ack_doff = packet[tcp_off + 8 : tcp_off + 13]
    window = packet[tcp_off + 14 : tcp_off + 16]
    pack = layout.pack
    wsum = word_sum
    out: list[bytes] = []
    append = out.append
    nseg = (total + mss - 1) // mss
    last_i = nseg - 1
    off = hl
    for i in range(nseg):
        chunk = packet[off : off + mss]
        off += mss
        clen = len(chunk)
        f = first_flags if i == 0 else mid_flags
        if i == last_i:
            f = flags if i == 0 else last_flags
        sq = (seq + i * mss) & 0xFFFFFFFF
        tcp_len = tcphl + clen
        v = wsum(chunk)
        csum = 0xFFFF - ((tcp_const + tcp_len + (sq >> 16) + (sq & 0xFFFF) + f + v) % 0xFFFF or 0xFFFF)
        if v6:
            head = pack(pre, tcp_len, mid, sq, ack_doff, f, window, csum)
        else:
            idn = (ident + i) & 0xFFFF
            ipc = 0xFFFF - ((ip_const + tcp_len + idn) % 0xFFFF or 0xFFFF)
            head = pack(pre, iphl + tcp_len, idn, mid4, ipc, mid, sq, ack_doff, f, window, csum)
        append(b"".join((head, tail, chunk)))
    if stats is not None:
        stats.gso_packets_in += 1
        stats.segments_split += len(out)
    return out


# -- GRO: consecutive segments of one flow into one super-segment ---------------------------------

#: One write for the kernel: the encoded virtio-net header, the parts that follow it (write them
#: with one writev), and the original IP packets it carries (written one by one, each with
#: :data:`ZERO_VNET_HDR`, should the kernel refuse the merged packet).
WriteUnit = tuple[bytes, list[bytes], list[bytes]]


class _Batch:
    """An open run of one flow's segments; the reference slices are what a segment must match."""

    __slots__ = ("first", "hl", "ip_a", "ip_b", "iphl", "mss", "next_seq", "opts", "payloads",
                 "segments", "size", "tcp_ack", "tcp_psh", "v6")

    def __init__(self, first: bytes, v6: bool, iphl: int, hl: int, seq: int) -> None:
        self.first = first
        self.v6 = v6
        self.iphl = iphl
        self.hl = hl
        self.mss = len(first) - hl
        self.next_seq = (seq + self.mss) & 0xFFFFFFFF
        self.size = len(first)
        self.segments = [first]
        self.payloads: list[bytes] = []
        if v6:
            # Version, traffic class, flow label; next header and hop limit.
            self.ip_a = first[0:4]
            self.ip_b = first[6:8]
        else:
            # Version/IHL, TOS; DF, fragment offset, TTL, protocol.
            self.ip_a = first[0:2]
            self.ip_b = first[6:10]
        # Ack number, data offset, flags, window: as the first's, flags exactly ACK or ACK|PSH.
        ref = bytearray(first[iphl + 8 : iphl + 16])
        ref[5] = _ACK
        self.tcp_ack = bytes(ref)
        ref[5] = _ACK | _PSH
        self.tcp_psh = bytes(ref)
        self.opts = first[iphl + 20 : hl]


class Coalescer:
    """Queues IP packets bound for the kernel and merges TCP runs into super-segments.

    :meth:`feed` packets in arrival order, :meth:`flush` to get the :data:`WriteUnit` list to
    write, in order.  Within a flush, segments of one flow (addresses + ports) are merged while
    everything the kernel's own GRO requires holds: IPv4 without options or fragmentation / IPv6
    with TCP as next header; same TOS, DF and TTL / traffic class, flow label and hop limit;
    same ack number, window and option bytes (timestamps included); flags exactly ACK (ACK|PSH
    allowed, and it ends the batch); contiguous sequence numbers; every payload the size of the
    first (a shorter one ends the batch); at most 65535 octets; every segment's own IPv4 header
    and TCP checksums verified.  Everything else is written alone with an all-zero header, and a
    flow's packets never overtake each other.  At most :data:`MAX_QUEUE` packets are held.
    """

    __slots__ = ("_queue", "stats")

    def __init__(self, stats: OffloadStats | None = None) -> None:
        self._queue: list[bytes] = []
        self.stats = stats if stats is not None else OffloadStats()

    def __len__(self) -> int:
        return len(self._queue)

    def feed(self, packet: bytes) -> bool:
        """Queue one IP packet; True when the queue is full and must be flushed now."""
        q = self._queue
        q.append(packet)
        return len(q) >= MAX_QUEUE

    def feed_many(self, packets: list[bytes]) -> bool:
        """:meth:`feed` of each packet (bytes, in order) in one step; True when the queue is
        full and must be flushed now."""
        q = self._queue
        q.extend(packets)
        return len(q) >= MAX_QUEUE

    def clear(self) -> None:
        self._queue.clear()

    def flush(self) -> list[WriteUnit]:
        queue, self._queue = self._queue, []
        stats = self.stats
        if EXT is not None:
            # The same loop in C (pptpkit.speedups), rule for rule; the code below is its twin.
            units, bad, single, merged, segments = EXT.coalesce(queue, ZERO_VNET_HDR)
            stats.bad_checksum_unmerged += bad
            stats.passthrough += single
            stats.coalesced_packets_out += merged
            stats.segments_merged += segments
            out: list[WriteUnit] = units
            return out
        return self._flush_pure(queue, stats)

    def _flush_pure(self, queue: list[bytes], stats: OffloadStats) -> list[WriteUnit]:
        slots: list[_Batch | bytes] = []
        add_slot = slots.append
        flows: dict[bytes, _Batch] = {}
        from_bytes = int.from_bytes
        wsum = word_sum
        unpack32 = _U32.unpack_from
        bad = 0
        for p in queue:
            n = len(p)
            if n < 40:
                add_slot(p)
                continue
            b0 = p[0]
            if b0 == 0x45:
                # IPv4 without options, TCP, neither MF nor a fragment offset (DF is fine).
                if p[9] != _PROTO_TCP or (p[6] & 0x3F) or p[7] or (p[2] << 8 | p[3]) != n:
                    add_slot(p)
                    continue
                iphl = 20
                v6 = False
                key = p[12:24]
            elif b0 >> 4 == 6:
                if p[6] != _PROTO_TCP or n < 60 or (p[4] << 8 | p[5]) + 40 != n:
                    add_slot(p)
                    continue
                iphl = 40
                v6 = True
                key = p[8:44]
            else:
                add_slot(p)
                continue
            batch = flows.get(key)
            hl = iphl + (p[iphl + 12] >> 4) * 4
            fl = p[iphl + 13]
            if hl < iphl + 20 or hl >= n or (fl != _ACK and fl != _ACK | _PSH):
                # Not mergeable (no payload, other flags, bad offset): written alone, after
                # anything of its flow queued before it.
                if batch is not None:
                    del flows[key]
                add_slot(p)
                continue
            # Checksums.  A valid IPv4 header sums to 0 mod 0xFFFF, so the whole packet's sum is
            # then the TCP part's: one pass over the payload.
            whole = wsum(p)
            if v6:
                ok = (whole - from_bytes(p[0:8], "big") + (n - 40) + _PROTO_TCP) % 0xFFFF == 0
            else:
                ok = (from_bytes(p[0:20], "big") % 0xFFFF == 0
                      and (whole + from_bytes(p[12:20], "big") + (n - 20) + _PROTO_TCP) % 0xFFFF == 0)
            if not ok:
                bad += 1
                if batch is not None:
                    del flows[key]
                add_slot(p)
                continue
            seq = unpack32(p, iphl + 4)[0]
            if batch is not None:
                plen = n - hl
                mss = batch.mss
                if (seq == batch.next_seq and hl == batch.hl and plen <= mss
                        and batch.size + plen <= _MAX_MERGED
                        and (batch.ip_a == (p[0:4] if v6 else p[0:2]))
                        and batch.ip_b == (p[6:8] if v6 else p[6:10])
                        and (batch.tcp_ack == (t := p[iphl + 8 : iphl + 16]) or batch.tcp_psh == t)
                        and batch.opts == p[iphl + 20 : hl]):
                    batch.segments.append(p)
                    batch.payloads.append(p[hl:])
                    batch.size += plen
                    batch.next_seq = (seq + plen) & 0xFFFFFFFF
                    if fl != _ACK or plen < mss:
                        del flows[key]
                    continue
            batch = _Batch(p, v6, iphl, hl, seq)
            add_slot(batch)
            if fl == _ACK:
                flows[key] = batch
            else:
                flows.pop(key, None)
        stats.bad_checksum_unmerged += bad
        out: list[WriteUnit] = []
        emit = out.append
        single = 0
        for slot in slots:
            if type(slot) is bytes:
                single += 1
                one = [slot]
                emit((ZERO_VNET_HDR, one, one))
            elif len(slot.segments) == 1:  # type: ignore[union-attr]
                single += 1
                one = slot.segments  # type: ignore[union-attr]
                emit((ZERO_VNET_HDR, one, one))
            else:
                emit(self._merge(slot))  # type: ignore[arg-type]
        stats.passthrough += single
        return out

    def _merge(self, batch: _Batch) -> WriteUnit:
        first, iphl, hl = batch.first, batch.iphl, batch.hl
        head = bytearray(first[:hl])
        last = batch.segments[-1]
        head[iphl + 13] = last[iphl + 13]  # PSH of the last segment
        total = batch.size
        tcp_len = total - iphl
        if batch.v6:
            _U16.pack_into(head, 4, tcp_len)
            pseudo = int.from_bytes(first[8:40], "big") + _PROTO_TCP + tcp_len
        else:
            _U16.pack_into(head, 2, total)
            _U16.pack_into(head, 10, 0)
            _U16.pack_into(head, 10, 0xFFFF - _fold(int.from_bytes(head[:20], "big")))
            pseudo = int.from_bytes(first[12:20], "big") + _PROTO_TCP + tcp_len
        # CHECKSUM_PARTIAL convention: the field holds the folded pseudo-header sum, not
        # complemented; the kernel (or a NIC) adds the rest.
        _U16.pack_into(head, iphl + 16, _fold(pseudo))
        vnet = _VNET.pack(_NEEDS_CSUM, GsoType.TCPV6 if batch.v6 else GsoType.TCPV4, hl, batch.mss,
                          iphl, 16)
        stats = self.stats
        stats.coalesced_packets_out += 1
        stats.segments_merged += len(batch.segments)
        parts = [bytes(head), first[hl:]]
        parts += batch.payloads
        return (vnet, parts, batch.segments)
