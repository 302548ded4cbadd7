"""Interface, address and route configuration over rtnetlink (pyroute2, never the ``ip`` tool).

:class:`NetConfig` works in the network namespace that is current when it is opened.  It keeps
an undo log of everything it changed and :meth:`NetConfig.cleanup` (also run when leaving
``async with``) reverts it in reverse order: addresses and routes it added are deleted, link
settings it changed are restored.  Things that are already gone (the TUN interface closed,
taking its addresses and routes with it) are not an error during cleanup.

Everything is asynchronous (``AsyncIPRoute``): the synchronous pyroute2 API runs its own event
loop and cannot be used from inside a running one.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pptpkit.errors import PptpkitError

__all__ = ["NetConfig", "NetConfigError", "RouteInfo"]

log = logging.getLogger(__name__)

_RTN_LOCAL = 2
# RTM neighbour flag for a proxy (published) entry, as pppd's SIOCSARP with ATF_PUBL.
_NTF_PROXY = 0x08
_RTN_UNICAST = 1
# Errors that mean "the thing to undo is already gone".
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENXIO}


class NetConfigError(PptpkitError):
    """A netlink request failed; ``errno`` is the kernel's error number."""

    def __init__(self, message: str, *, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteInfo:
    """The kernel's answer to "how do I reach ``destination``" (``ip route get``)."""

    destination: str
    gateway: str | None
    oif: int | None
    ifname: str | None
    prefsrc: str | None
    is_local: bool


def _split(dst: str) -> tuple[str, int]:
    net = ipaddress.ip_network(dst, strict=False)
    return str(net.network_address), net.prefixlen


class NetConfig:
    """A netlink session with an undo log.  ``async with NetConfig() as nc: ...``"""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._undo: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    async def open(self) -> NetConfig:
        if self._ipr is None:
            # The netlink socket is bound to the namespace current at construction.
            self._ipr = AsyncIPRoute()
        return self

    async def __aenter__(self) -> NetConfig:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.cleanup()
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the netlink socket (without undoing anything)."""
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            raise NetConfigError("NetConfig is not open")
        return self._ipr

    async def _call(self, what: str, coro: Awaitable[Any]) -> Any:
        try:
            return await coro
        except NetlinkError as exc:
            raise NetConfigError(f"{what}: {exc}", errno_=exc.code) from exc

    # -- links --------------------------------------------------------------------------------

    async def link_index(self, ifname: str) -> int:
        found = await self._call(f"look up {ifname}", self.ipr.link_lookup(ifname=ifname))
        if not found:
            raise NetConfigError(f"no interface {ifname!r}", errno_=errno.ENODEV)
        return int(found[0])

    async def link_name(self, index: int) -> str:
        """The name of the interface with ``index``."""
        msgs = await self._call(f"look up interface {index}", self.ipr.link("get", index=index))
        name = msgs[0].get("IFLA_IFNAME")
        if not name:
            raise NetConfigError(f"no interface with index {index}", errno_=errno.ENODEV)
        return str(name)

    async def link_state(self, ifname: str) -> tuple[bool, int]:
        """(administratively up, MTU) of an interface."""
        index = await self.link_index(ifname)
        msgs = await self._call(f"get {ifname}", self.ipr.link("get", index=index))
        msg = msgs[0]
        return bool(msg["flags"] & 1), int(msg.get("IFLA_MTU"))

    async def set_link(self, ifname: str, *, up: bool | None = True, mtu: int | None = None) -> None:
        """Set a link up/down and/or its MTU; cleanup restores the previous values."""
        index = await self.link_index(ifname)
        was_up, was_mtu = await self.link_state(ifname)
        changes: dict[str, Any] = {}
        if mtu is not None and mtu != was_mtu:
            changes["mtu"] = mtu
        if up is not None and up != was_up:
            changes["state"] = "up" if up else "down"
        if not changes:
            return
        await self._call(f"set {ifname}", self.ipr.link("set", index=index, **changes))
        restore: dict[str, Any] = {}
        if "mtu" in changes:
            restore["mtu"] = was_mtu
        if "state" in changes:
            restore["state"] = "up" if was_up else "down"

        async def undo() -> None:
            await self.ipr.link("set", index=index, **restore)

        self._undo.append((f"restore {ifname} {restore}", undo))

    # -- addresses ----------------------------------------------------------------------------

    async def add_ptp_address(self, ifname: str, local: str, peer: str, *,
                              prefixlen: int | None = None) -> None:
        """``ip addr add LOCAL peer PEER/prefixlen dev IFNAME`` (what IPCP's result becomes, or
        IPV6CP's link-local pair; the prefix length defaults to a host's: 32 or 128)."""
        index = await self.link_index(ifname)
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        if prefixlen is None:
            prefixlen = 128 if family == socket.AF_INET6 else 32
        args = {"index": index, "local": local, "address": peer, "prefixlen": prefixlen, "family": family}
        await self._call(f"add address {local} peer {peer}", self.ipr.addr("add", **args))

        async def undo() -> None:
            await self.ipr.addr("del", **args)

        self._undo.append((f"delete address {local} peer {peer} on {ifname}", undo))

    async def add_local_address(self, ifname: str, local: str) -> None:
        """``ip addr add LOCAL/32 dev IFNAME``; already there is fine.  Not in the undo log:
        it belongs to an interface whose removal takes it along (the shared TUN)."""
        index = await self.link_index(ifname)
        try:
            await self.ipr.addr("add", index=index, address=local, prefixlen=32)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise NetConfigError(f"add address {local} on {ifname}: {exc}", errno_=exc.code) from exc

    async def addresses(self, ifname: str) -> list[tuple[str, str | None, int]]:
        """(local, peer-or-None, prefix length) of the IPv4 addresses on an interface."""
        index = await self.link_index(ifname)
        out = []
        for msg in await self._call("list addresses", self._collect(self.ipr.addr("dump", index=index))):
            if msg["family"] != 2:
                continue
            local = msg.get("IFA_LOCAL")
            address = msg.get("IFA_ADDRESS")
            peer = address if address != local else None
            out.append((local, peer, int(msg["prefixlen"])))
        return out

    async def publish_proxy_arp(self, peer: str, *, skip: str | None = None) -> int | None:
        """Answer ARP for ``peer`` on the interface whose IPv4 subnet holds it (pppd's
        ``proxyarp``), so hosts on that LAN reach a tunnel client as a neighbour.  ``skip``: the
        tunnel's own interface.  Returns the interface index (for :meth:`withdraw_proxy_arp`), or
        None when no interface's subnet holds ``peer``.  Not in the undo log: the caller
        withdraws it when the session ends (the LAN interface outlives the session)."""
        peer_ip = ipaddress.IPv4Address(peer)
        for msg in await self._call("list addresses", self._collect(self.ipr.get_addr(family=2))):
            label = msg.get("IFA_LABEL")
            address = msg.get("IFA_ADDRESS")
            if label == skip or address is None:
                continue
            net = ipaddress.IPv4Network(f"{address}/{msg['prefixlen']}", strict=False)
            if peer_ip in net and net.prefixlen < 32:
                index = int(msg["index"])
                await self._call(f"publish {peer} on {label}",
                                 self.ipr.neigh("add", dst=peer, ifindex=index, flags=_NTF_PROXY))
                return index
        return None

    async def withdraw_proxy_arp(self, peer: str, index: int) -> None:
        try:
            await self.ipr.neigh("del", dst=peer, ifindex=index, flags=_NTF_PROXY)
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise NetConfigError(f"withdraw proxy ARP for {peer}: {exc}", errno_=exc.code) from exc

    # -- routes -------------------------------------------------------------------------------

    async def add_route(
        self,
        dst: str,
        *,
        dev: str | None = None,
        gateway: str | None = None,
        metric: int | None = None,
        table: int | None = None,
    ) -> None:
        """Add a route (``dst`` as ``a.b.c.d/len``; ``0.0.0.0/0`` for a default route)."""
        kwargs = await self._route_args(dst, dev=dev, gateway=gateway, metric=metric, table=table)
        await self._call(f"add route {dst}", self.ipr.route("add", **kwargs))

        async def undo() -> None:
            await self.ipr.route("del", **kwargs)

        self._undo.append((f"delete route {dst}", undo))

    async def delete_route(
        self,
        dst: str,
        *,
        dev: str | None = None,
        gateway: str | None = None,
        metric: int | None = None,
        table: int | None = None,
    ) -> None:
        """Delete a route now (and drop it from the undo log if we added it)."""
        kwargs = await self._route_args(dst, dev=dev, gateway=gateway, metric=metric, table=table)
        await self._call(f"delete route {dst}", self.ipr.route("del", **kwargs))
        self._undo = [u for u in self._undo if u[0] != f"delete route {dst}"]

    async def replace_host_route(self, ifname: str, peer: str, *, source: str, mtu: int) -> None:
        """``ip route replace PEER/32 dev IFNAME src SOURCE mtu MTU``: one session's route on a
        shared interface, with that session's MTU.  Not in the undo log (see
        :meth:`delete_host_route`; the interface's removal takes it along too)."""
        index = await self.link_index(ifname)
        await self._call(f"add route {peer}/32 dev {ifname}", self.ipr.route(
            "replace", dst=peer, dst_len=32, oif=index, prefsrc=source, metrics={"mtu": mtu}))

    async def delete_host_route(self, ifname: str, peer: str) -> None:
        index = await self.link_index(ifname)
        await self._call(f"delete route {peer}/32", self.ipr.route("del", dst=peer, dst_len=32, oif=index))

    async def _route_args(
        self, dst: str, *, dev: str | None, gateway: str | None, metric: int | None, table: int | None
    ) -> dict[str, Any]:
        address, prefixlen = _split(dst)
        kwargs: dict[str, Any] = {"dst": address, "dst_len": prefixlen}
        if ":" in address:
            kwargs["family"] = socket.AF_INET6
        if dev is not None:
            kwargs["oif"] = await self.link_index(dev)
        if gateway is not None:
            kwargs["gateway"] = gateway
        if metric is not None:
            kwargs["priority"] = metric
        if table is not None:
            kwargs["table"] = table
        return kwargs

    async def routes(self, *, table: int = 254) -> list[tuple[str, str | None, int | None]]:
        """(dst/len, gateway, oif) of the IPv4 routes in ``table`` (main by default)."""
        out = []
        msgs = await self._call("list routes", self._collect(self.ipr.route("dump", family=2)))
        for msg in msgs:
            if (msg.get("RTA_TABLE") or msg["table"]) != table:
                continue
            dst = msg.get("RTA_DST") or "0.0.0.0"
            out.append((f"{dst}/{msg['dst_len']}", msg.get("RTA_GATEWAY"), msg.get("RTA_OIF")))
        return out

    async def route_get(self, destination: str) -> RouteInfo:
        """The route the kernel would use now to reach ``destination``."""
        msgs = await self._call(f"route get {destination}", self.ipr.route("get", dst=destination))
        msg = msgs[0]
        oif = msg.get("RTA_OIF")
        ifname = None
        if oif is not None:
            links = await self._call("get link", self.ipr.link("get", index=oif))
            ifname = links[0].get("IFLA_IFNAME")
        return RouteInfo(
            destination=destination,
            gateway=msg.get("RTA_GATEWAY"),
            oif=oif,
            ifname=ifname,
            prefsrc=msg.get("RTA_PREFSRC"),
            is_local=msg["type"] == _RTN_LOCAL,
        )

    async def add_host_route_via_current_path(self, server: str) -> RouteInfo | None:
        """Pin ``server``/32 to the path it uses now, so a later default route through the
        tunnel does not capture the tunnel's own packets.

        Returns the path used, or ``None`` when nothing was added: the server is a local
        address, or that exact host route already exists (it is then not ours to delete).
        """
        info = await self.route_get(server)
        if info.is_local or info.oif is None:
            return None
        kwargs: dict[str, Any] = {"dst": server, "dst_len": 32, "oif": info.oif}
        if info.gateway is not None:
            kwargs["gateway"] = info.gateway
        try:
            await self.ipr.route("add", **kwargs)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return None
            raise NetConfigError(f"add host route to {server}: {exc}", errno_=exc.code) from exc

        async def undo() -> None:
            await self.ipr.route("del", **kwargs)

        self._undo.append((f"delete route {server}/32", undo))
        return info

    # -- undo ---------------------------------------------------------------------------------

    @property
    def pending_undo(self) -> list[str]:
        """What :meth:`cleanup` would revert, newest first."""
        return [what for what, _ in reversed(self._undo)]

    async def cleanup(self) -> None:
        """Revert everything this session changed, newest first; keep going past failures."""
        failures = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                await undo()
            except NetlinkError as exc:
                if exc.code not in _GONE:
                    failures.append(f"{what}: {exc}")
        if failures:
            raise NetConfigError("cleanup incomplete: " + "; ".join(failures))

    @staticmethod
    async def _collect(result: Any) -> list[Any]:
        # A dump answers with an async iterator, other requests with a list.
        res = await result
        if hasattr(res, "__aiter__"):
            return [x async for x in res]
        return list(res)
