"""pptpkit.io.offload: virtio-net header, checksums, TSO segmentation, GRO-style coalescing."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.io.offload import (
    MAX_QUEUE,
    VNET_HDR_SIZE,
    ZERO_VNET_HDR,
    Coalescer,
    GsoType,
    OffloadStats,
    VnetFlags,
    VnetHeader,
    complete_checksum,
    internet_checksum,
    ones_sum,
    segment,
)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
SRC4, DST4 = ipaddress.IPv4Address("192.0.2.1").packed, ipaddress.IPv4Address("198.51.100.7").packed
SRC6 = ipaddress.IPv6Address("2001:db8::1").packed
DST6 = ipaddress.IPv6Address("2001:db8:ffff::42").packed
TS_OPTS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)


# -- reference implementations (plain word loops, nothing shared with the code under test) ------


def ref_sum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_sum(data, initial) & 0xFFFF


def ip_ok(pkt: bytes) -> bool:
    return pkt[0] >> 4 == 6 or ref_sum(pkt[: (pkt[0] & 15) * 4]) == 0xFFFF


def tcp_ok(pkt: bytes) -> bool:
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(pkt) - ihl)
        return ref_sum(pseudo + pkt[ihl:]) == 0xFFFF
    pseudo = pkt[8:40] + struct.pack("!IxxxB", len(pkt) - 40, 6)
    return ref_sum(pseudo + pkt[40:]) == 0xFFFF


def tcp_header(seq: int, flags: int, *, ack: int = 777, window: int = 501, opts: bytes = TS_OPTS,
               sport: int = 40000, dport: int = 5001) -> bytes:
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + opts


def finish_tcp(ip: bytes, tcp: bytes, payload: bytes, v6: bool) -> bytes:
    seg = tcp + payload
    if v6:
        pseudo = ip[8:40] + struct.pack("!IxxxB", len(seg), 6)
    else:
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    c = ref_checksum(pseudo + seg)
    return ip + seg[:16] + struct.pack("!H", c) + seg[18:]


def ipv4(payload_len: int, *, ident: int = 100, ttl: int = 64, tos: int = 0, df: bool = True,
         proto: int = 6, src: bytes = SRC4, dst: bytes = DST4) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + payload_len, ident, 0x4000 if df else 0, ttl,
                    proto, 0, src, dst)
    return h[:10] + struct.pack("!H", ref_checksum(h)) + h[12:]


def ipv6(payload_len: int, *, hop: int = 64, tc: int = 0, nh: int = 6, src: bytes = SRC6,
         dst: bytes = DST6) -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (tc << 20) | 0x12345, payload_len, nh, hop, src, dst)


def tcp4(seq: int, payload: bytes, flags: int = ACK, *, ident: int = 100, **kw: int | bytes) -> bytes:
    tcp = tcp_header(seq, flags, **kw)  # type: ignore[arg-type]
    return finish_tcp(ipv4(len(tcp) + len(payload), ident=ident), tcp, payload, False)


def tcp6(seq: int, payload: bytes, flags: int = ACK, **kw: int | bytes) -> bytes:
    tcp = tcp_header(seq, flags, **kw)  # type: ignore[arg-type]
    return finish_tcp(ipv6(len(tcp) + len(payload)), tcp, payload, True)


def gso_packet(v6: bool, payload: bytes, flags: int, seq: int = 1_000_000) -> bytes:
    # As the kernel hands it over: lengths of the whole super-segment, a partial checksum.
    tcp = tcp_header(seq, flags)
    ip = ipv6(len(tcp) + len(payload)) if v6 else ipv4(len(tcp) + len(payload), ident=65520)
    return ip + tcp[:16] + b"\x12\x34" + tcp[18:] + payload


def pattern(n: int) -> bytes:
    return bytes((i * 7 + (i >> 8)) & 0xFF for i in range(n))


# -- checksums ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFFF))
def test_checksum_matches_reference(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == ref_sum(data, initial)
    assert internet_checksum(data, initial) == ref_checksum(data, initial)


def test_checksum_edge_cases() -> None:
    assert ones_sum(b"") == 0 and internet_checksum(b"") == 0xFFFF
    assert ones_sum(b"\0\0\0") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF and internet_checksum(b"\xff\xff") == 0
    assert ones_sum(b"\x01") == 0x0100
    assert ones_sum(b"\xff\xfe\x00\x01") == 0xFFFF


# -- virtio-net header ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_vnet_header_round_trip(f: int, g: int, hl: int, gs: int, cs: int, co: int) -> None:
    h = VnetHeader(flags=f, gso_type=g, hdr_len=hl, gso_size=gs, csum_start=cs, csum_offset=co)
    raw = h.encode()
    assert len(raw) == VNET_HDR_SIZE == 10
    assert VnetHeader.decode(raw + b"packet") == h
    # Host (little-endian) order, as TUN uses without TUNSETVNETBE.
    assert raw == struct.pack("<BBHHHH", f, g, hl, gs, cs, co)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=9))
def test_vnet_header_short(data: bytes) -> None:
    with pytest.raises(DecodeError):
        VnetHeader.decode(data)


def test_vnet_header_out_of_range() -> None:
    with pytest.raises(ValueError):
        VnetHeader(gso_size=0x10000).encode()
    assert VnetHeader().encode() == ZERO_VNET_HDR


# -- TSO ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True])
def test_segment_64k_super_segment(v6: bool) -> None:
    mss = 1448
    hl = (40 if v6 else 20) + 32
    payload = pattern(65535 - hl - (40 if v6 else 0))
    pkt = gso_packet(v6, payload, ACK | PSH | FIN | CWR)
    hdr = VnetHeader(flags=VnetFlags.NEEDS_CSUM, gso_type=GsoType.TCPV6 if v6 else GsoType.TCPV4,
                     hdr_len=hl, gso_size=mss, csum_start=hl - 32, csum_offset=16)
    stats = OffloadStats()
    segs = segment(hdr, pkt, stats)
    n = -(-len(payload) // mss)
    assert len(segs) == n and stats.segments_split == n and stats.gso_packets_in == 1
    iphl = hl - 32
    joined = b""
    for i, s in enumerate(segs):
        assert len(s) <= hl + mss
        assert ip_ok(s), i
        assert tcp_ok(s), i
        if v6:
            assert struct.unpack_from("!H", s, 4)[0] == len(s) - 40
            assert s[:4] == pkt[:4] and s[6:40] == pkt[6:40]
        else:
            assert struct.unpack_from("!H", s, 2)[0] == len(s)
            assert struct.unpack_from("!H", s, 4)[0] == (0xFFF0 + i) & 0xFFFF
        assert struct.unpack_from("!I", s, iphl + 4)[0] == 1_000_000 + i * mss
        flags = s[iphl + 13]
        last, first = i == n - 1, i == 0
        assert bool(flags & FIN) == last and bool(flags & PSH) == last
        assert bool(flags & CWR) == first
        assert flags & ACK
        assert s[iphl + 20 : hl] == TS_OPTS
        joined += s[hl:]
    assert joined == payload
    assert len(segs[-1]) - hl == len(payload) - (n - 1) * mss


def test_segment_single_segment_keeps_all_flags() -> None:
    pkt = gso_packet(False, b"x" * 100, ACK | PSH | CWR)
    segs = segment(VnetHeader(gso_type=GsoType.TCPV4 | 0x80, gso_size=1448), pkt)
    assert len(segs) == 1 and segs[0][33] == ACK | PSH | CWR and tcp_ok(segs[0]) and ip_ok(segs[0])


def test_segment_non_gso_passes_and_completes_checksum() -> None:
    plain = b"\x45" + bytes(30)
    assert segment(VnetHeader(), plain) == [plain]
    # UDP from a local socket: the checksum field holds the folded pseudo-header sum.
    data = b"hello, checksum offload!"
    udp_len = 8 + len(data)
    ip = ipv4(udp_len, proto=17)
    pseudo = ref_sum(ip[12:20] + struct.pack("!BBH", 0, 17, udp_len))
    pkt = ip + struct.pack("!HHHH", 1234, 5678, udp_len, pseudo) + data
    stats = OffloadStats()
    (out,) = segment(VnetHeader(flags=VnetFlags.NEEDS_CSUM, csum_start=20, csum_offset=6), pkt, stats)
    assert stats.checksums_completed == 1
    assert ref_sum(ip[12:20] + struct.pack("!BBH", 0, 17, udp_len) + out[20:]) == 0xFFFF
    assert out[:26] == pkt[:26] and out[28:] == pkt[28:]


def test_complete_checksum_udp_zero_becomes_ffff() -> None:
    # Choose two payload octets that make the sum exactly 0xFFFF, so the checksum computes as 0.
    ip = ipv4(12, proto=17)
    base = struct.pack("!HHHH", 1, 2, 12, 0) + b"\0\0\0\0"
    word = 0xFFFF - ref_sum(base)
    pkt = ip + base[:8] + struct.pack("!HH", word, 0)
    assert ref_sum(pkt[20:]) == 0xFFFF
    out = complete_checksum(pkt, 20, 6)
    assert out[26:28] == b"\xff\xff"
    out_tcp_like = complete_checksum(pkt, 20, 10)  # any other offset stores the plain 0
    assert out_tcp_like[30:32] == b"\0\0"


def test_segment_unknown_gso_dropped_and_counted() -> None:
    stats = OffloadStats()
    pkt = gso_packet(False, b"x" * 3000, ACK)
    assert segment(VnetHeader(gso_type=GsoType.UDP, gso_size=1000), pkt, stats) == []
    assert segment(VnetHeader(gso_type=5, gso_size=1000), pkt, stats) == []
    assert stats.unknown_gso_dropped == 2


@pytest.mark.parametrize("hdr,pkt", [
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=0), gso_packet(False, b"x" * 3000, ACK)),
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=100, hdr_len=5000), gso_packet(False, b"x" * 3000, ACK)),
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=1), gso_packet(False, b"x" * 3000, ACK)),
    (VnetHeader(gso_type=GsoType.TCPV6, gso_size=1000), gso_packet(False, b"x" * 3000, ACK)),
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=1000), gso_packet(True, b"x" * 3000, ACK)),
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=1000), gso_packet(False, b"", ACK)),
    (VnetHeader(gso_type=GsoType.TCPV4, gso_size=1000), gso_packet(False, b"x" * 3000, ACK)[:30]),
    (VnetHeader(flags=1, csum_start=20, csum_offset=60), ipv4(20, proto=17) + bytes(20)),
    (VnetHeader(flags=1, csum_start=400, csum_offset=6), ipv4(20, proto=17) + bytes(20)),
    (VnetHeader(), b""),
])
def test_segment_malformed_raises_decode_error(hdr: VnetHeader, pkt: bytes) -> None:
    with pytest.raises(DecodeError):
        segment(hdr, pkt)


def _valid_gso(v6: bool, size: int) -> tuple[VnetHeader, bytes]:
    hl = (40 if v6 else 20) + 32
    return (VnetHeader(flags=1, gso_type=GsoType.TCPV6 if v6 else GsoType.TCPV4, hdr_len=hl,
                       gso_size=536, csum_start=hl - 32, csum_offset=16),
            gso_packet(v6, pattern(size), ACK))


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.integers(1, 4000), st.data())
def test_segment_fuzz_mutated(v6: bool, size: int, data: st.DataObject) -> None:
    hdr, pkt = _valid_gso(v6, size)
    raw = bytearray(hdr.encode() + pkt)
    for _ in range(data.draw(st.integers(0, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    raw = raw[:cut] if data.draw(st.booleans()) else raw
    try:
        h = VnetHeader.decode(raw)
        for s in segment(h, bytes(raw[VNET_HDR_SIZE:])):
            assert len(s) <= 65535 + 100
    except PptpkitError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=10, max_size=2000))
def test_segment_fuzz_random(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        segment(VnetHeader.decode(raw), raw[10:], OffloadStats())


# -- GRO ------------------------------------------------------------------------------------------


def run(packets: list[bytes]) -> tuple[list[tuple[bytes, list[bytes], list[bytes]]], OffloadStats]:
    c = Coalescer()
    for p in packets:
        c.feed(p)
    out = c.flush()
    assert len(c) == 0
    # Conservation: every packet goes out exactly once.
    assert sorted(id(s) for _, _, segs in out for s in segs) == sorted(map(id, packets))
    return out, c.stats


def shape(out: list[tuple[bytes, list[bytes], list[bytes]]], packets: list[bytes]) -> list[list[int]]:
    index = {id(p): i for i, p in enumerate(packets)}
    return [[index[id(s)] for s in segs] for _, _, segs in out]


def flow4(n: int, size: int = 1000, seq: int = 5000, **kw: int | bytes) -> list[bytes]:
    return [tcp4(seq + i * size, pattern(size)[i % 7 :] + pattern(i % 7), ident=100 + i, **kw)  # type: ignore[arg-type]
            for i in range(n)]


def flow6(n: int, size: int = 1000, seq: int = 5000) -> list[bytes]:
    return [tcp6(seq + i * size, bytes([i]) * size) for i in range(n)]


@pytest.mark.parametrize("v6", [False, True])
def test_coalesce_of_segment_round_trips(v6: bool) -> None:
    hl = (40 if v6 else 20) + 32
    payload = pattern(60000)
    hdr = VnetHeader(flags=1, gso_type=GsoType.TCPV6 if v6 else GsoType.TCPV4, hdr_len=hl,
                     gso_size=1448, csum_start=hl - 32, csum_offset=16)
    orig = gso_packet(v6, payload, ACK | PSH)
    segs = segment(hdr, orig)
    out, stats = run(segs)
    assert len(out) == 1
    vnet, parts, merged_segs = out[0]
    assert merged_segs == segs
    h = VnetHeader.decode(vnet)
    assert h == VnetHeader(flags=VnetFlags.NEEDS_CSUM, gso_type=hdr.gso_type, hdr_len=hl, gso_size=1448,
                           csum_start=hl - 32, csum_offset=16)
    merged = b"".join(parts)
    assert len(merged) == len(orig) and merged[hl:] == payload
    iphl = hl - 32
    # Same header as the super-segment but for the checksum fields (and the IPv4 ID, the first's).
    assert merged[iphl + 13] == ACK | PSH
    assert merged[iphl : iphl + 16] == orig[iphl : iphl + 16]
    assert merged[iphl + 18 : hl] == orig[iphl + 18 : hl]
    if v6:
        assert merged[:40] == orig[:40]
    else:
        assert merged[:4] == orig[:4] and ip_ok(merged)
    # The TCP field holds the partial pseudo-header sum: finishing it per virtio gives a valid packet.
    assert tcp_ok(complete_checksum(merged, h.csum_start, h.csum_offset))
    assert stats.coalesced_packets_out == 1 and stats.segments_merged == len(segs)


def test_mixed_flows_and_non_tcp_keep_order() -> None:
    a = flow4(3)
    b = flow4(3, sport=40001)
    udp = ipv4(30, proto=17) + bytes(30)
    pkts = [a[0], b[0], udp, a[1], b[1], a[2], b[2]]
    out, stats = run(pkts)
    assert shape(out, pkts) == [[0, 3, 5], [1, 4, 6], [2]]
    assert out[2][0] == ZERO_VNET_HDR and out[0][0] != ZERO_VNET_HDR
    assert stats.coalesced_packets_out == 2 and stats.passthrough == 1


def test_ipv6_flow_merges() -> None:
    pkts = flow6(5)
    out, _ = run(pkts)
    assert shape(out, pkts) == [[0, 1, 2, 3, 4]]
    assert VnetHeader.decode(out[0][0]).gso_type == GsoType.TCPV6


def test_out_of_order_sequence() -> None:
    a = flow4(4)
    pkts = [a[0], a[2], a[1], a[3]]
    out, _ = run(pkts)
    assert shape(out, pkts) == [[0], [1], [2], [3]] or shape(out, pkts) == [[0], [1], [2, 3]]
    # a[1] then a[3] are not contiguous either: every segment goes alone.
    assert shape(out, pkts) == [[0], [1], [2], [3]]


def test_psh_ends_a_batch_and_fin_is_never_merged() -> None:
    a = flow4(6)
    a[2] = tcp4(5000 + 2000, pattern(1000)[2:] + pattern(2), ACK | PSH, ident=102)
    a[5] = tcp4(5000 + 5000, pattern(1000)[5:] + pattern(5), ACK | FIN, ident=105)
    out, _ = run(a)
    assert shape(out, a) == [[0, 1, 2], [3, 4], [5]]
    assert b"".join(out[0][1])[33] == ACK | PSH
    assert b"".join(out[1][1])[33] == ACK


@pytest.mark.parametrize("field", ["opts", "ack", "window", "ttl", "tos", "df", "urg", "ece", "cwr", "syn"])
def test_header_differences_prevent_merging(field: str) -> None:
    a = flow4(3)
    seq = 5000 + 1000
    payload = pattern(1000)[1:] + pattern(1)
    if field == "opts":
        odd = tcp4(seq, payload, opts=bytes([1, 1, 8, 10]) + struct.pack("!II", 123457, 654321))
    elif field == "ack":
        odd = tcp4(seq, payload, ack=778)
    elif field == "window":
        odd = tcp4(seq, payload, window=502)
    elif field in ("urg", "ece", "cwr", "syn"):
        extra = {"urg": URG, "ece": ECE, "cwr": CWR, "syn": SYN}[field]
        odd = tcp4(seq, payload, ACK | extra)
    else:
        tcp = tcp_header(seq, ACK)
        kw = {"ttl": {"ttl": 63}, "tos": {"tos": 4}, "df": {"df": False}}[field]
        odd = finish_tcp(ipv4(len(tcp) + 1000, **kw), tcp, payload, False)  # type: ignore[arg-type]
    pkts = [a[0], odd, a[2]]
    out, _ = run(pkts)
    assert shape(out, pkts) == [[0], [1], [2]]


def test_bad_checksum_written_alone() -> None:
    a = flow4(5)
    bad = bytearray(a[2])
    bad[-1] ^= 0x55
    a[2] = bytes(bad)
    out, stats = run(a)
    assert shape(out, a) == [[0, 1], [2], [3, 4]]
    assert stats.bad_checksum_unmerged == 1 and out[1][0] == ZERO_VNET_HDR
    # A bad IPv4 header checksum counts the same.
    b = flow4(3)
    hdr = bytearray(b[1])
    hdr[10] ^= 1
    b[1] = bytes(hdr)
    out, stats = run(b)
    assert shape(out, b) == [[0], [1], [2]] and stats.bad_checksum_unmerged == 1


def test_short_segment_ends_batch_and_longer_starts_new() -> None:
    a = [*flow4(2), tcp4(7000, pattern(500)), tcp4(7500, pattern(500))]
    out, _ = run(a)
    assert shape(out, a) == [[0, 1, 2], [3]]
    b = [tcp4(1000, pattern(500)), tcp4(1500, pattern(1000)), tcp4(2500, pattern(1000))]
    out, _ = run(b)
    assert shape(out, b) == [[0], [1, 2]]


def test_pure_ack_of_flow_closes_its_batch() -> None:
    a = flow4(4)
    ack = tcp4(5000 + 2000, b"")
    pkts = [a[0], a[1], ack, a[2], a[3]]
    out, _ = run(pkts)
    assert shape(out, pkts) == [[0, 1], [2], [3, 4]]


def test_merged_size_capped() -> None:
    a = flow4(70, size=1000)
    out, _ = run(a)
    sizes = [len(b"".join(parts)) for _, parts, _ in out]
    assert all(s <= 65535 for s in sizes)
    assert [len(segs) for _, _, segs in out] == [65, 5]


def test_ipv4_options_and_fragments_pass_through() -> None:
    a = flow4(3)
    frag = bytearray(a[1])
    frag[6] |= 0x20  # MF
    frag[10:12] = b"\0\0"
    frag[10:12] = struct.pack("!H", ref_checksum(bytes(frag[:20])))
    pkts = [a[0], bytes(frag), a[2]]
    out, _ = run(pkts)
    assert len(out) == 3


def test_queue_cap_reported() -> None:
    c = Coalescer()
    p = flow4(1)[0]
    assert not any(c.feed(p) for _ in range(MAX_QUEUE - 1))
    assert c.feed(p)
    c.clear()
    assert len(c) == 0 and c.flush() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(0, 3)), max_size=40),
       st.data())
def test_coalescer_fuzz_mutated_streams(plan: list[tuple[int, int, int]], data: st.DataObject) -> None:
    flows = [flow4(10), flow4(10, sport=1), flow6(10)]
    pkts: list[bytes] = []
    for f, i, mutate in plan:
        p = bytearray(flows[f][i])
        if mutate == 1:
            j = data.draw(st.integers(0, len(p) - 1))
            p[j] = data.draw(st.integers(0, 255))
        elif mutate == 2:
            p = p[: data.draw(st.integers(0, len(p)))]
        pkts.append(bytes(p))
    pkts += data.draw(st.lists(st.binary(max_size=80), max_size=5))
    out, stats = run(pkts)
    for vnet, parts, segs in out:
        merged = b"".join(parts)
        if vnet == ZERO_VNET_HDR:
            assert len(segs) == 1 and merged == segs[0]
        else:
            h = VnetHeader.decode(vnet)
            assert len(segs) >= 2 and len(merged) <= 65535
            assert all(tcp_ok(s) for s in segs)
            assert tcp_ok(complete_checksum(merged, h.csum_start, h.csum_offset))
            assert merged[h.hdr_len :] == b"".join(s[h.hdr_len :] for s in segs)
    assert stats.passthrough + stats.segments_merged == len(pkts)
