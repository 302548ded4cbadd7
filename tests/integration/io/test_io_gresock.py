"""The raw GRE socket: demultiplexing by (peer address, call ID), across real namespaces."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_root
from netns import NetnsLab, inside
from pptpkit.io.gresock import GreDemux, GreSocket, source_ancillary


def gre(call_id: int, payload: bytes = b"", *, seq: int | None = None, version: int = 1,
        key: bool = True, protocol: int = 0x880B) -> bytes:
    flags = (0x20 if key else 0) | (0x10 if seq is not None else 0)
    head = struct.pack("!BBHHH", flags, version, protocol, len(payload), call_id)
    if seq is not None:
        head += struct.pack("!I", seq)
    return head + payload


def ipv4(src: str, gre_packet: bytes, *, ihl: int = 5) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(gre_packet), 0, 0, 64, 47, 0,
        socket.inet_aton(src), socket.inet_aton("192.0.2.1"),
    )
    return header + b"\x01" * (ihl * 4 - 20) + gre_packet


def _collector() -> tuple[list[tuple[bytes, float]], Callable[[bytes, float], None]]:
    got: list[tuple[bytes, float]] = []
    return got, lambda data, now: got.append((data, now))


# -- the demultiplexer without a socket -------------------------------------------------------


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
    got, h = _collector()
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
    got, h = _collector()
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

    got, h = _collector()
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
    got, h = _collector()
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


# -- the real raw socket across two namespaces ------------------------------------------------


@pytest.fixture
def two_hosts() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    with NetnsLab("pkgre") as lab:
        server = lab.add_namespace("s")
        client = lab.add_namespace("c")
        lab.add_veth(server, client, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
        lab.ip(server, "addr", "add", "192.0.2.3/24", "dev", "veth-a")
        yield lab, server, client
    assert lab.leftovers() == []


async def _until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@pytest.mark.root
def test_two_calls_from_one_address_across_veth(two_hosts: tuple[NetnsLab, str, str]) -> None:
    _, server_ns, client_ns = two_hosts

    async def main() -> None:
        with inside(server_ns):
            srv = GreSocket(local_address="192.0.2.1")
            other = GreSocket(local_address="192.0.2.3")
        with inside(client_ns):
            cli = GreSocket()
        try:
            call1, h1 = _collector()
            call2, h2 = _collector()
            back, hb = _collector()
            other_got, ho = _collector()
            # Two clients behind one NAT: same source address, different call IDs at the server.
            srv.register("192.0.2.2", 1, h1)
            srv.register("192.0.2.2", 2, h2)
            other.register("192.0.2.2", 1, ho)
            cli.register("192.0.2.1", 7, hb)

            for i in range(20):
                assert cli.send("192.0.2.1", gre(1, b"one%d" % i, seq=i))
                assert cli.send("192.0.2.1", gre(2, b"two%d" % i, seq=i))
            assert cli.send("192.0.2.1", gre(3, b"nobody"))
            assert cli.send("192.0.2.1", gre(1, b"v0", version=0))
            await _until(lambda: len(call1) == 20 and len(call2) == 20 and srv.stats.not_gre_v1 == 1)
            assert [d[12:] for d, _ in call1] == [b"one%d" % i for i in range(20)]
            assert [d[12:] for d, _ in call2] == [b"two%d" % i for i in range(20)]
            await _until(lambda: srv.stats.unknown_call == 1)
            assert srv.stats.delivered == 40

            assert srv.send("192.0.2.2", gre(7, b"reply"))
            assert srv.send("192.0.2.2", gre(8, b"unregistered"))
            await _until(lambda: len(back) == 1 and cli.stats.unknown_call == 1)
            assert back[0][0] == gre(7, b"reply")
            assert srv.stats.sent == 2

            # The socket bound to 192.0.2.3 saw none of the traffic to 192.0.2.1.
            await asyncio.sleep(0.05)
            assert other_got == [] and other.stats.received == 0
            assert cli.send("192.0.2.3", gre(1, b"to-other"))
            await _until(lambda: len(other_got) == 1)
            assert len(call1) == 20
        finally:
            srv.close()
            other.close()
            cli.close()
        assert srv.closed and not srv.send("192.0.2.2", gre(7))

    asyncio.run(main())


def test_source_ancillary_needs_an_ipv4_address() -> None:
    assert len(source_ancillary("192.0.2.3")[0][2]) == 12
    with pytest.raises(ValueError, match="not an IPv4 address"):
        source_ancillary("2001:db8::1")


@pytest.mark.root
def test_send_from_picks_the_source_address(two_hosts: tuple[NetnsLab, str, str]) -> None:
    """One unbound socket sends from either local address as asked, or as routing picks."""
    _, server_ns, client_ns = two_hosts

    async def main() -> None:
        with inside(server_ns):
            srv = GreSocket()
        with inside(client_ns):
            cli = GreSocket()
        try:
            from_primary, h1 = _collector()
            from_secondary, h3 = _collector()
            cli.register("192.0.2.1", 5, h1)
            cli.register("192.0.2.3", 5, h3)
            assert srv.send_from("192.0.2.2", gre(5, b"pinned"), source_ancillary("192.0.2.3"))
            assert srv.send("192.0.2.2", gre(5, b"routed"))
            await _until(lambda: len(from_primary) == 1 and len(from_secondary) == 1)
            assert from_secondary[0][0] == gre(5, b"pinned") and from_primary[0][0] == gre(5, b"routed")
            # An address that is not ours is refused by the kernel: counted, never raised.
            assert not srv.send_from("192.0.2.2", gre(5), source_ancillary("198.51.100.99"))
            assert srv.stats.send_errors == 1 and srv.stats.sent == 2
        finally:
            srv.close()
            cli.close()
        assert not srv.send_from("192.0.2.2", gre(5), source_ancillary("192.0.2.3"))

    asyncio.run(main())


@pytest.mark.root
def test_batch_read_and_unreachable_send(two_hosts: tuple[NetnsLab, str, str]) -> None:
    _, server_ns, client_ns = two_hosts

    async def main() -> None:
        with inside(server_ns):
            srv = GreSocket(max_batch=4)
        with inside(client_ns):
            cli = GreSocket()
        try:
            got, h = _collector()
            srv.register("192.0.2.2", 5, h)
            for i in range(200):
                cli.send("192.0.2.1", gre(5, struct.pack("!I", i)))
            await _until(lambda: len(got) == 200)
            assert [struct.unpack("!I", d[8:])[0] for d, _ in got] == list(range(200))
            # Batches share one timestamp; with max_batch=4 there are at least 50 wakeups.
            assert len({now for _, now in got}) >= 50
            # No route inside the client namespace to a TEST-NET address elsewhere.
            assert not cli.send("203.0.113.9", gre(5))
            assert cli.stats.send_errors == 1
        finally:
            srv.close()
            cli.close()

    asyncio.run(main())
