"""``pptpkit connect``: the client half of a PPTP VPN, from the server's address to a TUN
interface with routes (and optionally DNS), and back to nothing.

One attempt, in order (:class:`Connector`):

1. pin a host route to the server through the path it is reached by now (before anything else,
   so no later route can pull the tunnel's own TCP and GRE into the tunnel), and check the
   requested routes against it (:mod:`pptpkit.vpn.routes`);
2. PPTP control connection and call (:mod:`pptpkit.pptp.client`);
3. PPP over the call with a TUN interface (:class:`pptpkit.io.link.PppLink`), while a
   :class:`GreWatchdog` tells "GRE is blocked" apart from an ordinary LCP timeout;
4. on :class:`~pptpkit.ppp.session_config.LinkUp`: the routes, the kernel's confirmation that
   the server is still reached outside the tunnel, and resolv.conf with ``--dns``;
5. on the way out, whatever ended it: LCP Terminate, Call-Clear-Request,
   Stop-Control-Connection, then every route (the host route too), the interface and
   resolv.conf are undone.

``--persist`` repeats the attempt with :class:`Backoff` after every failure that retrying can
heal; a wrong password or MPPE refused by the server cannot, and ends the program with its exit
code (:func:`classify_link_down`).  The exit codes are pppd's where pppd has one
(:class:`ExitCode`).

The policy parts (exit codes, classification, backoff, the GRE watchdog) are sans-IO and
tested on their own; :class:`Connector` is the asyncio adapter that joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random as _random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Final

from pptpkit.auth.base import PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.control import PPTP_PORT
from pptpkit.control.events import CloseCause
from pptpkit.errors import NOT_PERMITTED_MESSAGE, ConfigError, ExitStatus, PptpkitError, is_not_permitted
from pptpkit.gre import GreStats
from pptpkit.io.dataplane import TunDataPlane
from pptpkit.io.gresock import GreSocket
from pptpkit.io.link import PppLink, outcome_text
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.ppp.fsm import FsmConfig
from pptpkit.ppp.lcp import DEFAULT_MRU, MIN_MRU
from pptpkit.ppp.session_config import (
    Authenticated,
    LinkDown,
    LinkParameters,
    LinkUp,
    MppePolicy,
    NetworkDown,
    Outcome,
    PhaseChanged,
    SessionConfig,
    SessionEvent,
    SessionRole,
)
from pptpkit.pptp.client import (
    CallRefusedError,
    CloseInfo,
    ControlConnectionError,
    PptpCall,
    PptpClient,
    PptpClientConfig,
)
from pptpkit.vpn.pins import DEFAULT_PIN_DIR, PinRecords
from pptpkit.vpn.resolv import ResolvConf, ResolvConfError
from pptpkit.vpn.routes import MAX_ROUTES, RouteLoopError, RoutePlan, check_no_loop, plan_routes

__all__ = [
    "DEFAULT_BACKOFF_CAP",
    "AttemptResult",
    "Backoff",
    "ConnectConfig",
    "Connector",
    "ExitCode",
    "Failure",
    "GreWatchdog",
    "call_failure",
    "classify_link_down",
    "control_failure",
    "describe_up",
    "gre_blocked_failure",
    "gre_outbound_blocked_failure",
    "gre_path_failure",
    "up_status",
]

log = logging.getLogger(__name__)


#: ``pptpkit connect``'s exit statuses are the project's one table.
ExitCode = ExitStatus




@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Why an attempt ended badly: the exit code, ONE line for stderr, and whether retrying
    (``--persist``) can make any difference."""

    code: ExitCode
    message: str
    permanent: bool = False


#: Codes no retry can change: local trouble, the user's own configuration, the credentials.
PERMANENT_CODES: Final = frozenset({
    ExitCode.FATAL, ExitCode.USAGE, ExitCode.NOT_PERMITTED, ExitCode.AUTH_FAILED, ExitCode.ROUTE_LOOP,
})


def _mentions_mppe(reason: str) -> bool:
    return "mppe" in reason.lower()


