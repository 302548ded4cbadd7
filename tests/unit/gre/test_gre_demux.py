"""The GRE demultiplexer without a socket: routing by (peer address, call ID), drops, fuzzing."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grepackets import collector, gre, ipv4
from pptpkit.gre import GreDemux
from pptpkit.gre.demux import address_key


def test_demux_thousands_of_calls_same_source() -> None:
    demux = GreDemux()
    hits: dict[tuple[str, int], int] = {}

    def handler_for(peer: str, cid: int) -> Callable[[bytes, float], None]:
        def h(data: bytes, now: float) -> None:
            assert data[6:8] == struct.pack("!H", cid)
            hits[(peer, cid)] = hits.get((peer, cid), 0) + 1
        return h

    peers = ["198.51.100.7", "198.51.100.8"]
    for peer in peers:
        for cid in range(0, 5000, 1):
            demux.register(peer, cid, handler_for(peer, cid))
    assert len(demux) == 10000
    for cid in (0, 1, 2500, 4999):
        for peer in peers:
            assert demux.dispatch(ipv4(peer, gre(cid, b"ppp", seq=1)), 1.0)
    assert hits == {(p, c): 1 for p in peers for c in (0, 1, 2500, 4999)}
    # Same call ID, unregistered source: not delivered to the other peer's handler.
    assert not demux.dispatch(ipv4("198.51.100.9", gre(1)), 1.0)
    assert demux.stats.unknown_call == 1
    demux.unregister("198.51.100.7", 2500)
    assert not demux.dispatch(ipv4("198.51.100.7", gre(2500)), 1.0)
    assert demux.dispatch(ipv4("198.51.100.8", gre(2500)), 1.0)
    assert demux.stats.unknown_call == 2


def test_demux_strips_ip_header_with_options() -> None:
    demux = GreDemux()
    got, h = collector()
    demux.register("203.0.113.5", 42, h)
    packet = gre(42, b"\xff\x03\xc0\x21", seq=9)
    assert demux.dispatch(ipv4("203.0.113.5", packet, ihl=7), 3.5)
    assert got == [(packet, 3.5)]


def test_demux_lends_a_view_only_to_borrowing_handlers() -> None:
    demux = GreDemux()
    got: list[object] = []
    demux.register("203.0.113.5", 1, lambda data, now: got.append(data))
    demux.register("203.0.113.5", 2, lambda data, now: got.append(data), borrow=True)
    buf = bytearray(ipv4("203.0.113.5", gre(1, b"abc", seq=1)))
    assert demux.dispatch(memoryview(buf), 0.0)
    buf[-1] = ord("X")  # the next receive reuses the buffer: a copy must not change
    assert got == [gre(1, b"abc", seq=1)] and type(got[0]) is bytes
    buf = bytearray(ipv4("203.0.113.5", gre(2, b"abc", seq=1)))
    assert demux.dispatch(memoryview(buf), 0.0)
    view = got[1]
    assert isinstance(view, memoryview) and view == gre(2, b"abc", seq=1)
    buf[-1] = ord("X")
    assert view[-1] == ord("X")  # no copy was made


def test_demux_drops_and_counts_bad_packets() -> None:
    demux = GreDemux()
    got, h = collector()
    demux.register("192.0.2.2", 1, h)
    src = "192.0.2.2"
    assert not demux.dispatch(b"\x45" * 10, 0)
    assert not demux.dispatch(ipv4(src, gre(1))[:25], 0)
    assert demux.stats.too_short == 2
    assert not demux.dispatch(b"\x65" + ipv4(src, gre(1))[1:], 0)  # IP version 6
    assert not demux.dispatch(b"\x44" + ipv4(src, gre(1))[1:], 0)  # IHL 16 bytes
    assert demux.stats.not_ipv4 == 2
    assert not demux.dispatch(ipv4(src, gre(1, version=0)), 0)
    assert not demux.dispatch(ipv4(src, gre(1, key=False)), 0)
    assert not demux.dispatch(ipv4(src, gre(1, protocol=0x0800)), 0)
    assert demux.stats.not_gre_v1 == 3
    assert got == []
    assert demux.stats.received == 7
    assert demux.stats.delivered == 0


def test_demux_register_rules() -> None:
    demux = GreDemux(max_calls=2)
    demux.register("192.0.2.2", 1, lambda d, n: None)
    with pytest.raises(ValueError, match="already"):
        demux.register("192.0.2.2", 1, lambda d, n: None)
    demux.register("192.0.2.3", 1, lambda d, n: None)
    with pytest.raises(ValueError, match="full"):
        demux.register("192.0.2.4", 1, lambda d, n: None)
    with pytest.raises(ValueError):
        demux.register("192.0.2.4", 70000, lambda d, n: None)
    with pytest.raises(ValueError):
        demux.register("not-an-address", 1, lambda d, n: None)
    demux.unregister("192.0.2.9", 5)  # unknown: ignored
    assert demux.is_registered("192.0.2.3", 1)


def test_handler_error_is_contained() -> None:
    demux = GreDemux()

    def boom(data: bytes, now: float) -> None:
        raise RuntimeError("handler bug")

    got, h = collector()
    demux.register("192.0.2.2", 1, boom)
    demux.register("192.0.2.2", 2, h)
    assert not demux.dispatch(ipv4("192.0.2.2", gre(1)), 0)
    assert demux.dispatch(ipv4("192.0.2.2", gre(2)), 0)
    assert demux.stats.handler_errors == 1
    assert len(got) == 1


def _drops(demux: GreDemux) -> int:
    s = demux.stats
    return s.too_short + s.not_ipv4 + s.not_gre_v1 + s.unknown_call + s.handler_errors


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_random_bytes(data: bytes) -> None:
    demux = GreDemux()
    demux.register("192.0.2.2", 1, lambda d, n: None)
    demux.dispatch(data, 0.0)
    assert demux.stats.received == demux.stats.delivered + _drops(demux) == 1


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=60), st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255))))
def test_fuzz_truncated_and_mutated(cut: int, flips: list[tuple[int, int]]) -> None:
    demux = GreDemux()
    got, h = collector()
    demux.register("192.0.2.2", 7, h)
    data = bytearray(ipv4("192.0.2.2", gre(7, b"\xff\x03\x00\x21payload", seq=3)))
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = data[: len(data) - cut] if cut else data
    delivered = demux.dispatch(bytes(data), 0.0)
    assert demux.stats.received == demux.stats.delivered + _drops(demux) == 1
    if delivered:
        # Whatever got through really was enhanced GRE for call 7 from the registered peer.
        packet = got[0][0]
        assert packet[1] & 7 == 1 and packet[0] & 0x20 and packet[2:4] == b"\x88\x0b"
        assert packet[6:8] == b"\x00\x07"
        assert bytes(data[12:16]) == bytes([192, 0, 2, 2])


@pytest.mark.parametrize("text", ["192.0.2.1", "0.0.0.0", "255.255.255.255", "198.51.100.7"])
def test_address_key_matches_ipaddress(text: str) -> None:
    assert address_key(text) == int(ipaddress.IPv4Address(text))


@pytest.mark.parametrize("text", ["192.0.2", "192.0.2.01", "192.0.2.256", "0x7f.0.0.1", "1.2.3.4 ",
                                  "2001:db8::1", "", "192.0.2.1\x00", "3221225985"])
def test_address_key_refuses_what_ipaddress_refuses(text: str) -> None:
    # address_key uses inet_pton for speed: it must refuse every spelling IPv4Address refuses.
    with pytest.raises(ValueError):
        ipaddress.IPv4Address(text)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        address_key(text)


def test_route_batch_hands_each_call_its_runs_in_order() -> None:
    """Runs of two interleaved calls are split where the key changes; a call without a batch
    handler, an unknown call and a bad datagram in between go through route as ever."""
    demux = GreDemux()
    runs: list[tuple[int, list[bytes]]] = []
    singles: list[tuple[int, bytes]] = []
    for call in (1, 2):
        demux.register("192.0.2.2", call, lambda d, n, call=call: singles.append((call, d)),
                       batch=lambda ps, n, call=call: runs.append((call, ps)))
    plain, h = collector()
    demux.register("192.0.2.2", 3, h)
    key = address_key("192.0.2.2") << 16
    batch = [(key | 1, b"a"), (key | 1, b"b"), (key | 2, b"c"), (key | 1, b"d"), (key | 1, b"e"),
             (key | 1, b"f"), (key | 3, b"g"), (key | 3, b"h"), (key | 9, b"i"), (-3, b""), (key | 2, b"j"),
             (key | 2, b"k")]
    demux.route_batch(batch, 1.0)
    assert runs == [(1, [b"a", b"b"]), (1, [b"d", b"e", b"f"]), (2, [b"j", b"k"])]
    assert singles == [(2, b"c")]
    assert plain == [(b"g", 1.0), (b"h", 1.0)]
    s = demux.stats
    assert (s.received, s.delivered, s.unknown_call, s.not_gre_v1) == (12, 10, 1, 1)
    # One by one through route, the same datagrams count the same.
    alone = GreDemux()
    for call in (1, 2, 3):
        alone.register("192.0.2.2", call, lambda d, n: None)
    for k, packet in batch:
        alone.route(k, packet, 1.0)
    assert alone.stats == demux.stats
    demux.unregister("192.0.2.2", 1)
    demux.route_batch([(key | 1, b"x"), (key | 1, b"y")], 2.0)
    assert demux.stats.unknown_call == 3 and len(runs) == 3


def test_a_raising_batch_handler_is_contained_and_counted() -> None:
    demux = GreDemux()

    def boom(packets: list[bytes], now: float) -> None:
        raise RuntimeError("handler bug")

    got, h = collector()
    demux.register("192.0.2.2", 1, lambda d, n: None, batch=boom)
    demux.register("192.0.2.2", 2, h)
    key = address_key("192.0.2.2") << 16
    demux.route_batch([(key | 1, b"a"), (key | 1, b"b"), (key | 1, b"c"), (key | 2, b"d")], 0.0)
    assert got == [(b"d", 0.0)]  # the reader went on after the failing run
    s = demux.stats
    assert (s.received, s.delivered, s.handler_errors) == (4, 1, 3)
    assert s.received == s.delivered + _drops(demux)
