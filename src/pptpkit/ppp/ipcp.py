"""IPCP (RFC 1332) with the Microsoft DNS/NBNS options (RFC 1877).

Server side: we have a fixed local address, assign the peer's address (a value or a callable
asked once per negotiation) and hand out DNS/NBNS servers.  Client side: we request
0.0.0.0 (and DNS/NBNS if configured) and take what the server Naks.  IP-Addresses (1) and
IP-Compression-Protocol (2, Van Jacobson) are always rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from types import MappingProxyType
from typing import Final

from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import ACK, REJECT, ControlProtocol, FsmConfig, Judgement, nak
from pptpkit.ppp.packet import Option
from pptpkit.ppp.protocols import PppProtocol

# What the acked-option tables hold outside a negotiation: shared, read-only, so an opened
# layer keeps no per-session copy of options it has already turned into its result.
_NO_OPTIONS: Final[Mapping[int, IPv4Address]] = MappingProxyType({})

_ZERO: Final = IPv4Address(0)


class IpcpOption(IntEnum):
    IP_ADDRESSES = 1
    IP_COMPRESSION_PROTOCOL = 2
    IP_ADDRESS = 3
    PRIMARY_DNS = 129
    PRIMARY_NBNS = 130
    SECONDARY_DNS = 131
    SECONDARY_NBNS = 132


_SERVER_OPTIONS: Final = (
    IpcpOption.PRIMARY_DNS,
    IpcpOption.SECONDARY_DNS,
    IpcpOption.PRIMARY_NBNS,
    IpcpOption.SECONDARY_NBNS,
)

PeerAddress = IPv4Address | Callable[[], IPv4Address | None] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IpcpConfig:
    """IPCP settings.

    ``local_address``: our address (None: ask the peer to assign one, as a client does).
    ``peer_address``: the address the peer must use: a value, a callable asked once per
    negotiation (returning None when it has none), or None to accept any non-zero address
    the peer asks for.  ``dns_servers``/``nbns_servers``: up to two servers (primary,
    secondary) we hand out.  ``request_dns``/``request_nbns``: ask the peer for its servers.
    """

    local_address: IPv4Address | None = None
    peer_address: PeerAddress = None
    dns_servers: tuple[IPv4Address, ...] = ()
    nbns_servers: tuple[IPv4Address, ...] = ()
    request_dns: bool = False
    request_nbns: bool = False
    fsm: FsmConfig = field(default_factory=FsmConfig)

    def __post_init__(self) -> None:
        if self.local_address is not None and self.local_address == _ZERO:
            raise ConfigError("local_address 0.0.0.0: leave it unset to have the peer assign one")
        if isinstance(self.peer_address, IPv4Address) and self.peer_address == _ZERO:
            raise ConfigError("peer_address 0.0.0.0 is not an address to assign")
        for name in ("dns_servers", "nbns_servers"):
            servers = getattr(self, name)
            if len(servers) > 2 or not all(isinstance(a, IPv4Address) and a != _ZERO for a in servers):
                raise ConfigError(f"{name} takes at most two non-zero IPv4 addresses")


@dataclass(frozen=True, slots=True, kw_only=True)
class IpcpResult:
    """What IPCP agreed, valid while Opened; servers are those the peer gave us."""

    local_address: IPv4Address | None
    peer_address: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    nbns_servers: tuple[IPv4Address, ...]


def _addr_option(kind: int, address: IPv4Address) -> Option:
    return Option(type=kind, data=address.packed)


def _servers(acked: Mapping[int, IPv4Address], *kinds: int) -> tuple[IPv4Address, ...]:
    return tuple(a for k in kinds if (a := acked.get(k, _ZERO)) != _ZERO)


class IpcpEngine(ControlProtocol):
    __slots__ = (
        '_acked_local', '_acked_peer', '_assigned', '_assigned_known', '_hinted', '_result', '_wanted',
        'config',
    )

    def __init__(self, config: IpcpConfig | None = None) -> None:
        self.config = config or IpcpConfig()
        super().__init__(PppProtocol.IPCP, self.config.fsm)
        self._wanted: dict[int, IPv4Address] = {}
        self._assigned: IPv4Address | None = None
        self._assigned_known = False
        self._hinted = False
        self._acked_local: Mapping[int, IPv4Address] = _NO_OPTIONS
        self._acked_peer: Mapping[int, IPv4Address] = _NO_OPTIONS
        self._result: IpcpResult | None = None
        self.reset_negotiation()

    @property
    def result(self) -> IpcpResult | None:
        return self._result

    def _peer_assignment(self) -> IPv4Address | None:
        """The address the peer must use, asking the callable at most once per negotiation."""
        if not self._assigned_known:
            source = self.config.peer_address
            value = source() if callable(source) else source
            self._assigned = value if value is not None and value != _ZERO else None
            self._assigned_known = True
        return self._assigned

    def _offer(self, kind: int) -> IPv4Address | None:
        servers = self.config.dns_servers if kind in (129, 131) else self.config.nbns_servers
        index = 0 if kind in (129, 130) else 1
        return servers[index] if index < len(servers) else None

    def reset_negotiation(self) -> None:
        cfg = self.config
        self._wanted = {IpcpOption.IP_ADDRESS: cfg.local_address or _ZERO}
        if cfg.request_dns:
            self._wanted[IpcpOption.PRIMARY_DNS] = _ZERO
            self._wanted[IpcpOption.SECONDARY_DNS] = _ZERO
        if cfg.request_nbns:
            self._wanted[IpcpOption.PRIMARY_NBNS] = _ZERO
            self._wanted[IpcpOption.SECONDARY_NBNS] = _ZERO
        self._assigned_known = False
        self._hinted = False

    def build_request(self) -> list[Option]:
        return [_addr_option(kind, addr) for kind, addr in self._wanted.items()]

    def judge_option(self, option: Option) -> Judgement:
        kind = option.type
        if kind not in (IpcpOption.IP_ADDRESS, *_SERVER_OPTIONS) or len(option.data) != 4:
            return REJECT
        asked = IPv4Address(option.data)
        if kind == IpcpOption.IP_ADDRESS:
            assigned = self._peer_assignment()
            if assigned is not None:
                return ACK if asked == assigned else nak(_addr_option(kind, assigned))
            # Nothing to assign: take any real address, but there is nothing to offer for 0.
            return ACK if asked != _ZERO else REJECT
        offer = self._offer(kind)
        if offer is None:
            return REJECT
        return ACK if asked == offer else nak(_addr_option(kind, offer))

    def request_hints(self, options: Sequence[Option]) -> list[Option]:
        # RFC 1332 3.3 allows a Nak to carry IP-Address when the peer left it out and we
        # have one for it; only once, so a peer that cannot take it is not Nak'ed forever.
        if self._hinted or any(o.type == IpcpOption.IP_ADDRESS for o in options):
            return []
        assigned = self._peer_assignment()
        if assigned is None:
            return []
        self._hinted = True
        return [_addr_option(IpcpOption.IP_ADDRESS, assigned)]

    def peer_request_acked(self, options: Sequence[Option]) -> None:
        self._acked_peer = {o.type: IPv4Address(o.data) for o in options if len(o.data) == 4}

    def our_request_acked(self, options: Sequence[Option]) -> None:
        self._acked_local = {o.type: IPv4Address(o.data) for o in options if len(o.data) == 4}

    def our_request_naked(self, options: Sequence[Option]) -> None:
        for option in options:
            if option.type not in self._wanted or len(option.data) != 4:
                continue
            suggested = IPv4Address(option.data)
            if option.type == IpcpOption.IP_ADDRESS and self.config.local_address is not None:
                # A configured address is not negotiable; the peer will end up rejecting it.
                continue
            self._wanted[option.type] = suggested

    def our_request_rejected(self, options: Sequence[Option]) -> None:
        for option in options:
            self._wanted.pop(option.type, None)

    def layer_up(self) -> None:
        local, peer = self._acked_local, self._acked_peer
        local_address = local.get(IpcpOption.IP_ADDRESS) or self.config.local_address
        # A peer that took no address in IPCP still has the one we assigned, if any.
        peer_address = peer.get(IpcpOption.IP_ADDRESS) or self._assigned
        self._result = IpcpResult(
            local_address=local_address if local_address != _ZERO else None,
            peer_address=peer_address,
            dns_servers=_servers(local, IpcpOption.PRIMARY_DNS, IpcpOption.SECONDARY_DNS),
            nbns_servers=_servers(local, IpcpOption.PRIMARY_NBNS, IpcpOption.SECONDARY_NBNS),
        )
        self._acked_local = self._acked_peer = _NO_OPTIONS

    def layer_down(self) -> None:
        self._result = None