def classify_link_down(down: LinkDown, *, server: str, was_up: bool) -> Failure | None:
    """The :class:`Failure` a session end means for the user; None for our own close.

    A Terminate-Request from the server before the link came up carries the server's reason
    (pppd says "MPPE required but peer refused" when we refused MPPE); it is a negotiation
    failure (10), permanent when it is about MPPE, like our own :attr:`Outcome.MPPE_REFUSED`.
    """
    outcome = down.outcome
    reason = down.reason
    if outcome is Outcome.LOCAL_CLOSE:
        return None
    if outcome is Outcome.AUTH_TOPEER_FAILED:
        return Failure(code=ExitCode.AUTH_FAILED, permanent=True,
                       message=f"authentication to {server} failed (wrong user name or password?): {reason}")
    if outcome is Outcome.MPPE_REFUSED:
        return Failure(code=ExitCode.NEGOTIATION_FAILED, permanent=True,
                       message=f"MPPE negotiation with {server} failed: {reason}")
    if outcome is Outcome.PEER_TERMINATED:
        if was_up:
            return Failure(code=ExitCode.HANGUP, message=f"{server} closed the link: {reason}")
        return Failure(code=ExitCode.NEGOTIATION_FAILED, permanent=_mentions_mppe(reason),
                       message=f"{server} ended the negotiation: {reason}")
    if outcome is Outcome.NEGOTIATION_FAILED:
        return Failure(code=ExitCode.NEGOTIATION_FAILED, permanent=_mentions_mppe(reason),
                       message=f"PPP negotiation with {server} failed: {reason}")
    if outcome is Outcome.LOWER_LAYER_DOWN:
        return Failure(code=ExitCode.HANGUP, message=f"the PPTP call to {server} ended: {reason}")
    if outcome is Outcome.PEER_DEAD:
        return Failure(code=ExitCode.PEER_DEAD, message=f"{server} stopped answering LCP echo requests")
    if outcome is Outcome.IDLE_TIMEOUT:
        return Failure(code=ExitCode.IDLE_TIMEOUT, message=f"idle timeout: {reason}")
    if outcome is Outcome.LOOPBACK:
        return Failure(code=ExitCode.LOOPBACK, message=f"loopback detected towards {server}: {reason}")
    if outcome is Outcome.PEER_AUTH_FAILED:
        return Failure(code=ExitCode.PEER_AUTH_FAILED, message=f"{server} failed to authenticate: {reason}")
    return Failure(code=ExitCode.FATAL, message=f"session with {server} ended: {reason}")


def gre_blocked_failure(server: str) -> Failure:
    return Failure(code=ExitCode.GRE_BLOCKED,
                   message=f"GRE return path broken: the control connection to {server} works but no "
                           "GRE (IP protocol 47) packet came back (a firewall dropping GRE, or a NAT "
                           "without PPTP support?)")


def gre_outbound_blocked_failure(server: str) -> Failure:
    return Failure(code=ExitCode.GRE_BLOCKED,
                   message=f"GRE (IP protocol 47) from us does not reach {server}: its GRE packets "
                           "arrive but it acknowledges none of ours (a firewall, or a NAT without "
                           "PPTP support, drops outgoing GRE?)")


class GreWatchdog:
    """Tells a blocked GRE path from a slow peer (sans-IO).

    Started when the call is up and our first LCP Configure-Request goes out; fed by
    :meth:`gre_seen` whenever any GRE packet of the call arrives (data or a bare ack).  If
    none has arrived by ``timeout`` seconds later, :meth:`expired` says so: the TCP control
    connection works (the call was answered on it), so the data path is what is broken, and
    saying "LCP timeout" would send the user looking in the wrong place.
    """

    def __init__(self, timeout: float) -> None:
        if not 0 < timeout <= 3600:
            raise ConfigError(f"GRE timeout {timeout} must be in (0, 3600] seconds")
        self.timeout = timeout
        self._deadline: float | None = None
        self._started_at: float | None = None
        self.seen = False

    def start(self, now: float) -> None:
        self.seen = False
        self._started_at = now
        self._deadline = now + self.timeout

    def gre_seen(self) -> None:
        self.seen = True
        self._deadline = None

    def get_timer(self) -> float | None:
        return self._deadline

    def expired(self, now: float) -> bool:
        return self._deadline is not None and not self.seen and now >= self._deadline

    def due(self, now: float) -> bool:
        """The watch time is over, whether or not GRE was seen."""
        return self._started_at is not None and now >= self._started_at + self.timeout


