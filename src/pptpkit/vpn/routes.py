"""Which routes ``pptpkit connect`` puts through the tunnel, and why none of them may loop.

A PPTP tunnel carries its own transport: the TCP control connection and the GRE packets go to
the server *outside* the tunnel.  If a route through the tunnel covers the server, the kernel
sends those packets into the tunnel, which wraps them in GRE addressed to the server, which the
kernel routes into the tunnel again (pptp-client's "broken by an IP loop" diagram): the link
dies within seconds and the host spins.  The cure is a host route (``SERVER/32``) pinned to the
path the server is reached by *before* the tunnel exists; a /32 is more specific than anything a
user can route through the tunnel, except the server's own /32.

:func:`plan_routes` is the sans-IO decision (what to add, or refuse and say why);
:func:`check_no_loop` is the same question asked of the kernel once the routes are in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from pptpkit.errors import ConfigError, PptpkitError

__all__ = [
    "DEFAULT_ROUTE_HALVES",
    "MAX_ROUTES",
    "RouteLoopError",
    "RoutePlan",
    "check_no_loop",
    "parse_route",
    "plan_routes",
]

#: ``--default-route`` installs these two instead of replacing 0.0.0.0/0: together they cover
#: everything and each is more specific than any default route, so the original default stays
#: in the table untouched (nothing to restore, nothing lost if we die) and wins again as soon as
#: they go away with the tunnel interface.  OpenVPN's ``def1`` does the same.
DEFAULT_ROUTE_HALVES: Final = (IPv4Network("0.0.0.0/1"), IPv4Network("128.0.0.0/1"))

#: More ``--route`` arguments than this is a script gone wrong, not a VPN configuration.
MAX_ROUTES: Final = 1024


class RouteLoopError(PptpkitError):
    """A route through the tunnel would carry the tunnel's own packets (see the module doc)."""


def parse_route(text: str) -> IPv4Network:
    """``A.B.C.D/LEN`` or a bare address (a /32); host bits must be zero so typos show."""
    value = text.strip()
    try:
        net = IPv4Network(value if "/" in value else f"{value}/32")
    except ValueError as exc:
        raise ConfigError(f"bad route {text!r}: {exc}") from None
    return net


@dataclass(frozen=True, kw_only=True, slots=True)
class RoutePlan:
    """The prefixes to route into the tunnel interface, in the order to add them."""

    tunnel_routes: tuple[IPv4Network, ...]

    def describe(self) -> str:
        return ", ".join(str(n) for n in self.tunnel_routes) or "none"


def plan_routes(
    server: IPv4Address,
    requested: Sequence[IPv4Network],
    *,
    default_route: bool,
    host_route_pinned: bool,
) -> RoutePlan:
    """Decide the tunnel routes, or raise :class:`RouteLoopError`.

    ``host_route_pinned``: a ``SERVER/32`` through the pre-tunnel path is (or will be) in the
    table, so wider routes covering the server are harmless.  Refused: the server's own /32
    (it would replace or shadow the pin), and any route covering the server without the pin.
    Duplicates are dropped, the order is kept.
    """
    if len(requested) > MAX_ROUTES:
        raise ConfigError(f"more than {MAX_ROUTES} routes requested")
    wanted: list[IPv4Network] = list(requested)
    if default_route:
        wanted.extend(DEFAULT_ROUTE_HALVES)
    out: list[IPv4Network] = []
    for net in wanted:
        if net in out:
            continue
        if server in net:
            if net.prefixlen == 32:
                raise RouteLoopError(
                    f"route {net} is the server itself: the tunnel would carry its own GRE and TCP")
            if not host_route_pinned:
                what = "--default-route" if net in DEFAULT_ROUTE_HALVES else f"route {net}"
                raise RouteLoopError(
                    f"{what} covers the server {server} and no host route to it could be pinned "
                    f"outside the tunnel: the tunnel would carry its own GRE and TCP")
        out.append(net)
    return RoutePlan(tunnel_routes=tuple(out))


def check_no_loop(server: IPv4Address, tunnel_ifname: str, egress_ifname: str | None,
                  covered_by: Iterable[IPv4Network] = ()) -> None:
    """What the kernel says after the routes went in: the server must not be reached through
    the tunnel interface.  ``egress_ifname`` is the interface ``route get SERVER`` returns now."""
    if egress_ifname is not None and egress_ifname == tunnel_ifname:
        nets = [str(n) for n in covered_by if server in n]
        via = f" (through {', '.join(nets)})" if nets else ""
        raise RouteLoopError(
            f"the server {server} is now routed into the tunnel {tunnel_ifname}{via}: refusing "
            f"to loop the tunnel's own packets")
