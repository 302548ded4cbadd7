"""TUN device and netlink configuration, inside a private network namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from conftest import require, require_root
from netns import NetnsLab, inside
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.tun import TunDevice

pytestmark = pytest.mark.root


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ipv4_packet(src: str, dst: str, proto: int, payload: bytes, ident: int = 1) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def icmp_echo(ident: int, seq: int, data: bytes) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


@pytest.fixture
def ns() -> Iterator[str]:
    require_root()
    require(os.path.exists("/dev/net/tun"), "needs /dev/net/tun")
    with NetnsLab("pktun") as lab:
        name = lab.add_namespace("t")
        # A veth toward a second namespace gives the host-route test a real gateway path.
        other = lab.add_namespace("o")
        lab.add_veth(name, other, addr_a="192.0.2.10/24", addr_b="192.0.2.254/24")
        lab.ip(name, "route", "add", "default", "via", "192.0.2.254")
        yield name
    assert lab.leftovers() == []


async def _wait_for(packets: list[bytes], pred: Callable[[bytes], bool], timeout: float = 3) -> bytes:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        for p in packets:
            if pred(p):
                return p
        await asyncio.sleep(0.01)
    raise AssertionError(f"no matching packet among {len(packets)}")


def test_tun_traffic_addresses_routes_and_cleanup(ns: str) -> None:
    async def main() -> None:
        tun = TunDevice.open("pkt%d")
        assert tun.name.startswith("pkt")
        got: list[bytes] = []
        tun.start(got.append)
        async with NetConfig() as nc:
            await nc.set_link(tun.name, up=True, mtu=1400)
            assert await nc.link_state(tun.name) == (True, 1400)
            await nc.add_ptp_address(tun.name, "198.51.100.1", "198.51.100.2")
            assert ("198.51.100.1", "198.51.100.2", 32) in await nc.addresses(tun.name)

            # Kernel -> TUN: a UDP datagram to the peer address comes out of our fd.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"to-peer", ("198.51.100.2", 9999))
            pkt = await _wait_for(got, lambda p: p[9] == 17 and p.endswith(b"to-peer"))
            assert pkt[12:16] == socket.inet_aton("198.51.100.1")
            assert pkt[16:20] == socket.inet_aton("198.51.100.2")

            # TUN -> kernel: an ICMP echo request "from the peer" is answered back into the TUN.
            request = ipv4_packet("198.51.100.2", "198.51.100.1", 1, icmp_echo(0x1234, 7, b"ping!" * 10))
            assert tun.write(request)
            reply = await _wait_for(got, lambda p: p[9] == 1 and p[20] == 0)
            assert reply[16:20] == socket.inet_aton("198.51.100.2")
            assert struct.unpack("!HH", reply[24:28]) == (0x1234, 7)
            assert reply[28:] == b"ping!" * 10

            # TUN -> kernel -> a local socket: UDP from the peer reaches a bound socket.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
                listener.bind(("198.51.100.1", 5555))
                listener.settimeout(3)
                udp_hdr = struct.pack("!HHHH", 4444, 5555, 8 + 5, 0)  # checksum 0: none (IPv4)
                assert tun.write(ipv4_packet("198.51.100.2", "198.51.100.1", 17, udp_hdr + b"hello"))
                data, addr = await asyncio.get_running_loop().run_in_executor(
                    None, listener.recvfrom, 100
                )
                assert (data, addr) == (b"hello", ("198.51.100.2", 4444))

            # Routes through the tunnel.
            await nc.add_route("203.0.113.0/24", dev=tun.name)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"routed", ("203.0.113.77", 1))
            pkt = await _wait_for(got, lambda p: p.endswith(b"routed"))
            assert pkt[16:20] == socket.inet_aton("203.0.113.77")
            await nc.delete_route("203.0.113.0/24", dev=tun.name)
            assert "203.0.113.0/24" not in [r[0] for r in await nc.routes()]

            # A garbage write is counted, not raised.
            assert not tun.write(b"\x00")
            assert tun.stats.write_errors == 1

            await nc.add_route("203.0.113.0/25", dev=tun.name)
            assert nc.pending_undo[0] == "delete route 203.0.113.0/25"
        # Leaving the block reverted everything: no address, no route, original MTU.
        async with NetConfig() as check:
            assert await check.addresses(tun.name) == []
            assert all(not r[0].startswith("203.0.113.") for r in await check.routes())
            up, mtu = await check.link_state(tun.name)
            assert not up and mtu == 1500
            tun.close()
            with pytest.raises(NetConfigError):
                await check.link_index(tun.name)
        assert not tun.write(b"x")

    with inside(ns):
        asyncio.run(main())
    # Nothing of this reached the root namespace.
    assert not any(n.startswith("pkt") for n in os.listdir("/sys/class/net"))


def test_host_route_via_current_path_and_default_through_tunnel(ns: str) -> None:
    async def main() -> None:
        with TunDevice.open() as tun:
            assert tun.name.startswith("pptp")
            async with NetConfig() as nc:
                before = await nc.routes()
                await nc.set_link(tun.name, up=True)
                await nc.add_ptp_address(tun.name, "198.51.100.1", "198.51.100.2")

                info = await nc.route_get("203.0.113.10")
                assert (info.gateway, info.ifname) == ("192.0.2.254", "veth-a")
                assert info.prefsrc == "192.0.2.10" and not info.is_local

                pinned = await nc.add_host_route_via_current_path("203.0.113.10")
                assert pinned == info
                assert ("203.0.113.10/32", "192.0.2.254", info.oif) in await nc.routes()
                # A second call finds the route already there and adds nothing.
                assert await nc.add_host_route_via_current_path("203.0.113.10") is None
                # Local addresses need no pinning.
                assert await nc.add_host_route_via_current_path("192.0.2.10") is None
                # Directly connected server: a /32 on the device, without a gateway.
                direct = await nc.add_host_route_via_current_path("192.0.2.254")
                assert direct is not None and direct.gateway is None

                # Default route into the tunnel: the pinned server still goes via veth.
                await nc.add_route("0.0.0.0/1", dev=tun.name)
                await nc.add_route("128.0.0.0/1", dev=tun.name)
                assert (await nc.route_get("203.0.113.10")).ifname == "veth-a"
                assert (await nc.route_get("203.0.113.11")).ifname == tun.name
                assert (await nc.route_get("198.51.100.200")).ifname == tun.name

                with pytest.raises(NetConfigError) as err:
                    await nc.add_route("203.0.113.0/24", dev="no-such-if")
                assert err.value.errno is not None
            async with NetConfig() as check:
                after = await check.routes()
                assert sorted(map(str, after)) == sorted(map(str, before))
                assert (await check.route_get("203.0.113.10")).ifname == "veth-a"
                assert ("203.0.113.10/32", "192.0.2.254", info.oif) not in after

    with inside(ns):
        asyncio.run(main())


def test_tun_batch_read_and_stop(ns: str) -> None:
    async def main() -> None:
        with TunDevice.open("pkb%d") as tun:
            got: list[bytes] = []
            tun.start(got.append, max_batch=3)
            async with NetConfig() as nc:
                await nc.set_link(tun.name, up=True)
                await nc.add_ptp_address(tun.name, "198.51.100.1", "198.51.100.2")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    for i in range(30):
                        udp.sendto(b"n%02d" % i, ("198.51.100.2", 9))
                await _wait_for(got, lambda p: p.endswith(b"n29"))
                assert [p[-3:] for p in got if p[9] == 17] == [b"n%02d" % i for i in range(30)]
                tun.stop()
                n = len(got)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.sendto(b"late", ("198.51.100.2", 9))
                await asyncio.sleep(0.1)
                assert len(got) == n
                tun.start(got.append)
                await _wait_for(got, lambda p: p.endswith(b"late"))

    with inside(ns):
        asyncio.run(main())


def test_bad_names_rejected() -> None:
    with pytest.raises(ValueError):
        TunDevice.open("x" * 16)
    with pytest.raises(ValueError):
        TunDevice.open("")