#: Longest wait between two ``--persist`` attempts, in seconds.
DEFAULT_BACKOFF_CAP: Final = 10.0


class Backoff:
    """Delays between ``--persist`` attempts: ``initial``, doubling up to ``cap`` (1, 2, 4, 8,
    10 s by default); back to ``initial`` after a link that stayed up ``stable_after``
    seconds, so one outage after a day of uptime reconnects at once.  The cap is low on purpose:
    after a server restart every client reconnects at once, some attempts fail on a lossy path,
    and a cap of a minute left sessions down for minutes after the server was back (measured
    by ``pptpkit bench soak``); a refused connection costs the server next to nothing.

    ``jitter``: each delay is drawn between ``(1 - jitter)`` and 1 times the nominal one
    (``random`` supplies the draw).  Clients that lost the same server at the same instant would
    otherwise retry in lockstep and arrive together, every time, at a server that is busiest just
    after it came back; a quarter of the delay spreads them without slowing anyone down much."""

    def __init__(self, *, initial: float = 1.0, cap: float = DEFAULT_BACKOFF_CAP,
                 stable_after: float = 30.0, jitter: float = 0.25,
                 random: Callable[[], float] = _random.random) -> None:
        if not 0 <= jitter < 1:
            raise ConfigError("backoff: jitter must be in [0, 1)")
        if not 0 < initial <= cap:
            raise ConfigError("backoff: need 0 < initial <= cap")
        if stable_after < 0:
            raise ConfigError("backoff: stable_after must not be negative")
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self.jitter = jitter
        self._random = random
        self._next = initial

    def next_delay(self, up_for: float | None) -> float:
        """The wait before the next attempt; ``up_for``: how long the link of the attempt that
        just ended was up (None when it never came up)."""
        if up_for is not None and up_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay * (1 - self.jitter * self._random())


@dataclass(frozen=True, kw_only=True)
class ConnectConfig:
    """Everything ``pptpkit connect`` needs; built by the CLI, usable from code.

    ``mppe`` and ``refuse`` mirror pppd's options (see the CLI help for the defaults);
    ``mtu`` caps the interface MTU below what PPP negotiated (None: as negotiated); ``mru`` is
    the MRU we ask for.  ``echo_interval``/``echo_failure``: LCP keepalive (0: off).
    ``lcp_restart``: LCP's restart timer, which also sets how long we wait for the first GRE
    packet (``gre_timeout``, default three restarts plus one second) before calling GRE
    blocked.  ``routes``/``default_route``/``host_route``: see :mod:`pptpkit.vpn.routes`.  ``dns``
    writes the pushed DNS servers to ``resolv_conf``.  ``persist``/``max_retries``/
    ``backoff_cap``/``stable_after``: reconnection.  ``ifname``: TUN name template.
    ``local_address``: our source address for TCP and GRE (pptp-linux's --localbind).
    ``nobuffer``/``respect_peer_window``: GRE receive and send behaviour (see
    :class:`~pptpkit.gre.GreCallConfig`).
    """

    server: IPv4Address
    username: str
    password: str
    port: int = PPTP_PORT
    refuse: frozenset[AuthMethod] = frozenset()
    mppe: MppePolicy = field(default_factory=MppePolicy)
    mtu: int | None = None
    mru: int = DEFAULT_MRU
    echo_interval: float = 10.0
    echo_failure: int = 3
    lcp_restart: float = 3.0
    gre_timeout: float | None = None
    connect_timeout: float = 10.0
    routes: tuple[IPv4Network, ...] = ()
    default_route: bool = False
    host_route: bool = True
    dns: bool = False
    resolv_conf: str = "/etc/resolv.conf"
    #: Run IPV6CP too; the interface gets the two link-local addresses it negotiates.
    ipv6: bool = False
    #: Where pinned host routes are recorded, so a killed run's route is removed by the next.
    pin_dir: str = DEFAULT_PIN_DIR
    persist: bool = False
    max_retries: int | None = None
    backoff_initial: float = 1.0
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    #: Share of each backoff delay drawn at random (see :class:`Backoff`).
    backoff_jitter: float = 0.25
    stable_after: float = 30.0
    ifname: str = "pptp%d"
    local_address: IPv4Address | None = None
    nobuffer: bool = False
    respect_peer_window: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 0xFFFF:
            raise ConfigError(f"port must be 1..65535, not {self.port}")
        if self.mtu is not None and not 576 <= self.mtu <= 0xFFFF:
            raise ConfigError(f"mtu {self.mtu} must be between 576 and 65535")
        if not MIN_MRU <= self.mru <= 0xFFFF:
            raise ConfigError(f"mru {self.mru} must be between {MIN_MRU} and 65535")
        if self.echo_interval < 0 or not 1 <= self.echo_failure <= 1000:
            raise ConfigError("echo interval must be >= 0 and echo failure 1..1000")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError("max_retries must not be negative")
        if len(self.routes) > MAX_ROUTES:
            raise ConfigError(f"more than {MAX_ROUTES} routes")
        if not 0 < self.connect_timeout <= 600:
            raise ConfigError("connect_timeout must be in (0, 600] seconds")
        if not self.ifname or len(self.ifname.encode()) > 15:
            raise ConfigError(f"bad interface name {self.ifname!r}")
        # The engines validate the rest (names, password length, timers).
        self.session_config()
        GreWatchdog(self.effective_gre_timeout)
        Backoff(initial=self.backoff_initial, cap=self.backoff_cap, stable_after=self.stable_after,
                jitter=self.backoff_jitter)

    @property
    def effective_gre_timeout(self) -> float:
        return self.gre_timeout if self.gre_timeout is not None else 3 * self.lcp_restart + 1.0

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            role=SessionRole.CLIENT,
            auth_policy=AuthPolicy(refuse=self.refuse),
            peer=PeerConfig(username=self.username, password=self.password),
            mru=self.mru,
            echo_interval=self.echo_interval,
            echo_failure=self.echo_failure,
            fsm=FsmConfig(restart_interval=self.lcp_restart),
            # Asked for always, so the user sees what the server pushes; written to
            # resolv.conf only with --dns.
            request_dns=True,
            mppe=self.mppe,
            ipv6=self.ipv6,
        )


