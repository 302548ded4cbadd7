"""Typed settings of ``pptpkit server``, layered: defaults, then the config file, then flags.

Why layers of typed values: the settings used to travel as strings through an argparse
``Namespace`` (pptpd.conf wrote ``args.mppe = "128"`` and the server parsed it back), the config
file overwrote flags the user had typed, and MPPE and authentication were translated from and
back to words in three places.  Now every source produces a :class:`ServerChanges` - a typed
*partial* settings object holding only what that source says - and :class:`ServerSettings`
applies them in one order: ``ServerSettings().with_file(...).with_flags(...)``.  The last layer
wins, so a flag on the command line beats the same setting in pptpd.conf or the pppd options,
which beat the defaults.  Errors in a file carry ``path:line`` from its parser; nothing here
reads files.

One translation of MPPE and authentication policy: pppd's option words are the only vocabulary.
pppd options files are parsed into words by :mod:`pptpkit.compat.pppdopts`, and every command-line
flag that sets a policy is declared as the pppd words it stands for (:data:`SERVER_MPPE_WORDS`,
:func:`auth_words`); :func:`mppe_policy` and :func:`auth_policy` turn words into the typed
policies, and nothing turns a policy back into words.

This module builds no server objects (``BuiltinConfig``, ``PptpServerConfig``, the PPP program
config): the command line does that from a finished :class:`ServerSettings`, so the settings do
not depend on where those classes live.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypedDict

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import RateLimit
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ConfigError
from pptpkit.gre.partition import MAX_WORKERS
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.vpn.paths import DEFAULT_CTL_SOCKET
from pptpkit.vpn.server import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_BUILTIN_MRU,
    DEFAULT_MAX_PREAUTH,
    DEFAULT_MAX_PREAUTH_PER_SOURCE,
)

__all__ = [
    "BUILTIN_CONNECTION_MARGIN",
    "DEFAULT_AUTH_WORDS",
    "DEFAULT_CTL_SOCKET",
    "DEFAULT_MPPE_WORDS",
    "DEFAULT_PROGRAM_CONNECTIONS",
    "DEFAULT_SECRETS",
    "DEFAULT_SHARED_TUN",
    "MAX_IFNAME",
    "SERVER_MPPE_WORDS",
    "TUN_MODES",
    "ServerChanges",
    "ServerSettings",
    "TunMode",
    "auth_policy",
    "auth_words",
    "available_cpus",
    "mppe_policy",
]

DEFAULT_SECRETS: Final = "/etc/ppp/chap-secrets"
TunMode = Literal["per-session", "shared"]
TUN_MODES: Final[tuple[TunMode, ...]] = ("per-session", "shared")

#: ``pptpkit server``'s MPPE flags as the pppd words they mean (the flag's name is the key).
SERVER_MPPE_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "require-mppe-128": ("require-mppe-128",),
    "require-mppe": ("require-mppe",),
    # pppd's default: MPPE offered, the peer may say no.
    "mppe-optional": (),
    "no-mppe": ("nomppe",),
}
#: A production pptpd's options.pptpd: MS-CHAPv2 and 128-bit MPPE required.
DEFAULT_MPPE_WORDS: Final = ("require-mppe-128",)
DEFAULT_AUTH_WORDS: Final = ("require-mschap-v2",)


def mppe_policy(words: Iterable[str]) -> MppePolicy:
    """The MPPE policy pppd's option words describe (later words win, as in pppd)."""
    return MppePolicy.from_pppd_options(words)


def auth_policy(words: Iterable[str]) -> AuthPolicy:
    """The authentication policy pppd's option words describe."""
    return AuthPolicy.from_pppd_options(words)


def auth_words(kind: Literal["require", "refuse"], methods: Iterable[AuthMethod]) -> list[str]:
    """``require-X``/``refuse-X`` for each method: flags named after pppd's options say the
    same words."""
    return [f"{kind}-{m.pppd_name}" for m in methods]


