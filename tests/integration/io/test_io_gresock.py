"""The raw GRE socket: demultiplexing by (peer address, call ID), across real namespaces."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator

import pytest

from conftest import require_root
from grepackets import collector, gre
from netns import NetnsLab, inside
from pptpkit.io.gresock import GreSocket, source_ancillary

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
            call1, h1 = collector()
            call2, h2 = collector()
            back, hb = collector()
            other_got, ho = collector()
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
            from_primary, h1 = collector()
            from_secondary, h3 = collector()
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
            got, h = collector()
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


@pytest.mark.root
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_a_full_send_buffer_refuses_part_of_a_batch_counted(
        two_hosts: tuple[NetnsLab, str, str], compiled: bool) -> None:
    """A real full buffer: a token bucket on the client's veth holds the datagrams, so their
    memory stays charged to a small send buffer and the kernel refuses the rest of the batch
    with EAGAIN.  Each refusal is counted as a drop (never raised, never an error), and what was
    counted as sent is exactly what crossed the link, numbered from the batch's first seq."""
    import socket

    from pptpkit.io.gresock import send_gre_many
    from pptpkit.speedups import EXT

    if compiled and EXT is None:
        pytest.skip("the C extension is not built")
    lab, server_ns, client_ns = two_hosts
    lab.run(client_ns, ["tc", "qdisc", "add", "dev", "veth-b", "root", "tbf", "rate", "8mbit",
                        "burst", "3000", "limit", "4000000"])
    frames = [bytes([k]) * 1400 for k in range(64)]
    with inside(server_ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    with inside(client_ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
    with rx, tx:
        rx.bind(("192.0.2.1", 0))
        rx.settimeout(5)
        tx.setblocking(False)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel's floor: a few datagrams
        peer = 0xC0000201  # 192.0.2.1
        if compiled:
            assert EXT is not None
            sent, dropped, errors, _ = EXT.send_gre_many(tx.fileno(), peer, None, 9, 100, -1, frames)
        else:
            sent, dropped, errors, _ = send_gre_many(tx, peer, None, 9, 100, -1, frames)
        assert errors == 0
        assert sent + dropped == len(frames)
        assert 0 < sent < len(frames) and dropped > 0
        got = [rx.recv(2048) for _ in range(sent)]
    # What went out went in order, frame k numbered 100 + k (a later frame may still get
    # through when the bucket frees room during the batch).
    seqs = [struct.unpack_from("!I", d, (d[0] & 0x0F) * 4 + 8)[0] for d in got]
    assert seqs[0] == 100 and seqs == sorted(set(seqs)) and seqs[-1] < 100 + len(frames)
    assert [d[-1] for d in got] == [s - 100 for s in seqs]