# -- the asyncio adapter ---------------------------------------------------------------------------


def control_failure(exc: ControlConnectionError, server: str, port: int) -> Failure:
    """A control connection that did not come up: 30 when TCP itself failed or nothing
    answered, 8 when the server answered and said no; 3 when we may not open raw sockets."""
    if is_not_permitted(exc):
        return Failure(code=ExitCode.NOT_PERMITTED, permanent=True, message=f"{NOT_PERMITTED_MESSAGE}: {exc}")
    if exc.cause in _REFUSED_BY_SERVER:
        return Failure(code=ExitCode.CONNECT_FAILED,
                       message=f"{server}:{port} refused the PPTP control connection: {exc}")
    return Failure(code=ExitCode.CONTROL_UNREACHABLE,
                   message=f"cannot open the PPTP control connection to {server}:{port}: {exc}")


def call_failure(exc: CallRefusedError | ControlConnectionError, server: str) -> Failure:
    """An Outgoing-Call-Request that did not give a call: 8 when the server refused it, 16 when
    the control connection ended meanwhile."""
    if isinstance(exc, CallRefusedError):
        return Failure(code=ExitCode.CONNECT_FAILED,
                       message=f"{server} refused the call: {exc} (result code {exc.result_code}, "
                               f"error code {exc.error_code})")
    return Failure(code=ExitCode.HANGUP,
                   message=f"the control connection to {server} ended while opening the call: {exc}")


def gre_path_failure(stats: GreStats, server: str) -> Failure | None:
    """What the GRE counters of a call that never got its link up say about the path: nothing
    from the server (no packet, no ack) is the return path (:func:`gre_blocked_failure`); the
    server's packets arriving while none of ours was ever acknowledged is the way towards it
    (:func:`gre_outbound_blocked_failure`); None when both ways carried something."""
    if stats.received == 0 and stats.acks_received == 0:
        return gre_blocked_failure(server)
    if stats.sent > 0 and stats.acks_new == 0:
        return gre_outbound_blocked_failure(server)
    return None


#: Host routes to one server we try to add side by side (one per tunnel to it, see
#: :meth:`Connector._pin_host_route`).
_MAX_PIN_METRIC: Final = 256

_REFUSED_BY_SERVER: Final = frozenset({
    CloseCause.START_REJECTED, CloseCause.VERSION_MISMATCH, CloseCause.STOPPED_BY_PEER,
})


