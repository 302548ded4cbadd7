"""The built-in server's sessions: our own PPP stack on every call, IP on TUN.

:class:`BuiltinSessions` is the call handler factory :class:`~pptpkit.pptp.server.PptpServer`
asks for every call: it applies the session limits, builds a :class:`~pptpkit.io.link.PppLink`
on the call (the call is the link's frame transport, and the link's ``frame_received`` is
attached to the call's GRE channel, so a data packet goes GRE engine -> PPP session -> TUN with
no hop in between), and takes the peer's address from the pool or the secrets file.

Bookkeeping is keyed, never scanned: each link's events arrive with their session bound in,
sessions are found by call and by link in one lookup, the addresses held (pool pairs and static
addresses) are one counted set the pool skips, and the address -> session map answers "who has
this address" at once.  A server with thousands of sessions does constant work per event.  The
peer's address is claimed when its data plane is attached, before the interface is built, so
two sessions given the same static address cannot both get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from pptpkit.auth.base import AuthenticatorConfig, ExternalVerdict
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import SecretsProvider
from pptpkit.control import GeneralError, OutgoingCallResult
from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.io.dataplane import link_local
from pptpkit.io.link import DataPlane, PacketSink, PppLink, outcome_text
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.throttle import LogThrottle, left_out_text
from pptpkit.ppp.ipcp import PeerAddress
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    Ipv6Down,
    Ipv6Up,
    LinkDown,
    LinkUp,
    MppePolicy,
    SessionConfig,
    SessionEvent,
    SessionRole,
    VerificationNeeded,
)
from pptpkit.pptp.server import CallHandler, RejectCall, ServerCall
from pptpkit.radius.access import AccessResult
from pptpkit.vpn.notices import (
    SessionAuthenticated,
    SessionAuthFailed,
    SessionDown,
    SessionIpv6Down,
    SessionIpv6Up,
    SessionNotice,
    SessionStarted,
    SessionUp,
    TerminateCause,
    terminate_cause,
)
from pptpkit.vpn.pool import AddressPool, PrefixPool
from pptpkit.vpn.workers import LedgerClient, LedgerRefusal

__all__ = [
    "DEFAULT_AUTH_TIMEOUT",
    "DEFAULT_BUILTIN_MRU",
    "DEFAULT_MAX_PREAUTH",
    "DEFAULT_MAX_PREAUTH_PER_SOURCE",
    "BuiltinConfig",
    "BuiltinSessions",
    "Session",
    "radius_mppe_policy",
]

log = logging.getLogger(__name__)


#: Default MRU (and so, less the MPPE overhead, the TUN MTU) of the built-in server.  A 1500-byte
#: underlay carries 1500 - 20 (IPv4) - 16 (GRE with sequence and ack) - 4 (PPP address/control
#: and protocol) = 1460 octets of PPP information without fragmenting GRE; 1400, what pptpd
#: setups commonly configure, keeps a margin for underlays that are themselves tunnelled
#: (PPPoE 1492, IPsec) so GRE is never fragmented on the way.
DEFAULT_BUILTIN_MRU: Final = 1400
#: Seconds a call has to authenticate.  LCP and MS-CHAPv2 take a few round trips; a peer still
#: not done after this is not a client on a slow link but one holding a place.
DEFAULT_AUTH_TIMEOUT: Final = 15.0
#: Calls not authenticated yet, in all and from one address.
DEFAULT_MAX_PREAUTH: Final = 256
DEFAULT_MAX_PREAUTH_PER_SOURCE: Final = 32


def _default_mppe() -> MppePolicy:
    return MppePolicy(bits_40=False, bits_56=False, bits_128=True, required=True)


def _default_auth() -> AuthPolicy:
    return AuthPolicy(require=frozenset({AuthMethod.MSCHAP_V2}))


@dataclass(frozen=True, kw_only=True)
class BuiltinConfig:
    """The built-in server's PPP settings (what pptpd's options.pptpd says to pppd).

    ``pool``: the localip/remoteip pool; a secrets entry naming one address gives that user
    that address instead.  ``secrets``: the authenticator's provider (a
    :class:`~pptpkit.auth.secrets.PppSecretsFile`, reloadable).  ``name``: our CHAP name.
    Security defaults: MS-CHAPv2 required, MPPE-128 required.  ``max_sessions``: authenticated
    sessions in all; ``max_per_source``: sessions from one client address.  Both refuse the
    call with Outgoing-Call-Reply result Busy.  Calls that have not authenticated yet are held
    apart, so that peers who never authenticate cannot take the places of users who do: at most
    ``max_preauth`` of them in all and ``max_preauth_per_source`` from one address (beyond:
    Busy), each given ``auth_timeout`` seconds from the call to authenticate (without
    authentication: to bring IPCP up) before it is closed.  ``close_timeout``: how long a shutdown waits
    for each peer's LCP Terminate-Ack.  ``source_check``: drop (and count) packets whose source
    is not the address the session was given, so no user sends as another (in shared-TUN mode
    replies would reach the victim, and ``rp_filter`` cannot see inside one interface).
    ``proxyarp``: publish each peer's address on the LAN interface whose subnet holds it
    (pppd's option), withdrawn when the session ends.
    """

    pool: AddressPool
    secrets: SecretsProvider
    name: str = "pptpd"
    auth_policy: AuthPolicy = field(default_factory=_default_auth)
    mppe: MppePolicy = field(default_factory=_default_mppe)
    dns_servers: tuple[ipaddress.IPv4Address, ...] = ()
    nbns_servers: tuple[ipaddress.IPv4Address, ...] = ()
    mru: int = DEFAULT_BUILTIN_MRU
    echo_interval: float = 10.0
    echo_failure: int = 3
    idle_timeout: float = 0.0
    max_sessions: int = 1000
    max_per_source: int = 16
    close_timeout: float = 2.0
    source_check: bool = True
    proxyarp: bool = False
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    max_preauth: int = DEFAULT_MAX_PREAUTH
    max_preauth_per_source: int = DEFAULT_MAX_PREAUTH_PER_SOURCE
    #: Credentials are verified outside (RADIUS, through ``BuiltinSessions.verifier``), not
    #: against ``secrets``.
    external_auth: bool = False
    #: IPV6CP on every session (the data plane gives the interface the link-local pair).
    ipv6: bool = False
    #: A /64 from here per session, routed to the client (pppd has no such thing; accel-ppp's
    #: ipv6-pool with delegation does).
    ipv6_prefixes: PrefixPool | None = None
    #: pppd's chapms-strip-domain: MS-CHAP names are looked up without their DOMAIN\ part.
    mschap_strip_domain: bool = False

    def __post_init__(self) -> None:
        if self.max_sessions < 1 or self.max_per_source < 1:
            raise ConfigError("max_sessions and max_per_source must be at least 1")
        if self.max_preauth < 1 or self.max_preauth_per_source < 1:
            raise ConfigError("max_preauth and max_preauth_per_source must be at least 1")
        if not 0 < self.auth_timeout <= 3600:
            raise ConfigError("auth_timeout must be more than 0 and at most 3600 seconds")
        if not self.name:
            raise ConfigError("the server name must not be empty")
        if self.mppe.required and not self.auth_policy.authenticates_peer:
            raise ConfigError("MPPE needs keys from MS-CHAP: it cannot be required without authentication")
        if self.ipv6_prefixes is not None and not self.ipv6:
            raise ConfigError("--ipv6-prefix needs --ipv6")
        if self.external_auth and AuthMethod.EAP in self.auth_policy.offered_methods():
            raise ConfigError("EAP cannot be verified through RADIUS here: drop --require-eap")
        self.session_config(None)

    def session_config(self, peer_address: PeerAddress, local: str | None = None) -> SessionConfig:
        return SessionConfig(
            role=SessionRole.SERVER,
            auth_policy=self.auth_policy,
            # The verifier has the call's own deadline: a later verdict would find the call gone.
            authenticator=AuthenticatorConfig(name=self.name, secrets=self.secrets,
                                              external=self.external_auth,
                                              verification_timeout=self.auth_timeout,
                                              mschap_strip_domain=self.mschap_strip_domain)
            if self.auth_policy.authenticates_peer else None,
            mru=self.mru,
            echo_interval=self.echo_interval,
            echo_failure=self.echo_failure,
            local_address=ipaddress.IPv4Address(local or self.pool.local[0]),
            peer_address=peer_address,
            dns_servers=self.dns_servers,
            nbns_servers=self.nbns_servers,
            mppe=self.mppe,
            idle_timeout=self.idle_timeout,
            ipv6=self.ipv6,
        )


class Session:
    """One built-in session: its call, its link, and what it holds."""

    __slots__ = (
        "access", "address", "auth_deadline", "auth_method", "call", "cause", "id", "ipv6_prefix", "link",
        "pair", "preauth", "proxy_arp", "session_deadline", "source", "started", "up", "user",
    )

    def __init__(self, session_id: str, call: ServerCall, link: PppLink, source: str,
                 pair: tuple[str, str] | None) -> None:
        #: Unique per server (and across its restarts): RADIUS's Acct-Session-Id, the ID in
        #: every log line and in ``pptpkit ctl``.
        self.id = session_id
        self.call = call
        self.link = link
        self.source = source
        self.pair = pair
        #: Wall-clock start (for listings; durations use the loop's clock).
        self.started = time.time()
        #: The authenticated user, or the name tried while authenticating.
        self.user = ""
        self.auth_method: AuthMethod | None = None
        self.up: LinkUp | None = None
        #: Set when the server ends the session for a reason of its own (kill, shutdown, ...).
        self.cause: TerminateCause | None = None
        #: (address, interface index) of the proxy ARP entry published for the peer.
        self.proxy_arp: tuple[str, int] | None = None
        #: True until the peer authenticated (or, without authentication, IPCP came up).
        self.preauth = True
        self.auth_deadline: asyncio.TimerHandle | None = None
        #: The peer's address while the network layer is up (from the pool or a static one).
        self.address: ipaddress.IPv4Address | None = None
        #: The RADIUS Access-Accept that let the user in (None without RADIUS): accounting
        #: echoes its Class, and its timeouts and interim interval apply to the session.
        self.access: AccessResult | None = None
        #: Session-Timeout: when the session is ended (RADIUS, CoA, or set by the operator).
        self.session_deadline: asyncio.TimerHandle | None = None
        #: ``--ipv6-prefix``: the prefix routed to this client.
        self.ipv6_prefix: ipaddress.IPv6Network | None = None


class _CheckedPlane:
    """Claims the peer's address for its session before the real data plane is configured,
    and refuses one another live session holds (a secrets-file static address that collides
    with the pool, or two peers given the same static address); releases it on detach."""

    def __init__(self, owner: BuiltinSessions, inner: DataPlane) -> None:
        self._owner = owner
        self._inner = inner

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        owner = self._owner
        await owner.claim_shared(link, up.peer_address)
        owner.claim_address(link, up.peer_address)
        try:
            sink = await self._inner.attach(link, up)
        except BaseException:
            owner.release_address(link)
            raise
        if owner.config.proxyarp and up.peer_address is not None:
            await owner.publish_proxy_arp(link, str(up.peer_address))
        if up.peer_ipv6_id is not None:
            await owner.route_ipv6_prefix(link, up.peer_ipv6_id)
        return sink

    async def ipv6_up(self, link: PppLink, local_id: bytes, peer_id: bytes) -> None:
        handler = getattr(self._inner, "ipv6_up", None)
        if handler is not None:
            await handler(link, local_id, peer_id)
        await self._owner.route_ipv6_prefix(link, peer_id)

    async def detach(self, link: PppLink) -> None:
        try:
            await self._owner.withdraw_proxy_arp(link)
            await self._inner.detach(link)
        finally:
            self._owner.release_address(link)


class BuiltinSessions:
    """The built-in call handler factory: a :class:`~pptpkit.io.link.PppLink` per call.

    Use an instance as the ``handler_factory`` of :class:`~pptpkit.pptp.server.PptpServer`.
    ``data_plane`` is a :class:`~pptpkit.io.dataplane.TunDataPlane` (an interface per session) or
    an open :class:`~pptpkit.io.dataplane.SharedTunRouter`.  :meth:`close_all` ends every session
    with an LCP Terminate-Request (call before :meth:`PptpServer.close`, which then stops the
    control connections); :meth:`reload_secrets` re-reads a secrets file without touching
    sessions.
    """

    def __init__(self, config: BuiltinConfig, data_plane: DataPlane) -> None:
        self.config = config
        self._plane = _CheckedPlane(self, data_plane)
        self._sessions: dict[ServerCall, Session] = {}
        self._by_link: dict[PppLink, Session] = {}
        self._per_source: dict[str, int] = {}
        self._established = 0
        self._preauth_per_source: dict[str, int] = {}
        self._preauth = 0
        self._expiry_log = LogThrottle()
        #: Remote addresses held by live sessions: pool pairs and static addresses alike.
        self._held: dict[str, int] = {}
        self._by_address: dict[ipaddress.IPv4Address, Session] = {}
        self._closing = False
        self._by_id: dict[str, Session] = {}
        # Acct-Session-Id: the start time makes IDs unique across restarts, the counter within.
        self._id_prefix = f"{int(time.time()) & 0xFFFFFFFF:08X}"
        self._id_counter = itertools.count(1)
        #: Called with every :data:`~pptpkit.vpn.notices.SessionNotice`, in order.
        self.observers: list[Callable[[SessionNotice], None]] = []
        #: Asked before a call is admitted: a reason to refuse it (Busy), or None.
        self.admission: list[Callable[[ServerCall], str | None]] = []
        #: With ``external_auth``: gives the verdict on a peer's credentials (RADIUS), and may
        #: set ``session.access``.  Its exceptions fail the authentication, logged.
        self.verifier: Callable[[Session, VerificationNeeded], Awaitable[ExternalVerdict]] | None = None
        self._verifying: set[asyncio.Task[None]] = set()
        #: Changes a live session's rate limit (kbit/s down, up); set by the shaper, used by
        #: RADIUS CoA.  None: no shaping runs.
        self.rate_setter: Callable[[Session, int, int], Awaitable[bool]] | None = None
        #: ``--workers``: the supervisor's ledger decides the limits, the pool pairs and the
        #: static addresses across every worker (:mod:`pptpkit.vpn.workers`); None: this
        #: process alone does.
        self.ledger: LedgerClient | None = None
        self.refused_max_sessions = 0
        self.refused_per_source = 0
        self.refused_by_admission = 0
        self.refused_preauth = 0
        self.auth_timeouts = 0
        self.sessions_up_total = 0
        #: Why the last :meth:`reload_secrets` failed (``path:line: ...``), None if it worked.
        self.reload_error: str | None = None

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def set_worker(self, index: int, ledger: LedgerClient) -> None:
        """Run as worker ``index`` of a server of several processes: the limits, pool and
        static addresses are the ``ledger``'s, and session IDs carry the index in the top bits
        of their counter, so no two workers started in one second hand out the same ID."""
        self.ledger = ledger
        self._id_counter = itertools.count((index << 26) + 1)

    async def claim_shared(self, link: PppLink, address: ipaddress.IPv4Address | None) -> None:
        """With a ledger: a static address (not the session's reserved pair) is claimed across
        workers first; :class:`RejectCall` if another worker's session has it."""
        session = self._by_link.get(link)
        ledger = self.ledger
        if ledger is None or session is None or address is None:
            return
        if session.pair is not None and session.pair[1] == str(address):
            return
        why, released = await ledger.claim(session.id, str(address))
        if why is not None:
            raise RejectCall(why)
        if released:
            session.pair = None

    @property
    def id_prefix(self) -> str:
        """The first 8 hex digits of every session ID of this run (its start time)."""
        return self._id_prefix

    def all(self) -> list[Session]:
        """Every live session, oldest first."""
        return list(self._by_id.values())

    def find(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def kill(self, session: Session, reason: str = "killed by the administrator",
             cause: TerminateCause = TerminateCause.ADMIN_RESET) -> None:
        """End a session from our side: LCP Terminate-Request with ``reason``, then the call is
        cleared; its end is reported with ``cause``."""
        if session.cause is None:
            session.cause = cause
        session.link.close(reason)

    def set_session_timeout(self, session: Session, seconds: float | None) -> None:
        """End ``session`` ``seconds`` from now with the cause Session-Timeout (RADIUS's
        Session-Timeout, or a CoA changing it); None removes the limit."""
        if session.session_deadline is not None:
            session.session_deadline.cancel()
            session.session_deadline = None
        if seconds is None or session.link.finished:
            return
        session.session_deadline = asyncio.get_running_loop().call_later(
            max(0.0, seconds), self._session_expired, session)

    def _session_expired(self, session: Session) -> None:
        session.session_deadline = None
        if session.link.finished:
            return
        log.info("[%s] session timeout: ending the session of user %r", session.id, session.user)
        self.kill(session, "session timeout", TerminateCause.SESSION_TIMEOUT)

    async def route_ipv6_prefix(self, link: PppLink, peer_id: bytes) -> None:
        """``--ipv6-prefix``: a prefix of its own for the session, routed to the client's
        link-local address; it goes with the interface, and back to the pool with the session."""
        session = self._by_link.get(link)
        pool = self.config.ipv6_prefixes
        if session is None or pool is None or session.ipv6_prefix is not None or link.interface is None:
            return
        prefix = pool.allocate()
        if prefix is None:
            log.warning("[%s] no free IPv6 prefix in %s", session.id, pool.network)
            return
        session.ipv6_prefix = prefix
        link.allow_ipv6_prefix(prefix.network_address.packed[:8])
        via = link_local(peer_id)
        nc = await NetConfig().open()
        try:
            await nc.add_route(str(prefix), dev=link.interface, gateway=via)
        except NetConfigError as exc:
            log.warning("[%s] IPv6 prefix %s not routed: %s", session.id, prefix, exc)
            return
        finally:
            await nc.close()
        log.info("[%s] IPv6 prefix %s routed to %s on %s", session.id, prefix, via, link.interface)

    async def publish_proxy_arp(self, link: PppLink, peer: str) -> None:
        """pppd's ``proxyarp``: LAN hosts reach the client as a neighbour.  Like pppd, a failure
        is logged and the session goes on."""
        session = self._by_link.get(link)
        if session is None:
            return
        nc = await NetConfig().open()
        try:
            index = await nc.publish_proxy_arp(peer, skip=link.interface)
        except NetConfigError as exc:
            log.warning("[%s] proxyarp: cannot publish %s: %s", session.id, peer, exc)
            return
        finally:
            await nc.close()
        if index is None:
            log.warning("[%s] proxyarp: no interface on the same subnet as %s", session.id, peer)
            return
        session.proxy_arp = (peer, index)

    async def withdraw_proxy_arp(self, link: PppLink) -> None:
        session = self._by_link.get(link)
        if session is None or session.proxy_arp is None:
            return
        peer, index = session.proxy_arp
        session.proxy_arp = None
        nc = await NetConfig().open()
        try:
            await nc.withdraw_proxy_arp(peer, index)
        except NetConfigError as exc:
            log.warning("[%s] proxyarp: cannot withdraw %s: %s", session.id, peer, exc)
        finally:
            await nc.close()

    def _notify(self, notice: SessionNotice) -> None:
        for observer in self.observers:
            try:
                observer(notice)
            except Exception:
                log.exception("[%s] an observer failed on %s", notice.session.id,
                              type(notice).__name__)

    @property
    def established(self) -> int:
        """Sessions past authentication."""
        return self._established

    @property
    def preauth(self) -> int:
        """Calls that have not authenticated yet."""
        return self._preauth

    @property
    def links(self) -> list[PppLink]:
        return [s.link for s in self._sessions.values()]

    def session_of(self, call: ServerCall) -> Session | None:
        return self._sessions.get(call)

    def holder_of(self, address: ipaddress.IPv4Address | None) -> Session | None:
        """The live session whose peer has ``address``, if any."""
        return None if address is None else self._by_address.get(address)

    def claim_address(self, link: PppLink, address: ipaddress.IPv4Address | None) -> None:
        """Record that ``link``'s peer now has ``address``; :class:`RejectCall` if another
        session has it."""
        session = self._by_link.get(link)
        if session is None or address is None:
            return
        holder = self._by_address.get(address)
        if holder is not None and holder is not session:
            raise RejectCall(f"address {address} is in use by {holder.link.name}")
        if session.address == address:
            return
        self.release_address(link)
        session.address = address
        self._by_address[address] = session
        if session.pair is None or session.pair[1] != str(address):
            # A static address (secrets file): keep the pool from handing it out too.
            self._hold(str(address))

    def release_address(self, link: PppLink) -> None:
        session = self._by_link.get(link)
        if session is None or session.address is None:
            return
        address, session.address = session.address, None
        if self._by_address.get(address) is session:
            del self._by_address[address]
        if session.pair is None or session.pair[1] != str(address):
            self._unhold(str(address))
            if self.ledger is not None:
                self.ledger.unclaim(session.id)

    def _hold(self, address: str) -> None:
        _count_up(self._held, address)

    def _unhold(self, address: str) -> None:
        _count_down(self._held, address)

    def _take_pair(self) -> tuple[str, str] | None:
        pair = self.config.pool.allocate(exclude=self._held)
        if pair is not None:
            self._hold(pair[1])
        return pair

    async def __call__(self, call: ServerCall) -> CallHandler:
        cfg = self.config
        source = call.peer_address
        if self._closing:
            raise RejectCall("shutting down", result=OutgoingCallResult.GENERAL_ERROR)
        if self.ledger is not None:
            return await self._admit_shared(call)
        if self._established >= cfg.max_sessions:
            self.refused_max_sessions += 1
            raise RejectCall(f"{cfg.max_sessions} sessions already (max sessions)",
                             result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        if self._per_source.get(source, 0) >= cfg.max_per_source:
            self.refused_per_source += 1
            raise RejectCall(f"{cfg.max_per_source} sessions from {source} already (max per source)",
                             result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        for check in self.admission:
            refusal = check(call)
            if refusal is not None:
                self.refused_by_admission += 1
                raise RejectCall(refusal, result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        if (self._preauth >= cfg.max_preauth
                or self._preauth_per_source.get(source, 0) >= cfg.max_preauth_per_source):
            self.refused_preauth += 1
            why = (f"{cfg.max_preauth} calls are authenticating already" if self._preauth >= cfg.max_preauth
                   else f"{cfg.max_preauth_per_source} calls from {source} are authenticating already")
            raise RejectCall(why, result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        pair: tuple[str, str] | None = None
        if len(cfg.pool.local) > 1:
            # Several local addresses are paired with remote ones in order (pptpd), so the
            # pair is taken now; with one local address the peer's is picked only if the
            # secrets file does not name one.
            pair = self._take_pair()
            if pair is None:
                raise RejectCall("no free address in the remoteip pool")
        return self._open(call, f"{self._id_prefix}{next(self._id_counter):08X}", pair)

    async def _admit_shared(self, call: ServerCall) -> CallHandler:
        """Admission with a ledger: this worker's own checks, then the ledger's limits, which
        also reserve the pool pair (see :mod:`pptpkit.vpn.workers`)."""
        assert self.ledger is not None
        for check in self.admission:
            refusal = check(call)
            if refusal is not None:
                self.refused_by_admission += 1
                raise RejectCall(refusal, result=OutgoingCallResult.BUSY, error=GeneralError.NO_RESOURCE)
        session_id = f"{self._id_prefix}{next(self._id_counter):08X}"
        try:
            pair = await self.ledger.admit(session_id, call.peer_address)
        except LedgerRefusal as exc:
            if exc.kind == "max_sessions":
                self.refused_max_sessions += 1
            elif exc.kind == "per_source":
                self.refused_per_source += 1
            elif exc.kind == "preauth":
                self.refused_preauth += 1
            if exc.kind == "pool":
                raise RejectCall(str(exc)) from None
            raise RejectCall(str(exc), result=OutgoingCallResult.BUSY,
                             error=GeneralError.NO_RESOURCE) from None
        if self._closing or call.ended:
            self.ledger.release(session_id)
            raise RejectCall("call ended while it was admitted", result=OutgoingCallResult.GENERAL_ERROR)
        return self._open(call, session_id, pair)

    def _open(self, call: ServerCall, session_id: str, pair: tuple[str, str] | None) -> CallHandler:
        cfg = self.config
        source = call.peer_address
        local = pair[0] if pair is not None else None
        session: Session | None = None

        def peer_address() -> ipaddress.IPv4Address | None:
            assert session is not None
            framed = session.access.framed_ip if session.access is not None else None
            if isinstance(framed, ipaddress.IPv4Address):
                return framed  # RADIUS's Framed-IP-Address: a static address, claimed like one
            if session.pair is None:
                # With a ledger the pair was reserved at admission, or the pool was empty then.
                session.pair = self._take_pair() if self.ledger is None else None
                if session.pair is None:
                    log.warning("call %d from %s: no free address in the remoteip pool", call.call_id, source)
                    return None
            return ipaddress.IPv4Address(session.pair[1])

        def on_event(link: PppLink, event: SessionEvent) -> None:
            # The session is bound in here, so no event has to look it up.
            assert session is not None
            self._event(session, link, event)

        link = PppLink(cfg.session_config(peer_address, local), call, self._plane, on_event=on_event,
                       name=f"call {call.call_id} from {source}", source_check=cfg.source_check)
        session = Session(session_id, call, link, source, pair)
        self._by_link[link] = session
        self._by_id[session.id] = session
        # From here the call's GRE channel calls the link directly (frames wait for start()).
        call.on_frame = link.frame_received
        self._sessions[call] = session
        _count_up(self._per_source, source)
        self._preauth += 1
        _count_up(self._preauth_per_source, source)
        session.auth_deadline = asyncio.get_running_loop().call_later(
            cfg.auth_timeout, self._auth_expired, session)
        handler = _LinkHandler(self, session)
        log.info("[%s] call %d from %s:%d", session.id, call.call_id, source, call.peer_port)
        self._notify(SessionStarted(session))
        # We speak first (pptpd's pppd does), as soon as the Outgoing-Call-Reply is out.
        asyncio.get_running_loop().call_soon(handler.start)
        return handler

    def _end_preauth(self, session: Session) -> None:
        if not session.preauth:
            return
        session.preauth = False
        if session.auth_deadline is not None:
            session.auth_deadline.cancel()
            session.auth_deadline = None
        self._preauth -= 1
        _count_down(self._preauth_per_source, session.source)

    def _authenticated(self, session: Session) -> None:
        """The peer is through: from a place among the authenticating to an established one."""
        if not session.preauth:
            return
        self._end_preauth(session)
        self._established += 1
        if self.ledger is not None:
            self._spawn_check(session)
            return
        if self._established > self.config.max_sessions:
            # Several calls authenticated at once for the last place.
            self.kill(session, f"{self.config.max_sessions} sessions already (max sessions)",
                      TerminateCause.SERVICE_UNAVAILABLE)

    def _spawn_check(self, session: Session) -> None:
        """Tell the ledger; end the session if that was one more than max sessions in all."""
        ledger = self.ledger
        assert ledger is not None

        async def check() -> None:
            try:
                why = await ledger.authenticated(session.id)
            except PptpkitError as exc:
                why = f"the supervisor did not answer: {exc}"
            if why is not None and not session.link.finished:
                self.kill(session, why, TerminateCause.SERVICE_UNAVAILABLE)

        task = asyncio.get_running_loop().create_task(check())
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)

    def _auth_expired(self, session: Session) -> None:
        session.auth_deadline = None
        if not session.preauth or session.link.finished:
            return
        self.auth_timeouts += 1
        left_out = self._expiry_log(asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("[%s] %s: not authenticated within %g s; closing%s", session.id, session.link.name,
                        self.config.auth_timeout, left_out_text(left_out))
        self.kill(session, "authentication timed out", TerminateCause.USER_ERROR)

    def _forget(self, session: Session) -> None:
        if self._sessions.pop(session.call, None) is None:
            return
        if session.session_deadline is not None:
            session.session_deadline.cancel()
            session.session_deadline = None
        if session.preauth:
            self._end_preauth(session)
        else:
            self._established -= 1
        self.release_address(session.link)
        del self._by_link[session.link]
        self._by_id.pop(session.id, None)
        _count_down(self._per_source, session.source)
        if self.ledger is not None:
            self.ledger.release(session.id)
            session.pair = None
        elif session.pair is not None:
            self._unhold(session.pair[1])
            self.config.pool.release(session.pair)
            session.pair = None
        if session.ipv6_prefix is not None and self.config.ipv6_prefixes is not None:
            self.config.ipv6_prefixes.release(session.ipv6_prefix)
            session.ipv6_prefix = None

    def _verify(self, session: Session, link: PppLink, event: VerificationNeeded) -> None:
        session.user = event.username
        verifier = self.verifier
        if verifier is None:
            link.complete_verification(ExternalVerdict(ok=False, reason="no verifier configured"))
            return

        async def run() -> None:
            try:
                verdict = await verifier(session, event)
            except Exception as exc:
                log.exception("[%s] verifying %r failed", session.id, event.username)
                verdict = ExternalVerdict(ok=False, reason=f"verifier failed: {exc}")
            if verdict.ok and session.access is not None:
                # CCP starts as soon as the verdict is in: narrow MPPE first.
                policy = radius_mppe_policy(link.session.mppe_policy, session.access)
                if isinstance(policy, str):
                    verdict = ExternalVerdict(ok=False, reason=policy)
                else:
                    link.session.mppe_policy = policy
            if not link.finished:
                link.complete_verification(verdict)

        task = asyncio.get_running_loop().create_task(run())
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)

    def _apply_access(self, session: Session, link: PppLink) -> None:
        """What the Access-Accept says about the session once it is up."""
        access = session.access
        if access is None:
            return
        if access.session_timeout:
            self.set_session_timeout(session, float(access.session_timeout))
        if access.idle_timeout:
            link.set_idle_timeout(float(access.idle_timeout))

    def _event(self, session: Session, link: PppLink, event: SessionEvent) -> None:
        sid = session.id
        if isinstance(event, VerificationNeeded):
            self._verify(session, link, event)
        elif isinstance(event, LinkUp):
            self._authenticated(session)  # without authentication, IPCP up is the end of it
            self.sessions_up_total += 1
            session.user = event.username
            session.up = event
            self._apply_access(session, link)
            log.info("[%s] session up: user %r, peer %s, address %s, local %s, %s, interface %s, mtu %d",
                     sid, event.username, session.source, event.peer_address, event.local_address,
                     event.mppe, link.interface, event.mtu)
            self._notify(SessionUp(session, event))
        elif isinstance(event, AuthenticationFailed) and event.we_authenticated_peer:
            session.user = event.username
            log.warning("[%s] authentication failed: user %r, peer %s, %s: %s", sid, event.username,
                        session.source, event.method.name, event.reason)
            self._notify(SessionAuthFailed(session, event.username, event.method, event.reason))
        elif isinstance(event, Authenticated) and event.we_authenticated_peer:
            self._authenticated(session)
            session.user = event.username
            session.auth_method = event.method
            log.info("[%s] user %r authenticated with %s, peer %s", sid, event.username,
                     event.method.name, session.source)
            self._notify(SessionAuthenticated(session, event.username, event.method))
        elif isinstance(event, Ipv6Up):
            if event.local_id is not None and event.peer_id is not None:
                self._notify(SessionIpv6Up(session, event.local_id, event.peer_id))
        elif isinstance(event, Ipv6Down):
            self._notify(SessionIpv6Down(session))
        elif isinstance(event, LinkDown):
            now = link.loop.time()
            duration = now - link.up_at if link.up_at is not None else 0.0
            if session.cause is None and link.plane_lost is not None:
                # Its interface was deleted under it: the NAS's own failure, not the user's.
                session.cause = TerminateCause.NAS_ERROR
            cause = terminate_cause(event, session.cause)
            stats = link.stats
            log.info("[%s] session down: user %r, peer %s, cause %s, reason %s, duration %.1f s, "
                     "bytes in %d out %d", sid, session.user or "-", session.source, cause.text,
                     outcome_text(event), duration, stats.octets_in, stats.octets_out)
            self._notify(SessionDown(session, cause, outcome_text(event), duration, stats.octets_in,
                                     stats.octets_out, stats.packets_in, stats.packets_out))
        else:
            log.debug("[%s] %s", sid, event)

    async def close_all(self, reason: str = "server shutting down") -> None:
        """LCP Terminate-Request to every session; wait (``close_timeout``) for the answers;
        every link's data plane is released when this returns.  New calls are refused."""
        self._closing = True
        for session in self.all():
            if session.cause is None:
                session.cause = TerminateCause.NAS_REBOOT
        links = self.links
        if links:
            await asyncio.gather(*(link.aclose(reason, self.config.close_timeout) for link in links),
                                 return_exceptions=True)

    def reload_secrets(self) -> bool:
        """Re-read the secrets file (a provider with ``reload()``).  On error the old secrets
        stay in use and the error (``path:line: ...``) is logged; returns whether it worked."""
        reload = getattr(self.config.secrets, "reload", None)
        if reload is None:
            self.reload_error = "the secrets do not come from a file"
            return False
        try:
            reload()
        except ConfigError as exc:
            self.reload_error = str(exc)
            log.error("secrets not reloaded, keeping the previous ones: %s", exc)
            return False
        self.reload_error = None
        log.info("secrets reloaded")
        return True


def radius_mppe_policy(policy: MppePolicy, access: AccessResult) -> MppePolicy | str:
    """The session's MPPE policy narrowed by RADIUS (RFC 2548 2.4.4/2.4.5): Encryption-Policy 2
    requires MPPE, Encryption-Types limits the key lengths (0x2 40-bit, 0x4 128-bit).  The
    server's own settings are never relaxed.  A string: why the two cannot both hold."""
    required = policy.required or access.encryption_policy == 2
    types = access.encryption_types
    bits_40 = policy.bits_40 and (types is None or bool(types & 0x2))
    bits_56 = policy.bits_56 and (types is None or bool(types & 0x8))
    bits_128 = policy.bits_128 and (types is None or bool(types & 0x4))
    if required and not (bits_40 or bits_56 or bits_128):
        return (f"RADIUS MS-MPPE-Encryption-Types {types} leaves no MPPE key length the server allows, "
                "and MPPE is required")
    if (required, bits_40, bits_56, bits_128) == (policy.required, policy.bits_40, policy.bits_56,
                                                  policy.bits_128):
        return policy
    return dataclasses.replace(policy, required=required, bits_40=bits_40, bits_56=bits_56, bits_128=bits_128)


def _count_up(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _count_down(counts: dict[str, int], key: str) -> None:
    """One less for ``key``; a key at zero is removed, so the tables hold only live entries."""
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class _LinkHandler:
    """The :class:`~pptpkit.pptp.server.CallHandler` of one built-in session: it starts the
    link once the call is answered and releases the session when the call ends."""

    __slots__ = ('_closed', '_owner', '_session')

    def __init__(self, owner: BuiltinSessions, session: Session) -> None:
        self._owner = owner
        self._session = session
        self._closed = False

    def start(self) -> None:
        link = self._session.link
        if not self._closed and self._session.call.answered and not link.finished:
            link.start()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        link = self._session.link
        if not link.finished:
            link.lower_down(self._session.call.end_reason or "call ended")
        with contextlib.suppress(Exception):
            await asyncio.shield(link.closed)
        self._owner._forget(self._session)
