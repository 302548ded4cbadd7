"""Data planes: where a :class:`~pptpkit.io.link.PppLink`'s IP packets go once it is up.

:class:`TunDataPlane` gives every link its own TUN interface (pppd's ``pppN`` model: addresses
local/peer, MTU from the negotiation, up, optional routes).  :class:`SharedTunRouter` puts every
link of a server on one TUN and routes by destination address, with a host route per session
carrying that session's MTU.  Both configure the kernel only through
:class:`~pptpkit.io.netconfig.NetConfig`, and both rely on the kernel removing an interface's
addresses and routes with the interface, so a crash leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address

from pptpkit.io.link import PacketSink, PppLink, link_local_bytes
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.tun import TunDevice
from pptpkit.ppp.session_config import LinkUp

__all__ = ["SharedTunRouter", "TunDataPlane", "TunHook"]


#: Called after a per-link TUN is configured, with (interface name, LinkUp, NetConfig still
#: open): extra routes, firewall hooks.  Whatever it adds with that NetConfig on the
#: interface disappears with the interface.
TunHook = Callable[[str, LinkUp, NetConfig], Awaitable[None]]


class TunDataPlane:
    """A TUN interface per link (pppd's ``pppN`` model).

    On LinkUp: open ``name`` (``%d``: the kernel picks the first free number), put the
    point-to-point address ``local peer PEER/32`` on it, MTU = the link's MTU (the smaller MRU
    less the MPPE overhead) unless ``mtu`` caps it lower, bring it up, add ``routes`` (CIDR
    strings) through it, run ``hook``.  On detach the TUN is closed: the kernel removes the
    interface and with it its addresses and routes, so nothing is left even after a crash.
    An interface deleted from outside (``ip link del``) ends its link
    (:meth:`~pptpkit.io.link.PppLink.data_plane_lost`).  One instance may serve any number of
    links; each gets its own interface.
    """

    def __init__(
        self,
        name: str = "pptpkit%d",
        *,
        routes: Sequence[str] = (),
        mtu: int | None = None,
        hook: TunHook | None = None,
        on_detach: Callable[[str], Awaitable[None]] | None = None,
        max_batch: int = 64,
        offload: bool = True,
        pre_hook: TunHook | None = None,
        ipv6_hook: Callable[[str, bytes, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        #: Called once IPV6CP's link-local addresses are on the interface (pppd's ipv6-up
        #: moment), with the interface and both identifiers, when IPV6CP came up after IPCP.
        self.ipv6_hook = ipv6_hook
        #: Called with the interface addressed but not up yet (pppd's ip-pre-up moment).
        self.pre_hook = pre_hook
        self.routes = tuple(routes)
        self.mtu = mtu
        self.hook = hook
        self.on_detach = on_detach
        self.max_batch = max_batch
        # TUN checksum/TSO offloads and merged writes (pptpkit.io.offload); a kernel without them
        # gives a plain TUN.
        self.offload = offload
        self._tuns: dict[PppLink, TunDevice] = {}

    def tun_of(self, link: PppLink) -> TunDevice | None:
        return self._tuns.get(link)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        if up.local_address is None or up.peer_address is None:
            raise NetConfigError("IPCP agreed no address pair")
        tun = TunDevice.open(self.name, offload=self.offload)
        try:
            nc = await NetConfig().open()
            try:
                mtu = up.mtu if self.mtu is None else min(up.mtu, self.mtu)
                await nc.add_ptp_address(tun.name, str(up.local_address), str(up.peer_address))
                if self.pre_hook is not None:
                    await self.pre_hook(tun.name, up, nc)
                await nc.set_link(tun.name, up=True, mtu=mtu)
                if up.local_ipv6_id is not None and up.peer_ipv6_id is not None:
                    await _add_link_locals(nc, tun.name, up.local_ipv6_id, up.peer_ipv6_id)
                for route in self.routes:
                    await nc.add_route(route, dev=tun.name)
                if self.hook is not None:
                    await self.hook(tun.name, up, nc)
            finally:
                # Closed without cleanup on purpose: closing the TUN removes what we added.
                await nc.close()
        except BaseException:
            tun.close()
            raise
        tun.on_lost = lambda exc, name=tun.name: link.data_plane_lost(
            f"interface {name} disappeared ({exc.strerror or exc})")
        # send_ip / send_ips themselves (results ignored): no hop per packet in between; a
        # read's segments go to the link as one batch.
        tun.start(link.send_ip, loop=link.loop, max_batch=self.max_batch, on_packets=link.send_ips)
        self._tuns[link] = tun
        link.interface = tun.name
        return tun.write

    async def ipv6_up(self, link: PppLink, local_id: bytes, peer_id: bytes) -> None:
        """IPV6CP came up after IPCP: give the interface the two link-local addresses."""
        tun = self._tuns.get(link)
        if tun is None:
            return
        nc = await NetConfig().open()
        try:
            await _add_link_locals(nc, tun.name, local_id, peer_id)
        finally:
            await nc.close()
        if self.ipv6_hook is not None:
            await self.ipv6_hook(tun.name, local_id, peer_id)

    async def detach(self, link: PppLink) -> None:
        tun = self._tuns.pop(link, None)
        if tun is None:
            return
        name = tun.name
        tun.close()
        if self.on_detach is not None:
            await self.on_detach(name)


def link_local(interface_id: bytes) -> str:
    """:func:`~pptpkit.io.link.link_local_bytes` as text, for netlink."""
    address = link_local_bytes(interface_id)
    if address is None:
        raise NetConfigError(f"interface identifier of {len(interface_id)} octets, not 8")
    return str(ipaddress.IPv6Address(address))


async def _add_link_locals(nc: NetConfig, ifname: str, local_id: bytes, peer_id: bytes) -> None:
    # As pppd does: our link-local address with the peer's as its point-to-point partner, so
    # the kernel routes fe80::PEER to this interface.
    await nc.add_ptp_address(ifname, link_local(local_id), link_local(peer_id))


class SharedTunRouter:
    """One TUN for every link of a server, routed by the destination address.

    :meth:`open` creates the interface (up, MTU ``mtu``).  Each attached link adds its local
    address to the interface (once per distinct address) and a host route ``peer/32`` through
    it whose route MTU is the link's own (at most ``mtu``), so the kernel sizes packets (and answers with ICMP
    fragmentation-needed) per session even though the interface is shared.  Packets the kernel
    routes into the TUN are dispatched on their IPv4 destination with one dict lookup; IPv6 is
    not routed in this mode (counted in ``unroutable``).  :meth:`close` removes the interface
    and, with it, every address and route.
    """

    def __init__(self, name: str = "pptpkit", *, mtu: int = 1500, max_batch: int = 64,
                 offload: bool = True) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"bad MTU {mtu}")
        self.name = name
        self.mtu = mtu
        self.max_batch = max_batch
        self.offload = offload
        self.tun: TunDevice | None = None
        self._nc: NetConfig | None = None
        self._routes: dict[bytes, PppLink] = {}
        self._by_link: dict[PppLink, bytes] = {}
        self._locals: set[str] = set()
        self._lock = asyncio.Lock()
        self.unroutable = 0

    @property
    def interface(self) -> str | None:
        return self.tun.name if self.tun is not None else None

    @property
    def links(self) -> int:
        return len(self._by_link)

    async def open(self) -> None:
        if self.tun is not None:
            return
        tun = TunDevice.open(self.name, offload=self.offload)
        try:
            nc = await NetConfig().open()
            try:
                await nc.set_link(tun.name, up=True, mtu=self.mtu)
            except BaseException:
                await nc.close()
                raise
        except BaseException:
            tun.close()
            raise
        self._nc = nc
        self.tun = tun
        tun.start(self._dispatch, max_batch=self.max_batch, on_packets=self._dispatch_many)

    def _dispatch(self, packet: bytes) -> None:
        # A TUN read is never empty, but a short or non-IPv4 packet must not raise here.
        link = self._routes.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
        if link is None:
            self.unroutable += 1
            return
        link.send_ip(packet)

    def _dispatch_many(self, packets: list[bytes]) -> None:
        """:meth:`_dispatch` of one read's packets: each run of consecutive packets for one link
        goes to its batch path (:meth:`PppLink.send_ips`), in order."""
        if len(packets) == 1:
            self._dispatch(packets[0])
            return
        routes = self._routes
        current: PppLink | None = None
        start = 0
        for i, packet in enumerate(packets):
            link = routes.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
            if link is not current:
                if current is not None:
                    current.send_ips(packets[start:i])
                current, start = link, i
            if link is None:
                self.unroutable += 1
        if current is not None:
            current.send_ips(packets[start:] if start else packets)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        tun, nc = self.tun, self._nc
        if tun is None or nc is None:
            raise NetConfigError("the shared TUN is not open")
        if up.local_address is None or up.peer_address is None:
            raise NetConfigError("IPCP agreed no address pair")
        key = up.peer_address.packed
        async with self._lock:
            owner = self._routes.get(key)
            if owner is not None and owner is not link:
                raise NetConfigError(f"{up.peer_address} is already in use by {owner.name}")
            local = str(up.local_address)
            if local not in self._locals:
                await nc.add_local_address(tun.name, local)
                self._locals.add(local)
            await nc.replace_host_route(tun.name, str(up.peer_address), source=local,
                                          mtu=min(up.mtu, self.mtu))
            self._routes[key] = link
            self._by_link[link] = key
        link.interface = tun.name
        return tun.write

    async def detach(self, link: PppLink) -> None:
        key = self._by_link.pop(link, None)
        if key is None:
            return
        if self._routes.get(key) is link:
            del self._routes[key]
        nc, tun = self._nc, self.tun
        if nc is None or tun is None:
            return
        async with self._lock:
            with contextlib.suppress(NetConfigError):
                await nc.delete_host_route(tun.name, str(IPv4Address(key)))

    async def close(self) -> None:
        self._routes.clear()
        self._by_link.clear()
        self._locals.clear()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None