@dataclass(slots=True)
class AttemptResult:
    """How one attempt ended: ``failure`` None and ``stopped`` True for a user stop;
    ``up_for`` is how long the link was up (None: it never came up)."""

    failure: Failure | None
    stopped: bool = False
    up_for: float | None = None
    up: LinkUp | None = None


StatusCallback = Callable[[dict[str, Any]], None]


def up_status(up: LinkUp, interface: str | None, routes: Sequence[IPv4Network],
              server: str, setup_time: float | None = None) -> dict[str, Any]:
    """The negotiated parameters as one JSON-able dict (``--json`` prints it).

    ``setup_time``: seconds from the start of the TCP connect to this LinkUp (IPCP up and the
    interface configured), printed as ``setup_ms``; the protocol part of a connect, without
    Python's start-up, which ``pptpkit bench setup`` reports apart."""
    return {
        "event": "up",
        "server": server,
        "interface": interface,
        "local_address": None if up.local_address is None else str(up.local_address),
        "peer_address": None if up.peer_address is None else str(up.peer_address),
        "mtu": up.mtu,
        "auth": None if up.auth_method is None else up.auth_method.pppd_name,
        "username": up.username,
        "mppe": up.mppe,
        "dns": [str(s) for s in up.dns_servers],
        "routes": [str(r) for r in routes],
        "setup_ms": None if setup_time is None else round(setup_time * 1000, 3),
    }


def describe_up(status: dict[str, Any]) -> str:
    dns = ", ".join(status["dns"]) or "none pushed"
    return (f"link up: {status['interface']} {status['local_address']} -> {status['peer_address']}, "
            f"MTU {status['mtu']}, auth {status['auth'] or 'none'} as {status['username'] or '-'}, "
            f"{status['mppe']}, DNS {dns}, routes {', '.join(status['routes']) or 'none'}")