class ServerChanges(TypedDict, total=False):
    """A partial :class:`ServerSettings`: what one source (file, flags) says.  Keys are the
    settings' field names; a key that is absent leaves the setting to earlier layers."""

    listen: str | None
    port: int
    connections: int | None
    max_per_source: int
    stimeout: float
    window: int
    nobuffer: bool
    respect_peer_window: bool
    verbose: int
    ppp_program: str | None
    ppp_args: tuple[str, ...]
    option_file: str | None
    localip: tuple[str, ...] | None
    remoteip: tuple[str, ...] | None
    speed: int
    noipparam: bool
    delegate: bool
    secrets: str
    name: str
    dns: tuple[ipaddress.IPv4Address, ...]
    wins: tuple[ipaddress.IPv4Address, ...]
    mppe: MppePolicy
    auth: AuthPolicy
    max_sessions: int
    tun_mode: TunMode
    tun_name: str | None
    mtu: int
    echo_interval: float
    echo_failure: int
    idle: float
    mss_clamp: bool
    source_check: bool
    proxyarp: bool
    pidfile: str | None
    auth_fail_limit: int
    auth_fail_window: float
    auth_lockout: float
    auth_lock_users: bool
    auth_timeout: float
    max_preauth: int
    max_preauth_per_source: int
    ipv6: bool
    ipv6_prefix: str | None
    radius_servers: tuple[str, ...]
    radius_acct_servers: tuple[str, ...]
    radius_secret_file: str | None
    radius_servers_file: str | None
    radius_timeout: float
    radius_retries: int
    nas_identifier: str | None
    nas_ip_address: str | None
    radius_interim: float
    radius_dae_listen: str | None
    radius_dae_clients: tuple[str, ...]
    ctl_socket: str | None
    ip_up: str | None
    ip_down: str | None
    ipv6_up: str | None
    ipv6_down: str | None
    hooks: bool
    hook_timeout: float
    metrics: tuple[str, int] | None
    # pppd options of the built-in server (pptpd.conf's 'option' file).
    mru: int | None
    logfile: str | None
    mschap_strip_domain: bool
    shaper: RateLimit | None
    workers: int | None


#: The shared interface's name without ``--tun-name``; with workers, each adds its index.
DEFAULT_SHARED_TUN: Final = "pptpkit-srv"
#: The longest interface name Linux takes (IFNAMSIZ less the NUL).
MAX_IFNAME: Final = 15


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what ``taskset``, a cgroup's cpuset
    or systemd's ``CPUAffinity=`` leave it), not the machine's count: a worker per CPU it can
    never be scheduled on would only make the workers take turns on the ones it can."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


