"""TUN offloads against the real kernel: TSO super-segments read and cut, segments merged on write.

Two namespaces, each with a TUN; this process relays packets between the two TUNs (a tunnel
without PPP).  A real TCP connection from one namespace to a listener in the other then makes
the kernel hand us super-segments on one side and lets us write merged ones on the other.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from conftest import require, require_root
from netns import NetnsLab, inside
from pptpkit.io.tun import TunDevice

pytestmark = pytest.mark.root

A_ADDR, B_ADDR = "198.51.100.1", "198.51.100.2"
# The IPv6 documentation prefix (RFC 3849), the counterpart of TEST-NET.
A6_ADDR, B6_ADDR = "2001:db8:5::1", "2001:db8:5::2"
MTU = 1400
PORT = 5201


def ref_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(total)


def valid_ipv6_tcp(p: bytes) -> bool:
    if struct.unpack_from("!H", p, 4)[0] + 40 != len(p):
        return False
    if p[6] != 6:
        return True
    pseudo = p[8:40] + struct.pack("!IxxxB", len(p) - 40, 6)
    return ref_sum(pseudo + p[40:]) == 0xFFFF


def valid_ipv4_tcp(p: bytes) -> bool:
    ihl = (p[0] & 15) * 4
    if ref_sum(p[:ihl]) != 0xFFFF or struct.unpack_from("!H", p, 2)[0] != len(p):
        return False
    if p[9] != 6:
        return True
    pseudo = p[12:20] + struct.pack("!BBH", 0, 6, len(p) - ihl)
    return ref_sum(pseudo + p[ihl:]) == 0xFFFF


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    with NetnsLab("pkoff") as lab:
        yield lab, lab.add_namespace("a"), lab.add_namespace("b")
    assert lab.leftovers() == []


def _open(lab: NetnsLab, ns: str, local: str, peer: str, offload: bool) -> TunDevice:
    with inside(ns):
        tun = TunDevice.open("pko%d", offload=offload)
    lab.ip(ns, "addr", "add", local, "peer", f"{peer}/32", "dev", tun.name)
    lab.ip(ns, "link", "set", tun.name, "up", "mtu", str(MTU))
    six_local, six_peer = (A6_ADDR, B6_ADDR) if local == A_ADDR else (B6_ADDR, A6_ADDR)
    lab.ip(ns, "-6", "addr", "add", six_local, "peer", f"{six_peer}/128", "dev", tun.name, "nodad")
    return tun


@pytest.mark.parametrize(("offload_a", "offload_b", "v6"),
                         [(True, True, False), (False, True, False), (True, False, False),
                          (True, True, True)])
def test_tcp_through_offload_tuns(lab: tuple[NetnsLab, str, str], offload_a: bool, offload_b: bool,
                                  v6: bool) -> None:
    netns, ns_a, ns_b = lab
    tun_a = _open(netns, ns_a, A_ADDR, B_ADDR, offload_a)
    tun_b = _open(netns, ns_b, B_ADDR, A_ADDR, offload_b)
    assert (tun_a.offload, tun_b.offload) == (offload_a, offload_b)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    target = B6_ADDR if v6 else B_ADDR
    with inside(ns_b):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((target, PORT))
        listener.listen(1)
    with inside(ns_a):
        sender = socket.socket(family, socket.SOCK_STREAM)
    data = os.urandom(8 * 2**20)
    from_a: list[bytes] = []

    def a_to_b(p: bytes) -> None:
        from_a.append(p)
        tun_b.write(p)

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        tun_a.start(a_to_b, max_batch=64)
        def b_to_a(p: bytes) -> None:
            tun_a.write(p)

        tun_b.start(b_to_a, max_batch=64)
        listener.setblocking(False)
        sender.setblocking(False)
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.wait_for(loop.sock_connect(sender, (target, PORT)), 5)
        conn, _ = await asyncio.wait_for(accept, 5)
        conn.setblocking(False)

        async def send() -> None:
            await loop.sock_sendall(sender, data)
            sender.shutdown(socket.SHUT_WR)

        async def receive() -> bytes:
            got = bytearray()
            while chunk := await loop.sock_recv(conn, 1 << 16):
                got += chunk
            return bytes(got)

        _, got = await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
        conn.close()
        return got

    try:
        got = asyncio.run(main())
    finally:
        sender.close()
        listener.close()
        tun_a.close()
        tun_b.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # Every packet our reader delivered is an ordinary one: at most the MTU, checksums complete.
    assert from_a and all(len(p) <= MTU for p in from_a)
    bad = [i for i, p in enumerate(from_a)
           if not (valid_ipv4_tcp(p) if p[0] >> 4 == 4 else valid_ipv6_tcp(p))]
    assert not bad, f"{len(bad)} of {len(from_a)} packets with a bad checksum"
    if offload_a:
        st = tun_a.offload_stats
        # The sender's stack used TSO: super-segments arrived and were cut.
        assert st.gso_packets_in >= 1 and st.segments_split > st.gso_packets_in, st
        assert tun_a.stats.reads < tun_a.stats.received
        assert st.malformed_dropped == 0 and st.unknown_gso_dropped == 0
    if offload_b:
        st = tun_b.offload_stats
        # The data segments towards the listener went in merged, the kernel took every write.
        assert st.coalesced_packets_out >= 1 and st.segments_merged > st.coalesced_packets_out, st
        assert tun_b.stats.writes < tun_b.stats.sent
        assert tun_b.stats.write_errors == 0 and tun_b.stats.gso_write_fallbacks == 0
        assert st.bad_checksum_unmerged == 0


def test_offload_device_closes_with_queued_writes(lab: tuple[NetnsLab, str, str]) -> None:
    netns, ns_a, _ = lab
    tun = _open(netns, ns_a, A_ADDR, B_ADDR, True)
    assert tun.offload

    async def main() -> None:
        tun.start(lambda p: None)
        packet = bytes.fromhex("4500001c0001000040110000c6336402c6336401") + bytes(8)
        assert tun.write(packet)
        assert tun._flush_handle is not None
        tun.close()
        assert tun._flush_handle is None and len(tun._coalescer) == 0
        await asyncio.sleep(0.01)  # the cancelled flush never runs on a closed device
        assert not tun.write(packet)

    asyncio.run(main())
    assert tun.stats.sent == 0 and tun.stats.write_errors == 1