class Connector:
    """Runs ``pptpkit connect``: :meth:`run` until stopped or failed (see the module doc).

    ``stop``: set it (a signal handler does) to tear down cleanly.  ``on_status(dict)``:
    ``{"event": "up", ...}`` (see :func:`up_status`), ``{"event": "down", "code", "message"}``,
    ``{"event": "retry", "delay"}``.  ``gre_socket``: a raw GRE socket to use (tests).
    ``log_frames``: one debug log line per PPP frame each way (the CLI's ``-vv``).
    """

    def __init__(self, config: ConnectConfig, *, stop: asyncio.Event | None = None,
                 on_status: StatusCallback | None = None, gre_socket: GreSocket | None = None,
                 log_frames: bool = False) -> None:
        self.config = config
        self.log_frames = log_frames
        self.stop = stop or asyncio.Event()
        self.on_status = on_status
        self._gre_socket = gre_socket
        self._pins = PinRecords(config.pin_dir)
        self._pinned: list[int] = []
        self.attempts = 0
        self.last: AttemptResult | None = None
        self._resolv = ResolvConf(config.resolv_conf) if config.dns else None
        #: loop.time() when this attempt's TCP connect started (the up event's ``setup_ms``).
        self.connect_started: float | None = None

    @property
    def server(self) -> str:
        return str(self.config.server)

    def _status(self, status: dict[str, Any]) -> None:
        if self.on_status is not None:
            self.on_status(status)

    async def run(self) -> ExitCode:
        """Attempts until a user stop, a permanent failure, or (without ``persist``) the first
        end; returns the exit code.  Each failure's line goes to ``on_status`` and the log."""
        cfg = self.config
        if self._resolv is not None:
            self._resolv.recover()
        backoff = Backoff(initial=cfg.backoff_initial, cap=cfg.backoff_cap, stable_after=cfg.stable_after,
                          jitter=cfg.backoff_jitter)
        retries = 0
        while True:
            self.attempts += 1
            result = await self.attempt()
            self.last = result
            if result.stopped or result.failure is None:
                # A script reading the events learns that the tunnel is gone, and why.
                self._status({"event": "down", "code": int(ExitCode.OK), "message": "stopped",
                              "permanent": True})
                return ExitCode.OK
            failure = result.failure
            self._status({"event": "down", "code": int(failure.code), "message": failure.message,
                          "permanent": failure.permanent})
            if not cfg.persist or failure.permanent or failure.code in PERMANENT_CODES:
                return failure.code
            if cfg.max_retries is not None and retries >= cfg.max_retries:
                log.info("giving up after %d retries", retries)
                return failure.code
            retries += 1
            delay = backoff.next_delay(result.up_for)
            self._status({"event": "retry", "delay": delay, "attempt": self.attempts + 1})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                return ExitCode.OK

    async def attempt(self) -> AttemptResult:
        """One connection from nothing back to nothing."""
        cfg = self.config
        nc = await NetConfig().open()
        client: PptpClient | None = None
        try:
            pinned = await self._pin_host_route(nc)
            try:
                plan = plan_routes(cfg.server, cfg.routes, default_route=cfg.default_route,
                                   host_route_pinned=pinned)
            except RouteLoopError as exc:
                return AttemptResult(Failure(code=ExitCode.ROUTE_LOOP, message=str(exc), permanent=True))
            if self.stop.is_set():
                return AttemptResult(None, stopped=True)
            client = PptpClient(PptpClientConfig(
                server=self.server, port=cfg.port, connect_timeout=cfg.connect_timeout,
                call_timeout=cfg.connect_timeout, nobuffer=cfg.nobuffer,
                respect_peer_window=cfg.respect_peer_window,
                local_address=None if cfg.local_address is None else str(cfg.local_address),
            ), gre_socket=self._gre_socket)
            setup = await self._until_stopped(self._open_call(client))
            if setup is None:
                return AttemptResult(None, stopped=True)
            if isinstance(setup, Failure):
                return AttemptResult(setup)
            # From here the link phase watches ``stop`` itself, to close the link cleanly.
            return await _LinkRun(self, setup, plan).run()
        finally:
            if client is not None:
                with contextlib.suppress(PptpkitError, OSError):
                    await client.close()
            if self._resolv is not None:
                self._restore_dns()
            try:
                await nc.cleanup()
            except NetConfigError as exc:
                log.warning("%s", exc)
            await nc.close()
            while self._pinned:
                self._pins.release(self.server, self._pinned.pop())

    async def _until_stopped(self, coro: Awaitable[PptpCall | Failure]) -> PptpCall | Failure | None:
        """``coro`` (TCP connect and the call set-up), abandoned if the user stops first."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _pin_host_route(self, nc: NetConfig) -> bool:
        """Add ``SERVER/32`` through the current path; True when the server cannot be routed
        into the tunnel afterwards (pinned, or the server is one of our own addresses).

        Each process adds a route of its own, with the lowest metric no other route to the
        server uses: two tunnels to the same server then each remove only their own pin on
        exit, and the other tunnel stays protected (with one shared route, the first to leave
        would unpin the other).  Routes with another metric point the same way, so which one
        the kernel picks does not matter.
        """
        cfg = self.config
        if not cfg.host_route:
            return False
        try:
            for metric in self._pins.orphans(self.server):
                # A run killed too hard to clean up left it; it would shadow the path forever.
                try:
                    await nc.delete_route(f"{self.server}/32", metric=metric)
                except NetConfigError as exc:
                    if exc.errno != errno.ESRCH:
                        raise
                else:
                    log.info("removed host route %s/32 metric %d left by a pptpkit connect that was "
                             "killed", self.server, metric)
            info = await nc.route_get(self.server)
            if info.is_local:
                return True
            if info.oif is None or info.ifname is None:
                log.warning("cannot pin a host route to %s: no interface towards it", self.server)
                return False
            for metric in range(_MAX_PIN_METRIC):
                try:
                    await nc.add_route(f"{self.server}/32", dev=info.ifname, gateway=info.gateway,
                                       metric=metric)
                except NetConfigError as exc:
                    if exc.errno == errno.EEXIST:
                        continue
                    raise
                via = f" via {info.gateway}" if info.gateway else ""
                log.info("host route %s/32%s dev %s metric %d pinned outside the tunnel", self.server,
                         via, info.ifname, metric)
                self._pins.claim(self.server, metric)
                self._pinned.append(metric)
                return True
            log.warning("cannot pin a host route to %s: %d routes to it exist already", self.server,
                        _MAX_PIN_METRIC)
        except NetConfigError as exc:
            log.warning("cannot pin a host route to %s: %s", self.server, exc)
        return False

    async def _open_call(self, client: PptpClient) -> PptpCall | Failure:
        cfg = self.config
        self.connect_started = asyncio.get_running_loop().time()
        try:
            await client.connect()
        except ControlConnectionError as exc:
            return control_failure(exc, self.server, cfg.port)
        try:
            return await client.open_call()
        except (CallRefusedError, ControlConnectionError) as exc:
            return call_failure(exc, self.server)

    def _apply_dns(self, up: LinkUp) -> Failure | None:
        if self._resolv is None:
            return None
        if not up.dns_servers:
            log.warning("--dns: %s pushed no DNS servers; %s left as it is", self.server,
                        self._resolv.path)
            return None
        try:
            self._resolv.apply(up.dns_servers)
        except ResolvConfError as exc:
            return Failure(code=ExitCode.FATAL, message=str(exc), permanent=True)
        return None

    def _restore_dns(self) -> None:
        if self._resolv is None:
            return
        try:
            self._resolv.restore()
        except ResolvConfError as exc:
            log.error("%s", exc)


class _FrameLog:
    """The call as PppLink's transport, with one debug line per frame sent (``-vv``)."""

    def __init__(self, call: PptpCall) -> None:
        self.call = call

    def send_frame(self, frame: bytes) -> bool:
        log.debug("to server %d bytes: %s", len(frame), frame[:24].hex())
        return self.call.send_frame(frame)

    def close(self) -> Awaitable[CloseInfo]:
        return self.call.close()