#: Control connections in program mode unless ``connections`` says otherwise (pptpd's default).
DEFAULT_PROGRAM_CONNECTIONS: Final = 100
#: Built-in mode without ``connections``: control connections beyond ``max_sessions``.
BUILTIN_CONNECTION_MARGIN: Final = 16


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything ``pptpkit server`` runs with; the defaults are the field defaults.

    Both modes: ``listen`` (None: every address), ``port``, ``connections``,
    ``max_per_source``, ``stimeout``, GRE's ``window``/``nobuffer``/``respect_peer_window``,
    ``verbose`` (pptpd.conf's ``debug`` raises it).  PPP-program mode (``ppp_program`` set):
    ``ppp_args``, ``option_file``, ``localip``/``remoteip``, ``speed``, ``noipparam``,
    ``delegate``.  Built-in mode: the pool (``localip``/``remoteip``), ``secrets``, ``name``,
    ``dns``/``wins`` pushed via IPCP, the ``mppe`` and ``auth`` policies, ``max_sessions``,
    ``tun_mode``/``tun_name``, ``mtu`` (the interface MTU at most; also our MRU unless ``mru``),
    LCP echo, ``idle`` (0: never),
    ``mss_clamp``, ``source_check`` (anti-spoofing), and the calls not authenticated yet:
    ``auth_timeout``, ``max_preauth``, ``max_preauth_per_source``; RADIUS: ``radius_*``,
    ``nas_identifier``, ``nas_ip_address`` (:class:`pptpkit.radius.settings.RadiusSetup`).
    """

    listen: str | None = None
    port: int = PPTP_PORT
    connections: int | None = None
    max_per_source: int = 16
    stimeout: float = 10.0
    window: int = 64
    nobuffer: bool = False
    respect_peer_window: bool = True
    verbose: int = 0
    ppp_program: str | None = None
    ppp_args: tuple[str, ...] = ()
    option_file: str | None = None
    localip: tuple[str, ...] | None = None
    remoteip: tuple[str, ...] | None = None
    speed: int = 115200
    noipparam: bool = False
    delegate: bool = False
    secrets: str = DEFAULT_SECRETS
    name: str = "pptpd"
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    wins: tuple[ipaddress.IPv4Address, ...] = ()
    mppe: MppePolicy = field(default_factory=lambda: mppe_policy(DEFAULT_MPPE_WORDS))
    auth: AuthPolicy = field(default_factory=lambda: auth_policy(DEFAULT_AUTH_WORDS))
    max_sessions: int = 1000
    tun_mode: TunMode = "per-session"
    tun_name: str | None = None
    mtu: int = DEFAULT_BUILTIN_MRU
    echo_interval: float = 10.0
    echo_failure: int = 3
    idle: float = 0.0
    mss_clamp: bool = True
    source_check: bool = True
    proxyarp: bool = False
    pidfile: str | None = None
    auth_fail_limit: int = 5
    auth_fail_window: float = 60.0
    auth_lockout: float = 30.0
    auth_lock_users: bool = False
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    max_preauth: int = DEFAULT_MAX_PREAUTH
    max_preauth_per_source: int = DEFAULT_MAX_PREAUTH_PER_SOURCE
    #: IPV6CP on every session (pppd's +ipv6); per-session interfaces only.
    ipv6: bool = False
    #: A /64 per session from this network, routed to the client.
    ipv6_prefix: str | None = None
    # RADIUS (built-in mode): servers as HOST[:PORT], in failover order.
    radius_servers: tuple[str, ...] = ()
    radius_acct_servers: tuple[str, ...] = ()
    radius_secret_file: str | None = None
    # pppd radius plugin's "servers" file: a secret per server (from radiusclient.conf).
    radius_servers_file: str | None = None
    radius_timeout: float = 3.0
    radius_retries: int = 2
    nas_identifier: str | None = None
    nas_ip_address: str | None = None
    radius_interim: float = 0.0
    radius_dae_listen: str | None = None
    radius_dae_clients: tuple[str, ...] = ()
    # The control socket (both modes); None: none.
    ctl_socket: str | None = DEFAULT_CTL_SOCKET
    # Hook scripts (built-in mode, pptpkit.ops.hooks): pppd's paths, run when present;
    # ``hooks`` False runs none.
    ip_up: str | None = "/etc/ppp/ip-up"
    ip_down: str | None = "/etc/ppp/ip-down"
    ipv6_up: str | None = "/etc/ppp/ipv6-up"
    ipv6_down: str | None = "/etc/ppp/ipv6-down"
    hooks: bool = True
    hook_timeout: float = 30.0
    # Prometheus metrics (built-in mode): (address, port) to serve /metrics on; None: off.
    metrics: tuple[str, int] | None = None
    # pppd options of the built-in server.  ``mtu`` above is the most we send in one packet
    # (pppd's mtu: the interface MTU is at most this) and ``mru`` what we ask the peer to send at
    # most (pppd's mru, LCP's MRU; None: ``mtu``).  The link MTU is never more than the smaller
    # of the two MRUs less MPPE's 4 octets, whatever ``mtu`` says.
    mru: int | None = None
    #: pppd's logfile: a copy of the log appended to this file, besides --log.
    logfile: str | None = None
    #: pppd's chapms-strip-domain: MS-CHAP user names are looked up without their DOMAIN\ part.
    mschap_strip_domain: bool = False
    #: ``--shaper``: the rate of users without one of their own (built-in mode; None: none).
    shaper: RateLimit | None = None
    #: ``--workers``: server processes (built-in mode, :mod:`pptpkit.vpn.workers`); None: the
    #: default, :attr:`worker_count`.
    workers: int | None = None

    @property
    def worker_count(self) -> int:
        """How many worker processes run the built-in sessions: ``workers`` when it was set,
        else a worker per CPU this process may run on (:func:`available_cpus`, at most
        :data:`~pptpkit.gre.partition.MAX_WORKERS`) where several can run at all.

        The default is one where several cannot work, so that what runs today without
        ``--workers`` keeps running: program mode (every call is a program of its own already),
        an ephemeral port (``--listen ADDR:0``: every worker must bind the same port, and each
        would get one of its own), and a shared ``--tun-name`` with no room for the worker's
        index.  An explicit ``--workers`` above 1 there is an error (:meth:`check_workers`), never
        quietly one.  The default is read when the server starts, so it follows the affinity
        the service manager gives it, and it is the value after every layer (a pptpd.conf
        ``ppp`` line makes program mode, and so a default of one)."""
        if not self.builtin:
            return 1
        if self.workers is not None:
            return self.workers
        if self.port == 0:
            return 1
        count = min(available_cpus(), MAX_WORKERS)
        if count > 1 and self._worker_tun_too_long(count):
            return 1
        return count

    def _worker_tun_too_long(self, count: int) -> bool:
        if self.tun_mode != "shared":
            return False
        return len(f"{self.tun_name or DEFAULT_SHARED_TUN}{count - 1}") > MAX_IFNAME

    def check_workers(self) -> None:
        """What a server of several processes cannot do (yet): an error, never silently wrong."""
        if self.workers is not None and self.workers > 1 and not self.builtin:
            raise ConfigError("--workers applies to the built-in mode: with --ppp-program every call "
                              "is a process of its own already")
        if self.worker_count <= 1:
            return
        if self.port == 0:
            raise ConfigError("--workers needs a fixed port: every worker listens on it (SO_REUSEPORT)")
        if self._worker_tun_too_long(self.worker_count):
            raise ConfigError(f"--workers {self.worker_count} with --tun-mode shared: the interface names "
                              f"{self.tun_name or DEFAULT_SHARED_TUN}0.. would be longer than "
                              f"{MAX_IFNAME} characters (each worker adds its index); a shorter --tun-name")

    @property
    def builtin(self) -> bool:
        """True without a PPP program: our own PPP stack runs the calls."""
        return self.ppp_program is None

    @property
    def connection_limit(self) -> int:
        """``connections`` exactly, when it was set.  Otherwise 100 in program mode (pptpd's
        default), and in built-in mode ``max_sessions`` plus :data:`BUILTIN_CONNECTION_MARGIN`:
        most clients open a control connection per session, and the margin lets a client
        beyond ``max_sessions`` be told Busy on its call instead of being cut off."""
        if self.connections is not None:
            return self.connections
        if self.builtin:
            return min(65535, self.max_sessions + BUILTIN_CONNECTION_MARGIN)
        return DEFAULT_PROGRAM_CONNECTIONS

    def with_file(self, changes: ServerChanges) -> ServerSettings:
        """These settings overridden by what a config file says."""
        return replace(self, **changes)

    def with_flags(self, changes: ServerChanges) -> ServerSettings:
        """These settings overridden by the flags the user gave (only those: a flag left at
        its default must not undo the file)."""
        return replace(self, **changes)

    def check_program(self) -> None:
        """The PPP-program mode needs a pool, or ``delegate`` and no addresses."""
        if self.radius_servers or self.radius_acct_servers or self.radius_dae_listen:
            raise ConfigError("--radius-* apply to the built-in mode; with --ppp-program the program "
                              "does RADIUS itself (pppd's radius plugin)")
        if self.metrics is not None:
            raise ConfigError("--metrics applies to the built-in mode: with --ppp-program the sessions "
                              "are the program's")
        if self.shaper is not None:
            raise ConfigError("--shaper applies to the built-in mode; with --ppp-program shape in the "
                              "program's ip-up script")
        local, remote = self.localip, self.remoteip
        if self.delegate:
            if local or remote:
                raise ConfigError("--delegate passes no addresses: drop --localip/--remoteip")
        elif local is None and remote is None:
            raise ConfigError("give --localip and --remoteip, or --delegate")
        elif local is None or remote is None:
            raise ConfigError(f"--{'localip' if local is None else 'remoteip'} is missing")

    def check_builtin(self) -> None:
        """What the built-in mode cannot honour or needs."""
        if self.delegate or self.option_file or self.ppp_args:
            raise ConfigError("--delegate/--option/--ppp-arg only apply with --ppp-program")
        if self.localip is None or self.remoteip is None:
            raise ConfigError("give --local-ip and --remote-ip (the address pool)")
        if len(self.dns) > 2 or len(self.wins) > 2:
            raise ConfigError("IPCP carries at most two DNS and two WINS servers")
        if not 0 <= self.echo_interval <= 3600:
            raise ConfigError("--echo-interval must be between 0 and 3600 seconds")
        if self.ipv6 and self.tun_mode == "shared":
            raise ConfigError("IPv6 (--ipv6, +ipv6) needs --tun-mode per-session: on the shared interface "
                              "every session's link-local addresses would collide")