class _LinkRun:
    """The PPP phase of one attempt: PppLink on the call, watchdog, routes, DNS."""

    def __init__(self, owner: Connector, call: PptpCall, plan: RoutePlan) -> None:
        self.owner = owner
        self.config = owner.config
        self.call = call
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.watchdog = GreWatchdog(self.config.effective_gre_timeout)
        self.wake = asyncio.Event()
        self.failure: Failure | None = None
        self.route_error: RouteLoopError | None = None
        transport: PptpCall | _FrameLog = _FrameLog(call) if owner.log_frames else call
        self.link = PppLink(self.config.session_config(), transport,
                            TunDataPlane(self.config.ifname, mtu=self.config.mtu, hook=self._hook),
                            on_event=self._on_event, name=f"call {call.call_id} to {owner.server}")

    async def run(self) -> AttemptResult:
        link, call = self.link, self.call

        log_frames = self.owner.log_frames

        def frame_in(frame: bytes) -> None:
            if not self.watchdog.seen:
                self.watchdog.gre_seen()
            if log_frames:
                log.debug("from server %d bytes: %s", len(frame), frame[:24].hex())
            link.frame_received(frame)

        call.on_close = lambda info: link.lower_down(info.reason)
        if call.is_closed:
            link.lower_down("the call ended before PPP started")
        else:
            link.start()
        # After start: frames the server sent while PPP was being attached (its first LCP
        # Configure-Request, as a rule) are handed over now, to a running LCP.
        call.on_frame = frame_in
        self.watchdog.start(self.loop.time())
        deadline = self.watchdog.get_timer()
        timer = self.loop.call_at(deadline, self.wake.set) if deadline is not None else None
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self.owner.stop.wait())
        waker: asyncio.Future[Any] = asyncio.ensure_future(self.wake.wait())
        closed: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(link.closed))
        try:
            while not link.closed.done():
                await asyncio.wait({stopper, waker, closed}, return_when=asyncio.FIRST_COMPLETED)
                if stopper.done():
                    await link.aclose("User request")
                    return AttemptResult(None, stopped=True, up_for=self._up_for(), up=link.up)
                if waker.done():
                    self.wake.clear()
                    waker = asyncio.ensure_future(self.wake.wait())
                    if self.failure is not None:
                        await link.aclose(self.failure.message)
                        break
                    if self.watchdog.expired(self.loop.time()) and not self._gre_arrived():
                        self.failure = gre_blocked_failure(self.owner.server)
                        await link.aclose("GRE blocked", timeout=0.5)
                        break
                    if self._outbound_blocked():
                        self.failure = gre_outbound_blocked_failure(self.owner.server)
                        await link.aclose("GRE blocked towards the server", timeout=0.5)
                        break
        finally:
            for fut in (stopper, waker, closed):
                fut.cancel()
            if timer is not None:
                timer.cancel()
        down = await link.closed
        up_for = self._up_for()
        if self.failure is not None:
            return AttemptResult(self.failure, up_for=up_for)
        if self.route_error is not None:
            return AttemptResult(Failure(code=ExitCode.ROUTE_LOOP, message=str(self.route_error),
                                         permanent=True), up_for=up_for)
        if down.reason.startswith("data plane failed"):
            return AttemptResult(Failure(code=ExitCode.FATAL, permanent=True,
                                         message=f"cannot set up the tunnel interface: {down.reason}"),
                                 up_for=up_for)
        was_up = link.up_at is not None
        if not was_up and not self._gre_arrived() and down.outcome in _SILENT_PEER:
            return AttemptResult(gre_blocked_failure(self.owner.server))
        if not was_up and self._outbound_blocked(at_end=True) and down.outcome in _SILENT_OR_HUNG_UP:
            return AttemptResult(gre_outbound_blocked_failure(self.owner.server))
        return AttemptResult(classify_link_down(down, server=self.owner.server, was_up=was_up),
                             up_for=up_for)

    def _outbound_blocked(self, *, at_end: bool = False) -> bool:
        """GRE comes from the server, ours went out, and the server acknowledged none of it:
        the path towards the server drops GRE.  Judged when the watchdog's time is up (the
        server's packets after ours carry acks within a round trip) or when the link ends."""
        stats = self.call.stats
        if self.link.up_at is not None or not (at_end or self.watchdog.due(self.loop.time())):
            return False
        return stats.received > 0 and stats.sent > 0 and stats.acks_new == 0

    def _gre_arrived(self) -> bool:
        stats = self.call.stats
        return self.watchdog.seen or stats.received > 0 or stats.acks_received > 0

    def _up_for(self) -> float | None:
        up_at = self.link.up_at
        return None if up_at is None else self.loop.time() - up_at

    async def _hook(self, ifname: str, up: LinkUp, nc: NetConfig) -> None:
        for net in self.plan.tunnel_routes:
            await nc.add_route(str(net), dev=ifname)
        try:
            if self.plan.tunnel_routes:
                egress = (await nc.route_get(self.owner.server)).ifname
                check_no_loop(self.config.server, ifname, egress, self.plan.tunnel_routes)
        except RouteLoopError as exc:
            self.route_error = exc
            raise

    def _on_event(self, link: PppLink, event: SessionEvent) -> None:
        if isinstance(event, LinkParameters):
            log.info("LCP up: MRU %d/%d, authenticating with %s", event.local_mru, event.peer_mru,
                     "nothing" if event.auth_self is None else event.auth_self.pppd_name)
        elif isinstance(event, Authenticated):
            log.info("authenticated to %s as %s (%s)", event.peer_name or self.owner.server,
                     event.username, event.method.pppd_name)
        elif isinstance(event, LinkUp):
            started = self.owner.connect_started
            status = up_status(event, link.interface, self.plan.tunnel_routes, self.owner.server,
                               None if started is None else self.loop.time() - started)
            failure = self.owner._apply_dns(event)
            if failure is not None:
                self.failure = failure
                self.wake.set()
                return
            # The command prints the line (or the JSON event) itself: at INFO it would show twice.
            log.debug("%s", describe_up(status))
            self.owner._status(status)
        elif isinstance(event, NetworkDown):
            log.info("network down: %s", event.reason)
            self.owner._restore_dns()
        elif isinstance(event, LinkDown):
            log.info("link down: %s", outcome_text(event))
            self.owner._restore_dns()
        elif isinstance(event, PhaseChanged):
            log.debug("PPP phase %s -> %s", event.previous.value, event.phase.value)
        else:
            # -v: every protocol step (CCP/MPPE, IPv6CP, ACCM), not only the milestones.
            log.debug("%s", event)


#: Session ends that, with no GRE packet ever received, mean the packets never got through.
_SILENT_PEER: Final = frozenset({Outcome.NEGOTIATION_FAILED, Outcome.PEER_DEAD})
#: ... and, with GRE arriving but ours never acknowledged, a server that gave up and hung up.
_SILENT_OR_HUNG_UP: Final = _SILENT_PEER | {Outcome.LOWER_LAYER_DOWN}
