"""``pptpkit server``: both modes, and how its settings are put together.

Settings: :class:`~pptpkit.vpn.settings.ServerSettings` defaults, then ``--config`` (pptpd.conf
and, in built-in mode, the pppd options it names: :func:`pptpkit.compat.pptpdconf.server_changes`),
then the flags the user actually typed.  The server parser has ``argparse.SUPPRESS`` as its
default, so a flag that was not given is absent from the namespace and cannot undo the file;
the defaults live in one place, the settings class.

Built-in mode (no PPP program): one process serves every session: PPTP control and GRE
(:class:`~pptpkit.pptp.server.PptpServer`), a :class:`~pptpkit.io.link.PppLink` per call
(:class:`~pptpkit.vpn.server.BuiltinSessions`), IP on a TUN interface per session or on one
shared TUN, TCP MSS clamping in an nft table of our own.  SIGINT/SIGTERM: LCP Terminate-Request
to every peer, Call-Disconnect-Notify and Stop-Control-Connection-Request, interfaces, routes
and the nft table removed.  SIGHUP: the secrets file is re-read (a bad file keeps the old
secrets; the error says ``path:line``).

PPP-program mode (``--ppp-program`` or pptpd.conf's ``ppp``): every call gets the program on a
raw pty with pptpd's argument list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, cast

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import PppSecretsFile, StaticSecrets
from pptpkit.cli.argtypes import (
    add_gre_options,
    int_range,
    ip_list,
    ipv4_address,
    metrics_address,
    parse_listen,
    positive_float,
    rate_limit,
)
from pptpkit.cli.common import exit_help, fail, install_signals, not_permitted, setup_logging
from pptpkit.compat.program import PppProgramConfig, ppp_program_factory
from pptpkit.errors import ConfigError, ExitStatus, PptpkitError, is_not_permitted
from pptpkit.gre.partition import MAX_WORKERS
from pptpkit.io.dataplane import SharedTunRouter, TunDataPlane
from pptpkit.io.link import DataPlane
from pptpkit.io.sdnotify import notify
from pptpkit.ops import ServerExtension
from pptpkit.pptp.server import PptpServer, PptpServerConfig
from pptpkit.radius.settings import RadiusSetup
from pptpkit.vpn.guard import AuthGuard, GuardConfig, GuardedSecrets
from pptpkit.vpn.netpolicy import MssClamp, NftError
from pptpkit.vpn.pool import AddressPool, PrefixPool
from pptpkit.vpn.server import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_MAX_PREAUTH,
    DEFAULT_MAX_PREAUTH_PER_SOURCE,
    BuiltinConfig,
    BuiltinSessions,
)
from pptpkit.vpn.settings import (
    BUILTIN_CONNECTION_MARGIN,
    DEFAULT_CTL_SOCKET,
    DEFAULT_PROGRAM_CONNECTIONS,
    DEFAULT_SECRETS,
    DEFAULT_SHARED_TUN,
    SERVER_MPPE_WORDS,
    TUN_MODES,
    ServerChanges,
    ServerSettings,
    auth_policy,
    auth_words,
    mppe_policy,
)

__all__ = [
    "BUILTIN_HELP",
    "add_server_parser",
    "builtin_config",
    "extensions",
    "flag_changes",
    "main",
    "pptp_server_config",
    "program_config",
    "radius_setup",
    "server_settings",
]

if TYPE_CHECKING:
    from pptpkit.ops.supervisor import WorkerSide

log = logging.getLogger("pptpkit.server")

BUILTIN_HELP: Final = """\
built-in mode (the default, without --ppp-program): pptpkit runs the PPP sessions itself and
routes IP over TUN interfaces.  Security defaults, as a production pptpd should be set up:
authentication required (MS-CHAPv2, secrets from /etc/ppp/chap-secrets) and MPPE-128 required;
relax with --require-mppe (40 or 128 bits), --mppe-optional or --no-mppe, and --require-X for
other authentication methods.  A secrets entry naming one address gives that user that address
instead of one from --remote-ip.  SIGHUP re-reads the secrets without dropping sessions.

settings: defaults, then --config (pptpd.conf and the pppd options it names), then the flags
given on the command line: a flag always wins over the file.
"""

_D: Final = ServerSettings()


def add_server_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``server`` subcommand to ``sub`` (the subparsers of ``pptpkit``)."""
    srv: argparse.ArgumentParser = sub.add_parser(
        "server", parents=[common], epilog=BUILTIN_HELP + "\n" + exit_help("server"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Only the flags given reach the namespace: they override the file, the rest must not.
        argument_default=argparse.SUPPRESS,
        help="PPTP server with the built-in PPP stack on TUN, or a PPP program per call (as pptpd)",
        description="Accept PPTP connections.  Without --ppp-program every call runs our own PPP "
                    "stack and IP goes over TUN interfaces (built-in mode).  With it, the program "
                    "is started for every call on a raw pty with pptpd's argument list: PROGRAM "
                    "local [file OPTFILE] SPEED [LOCAL:REMOTE] [ipparam CLIENT] remotenumber CLIENT.",
    )
    srv.add_argument("--config", metavar="PPTPD_CONF",
                     help="read an existing pptpd.conf: 'ppp PROGRAM' selects the PPP-program mode, "
                          "otherwise the built-in stack runs with the pppd options file 'option' names; "
                          "flags given on the command line override it")
    srv.add_argument("--ppp-program", metavar="PATH",
                     help="program to run per call instead of the built-in PPP stack (pppd)")
    srv.add_argument("--ppp-arg", action="append", metavar="ARG",
                     help="extra argument placed right after PATH (repeatable; use --ppp-arg=-m)")
    srv.add_argument("--option", metavar="FILE", help="pass 'file FILE' to the program (pptpd's option)")
    srv.add_argument("--localip", type=ip_list, metavar="LIST",
                     help="local address(es) for the calls, pptpd syntax (198.51.100.1 or a list)")
    srv.add_argument("--remoteip", type=ip_list, metavar="LIST",
                     help="client address pool, pptpd syntax: 198.51.100.10-50,198.51.100.60")
    srv.add_argument("--speed", type=int_range(1, 0xFFFFFFFF), metavar="BPS",
                     help=f"speed argument for the program (default {_D.speed})")
    srv.add_argument("--noipparam", action="store_true", help="do not pass 'ipparam CLIENT'")
    srv.add_argument("--delegate", action="store_true",
                     help="pass no LOCAL:REMOTE pair (the program allocates addresses)")
    srv.add_argument("--listen", type=parse_listen, metavar="ADDR[:PORT]",
                     help=f"address and port to listen on (default all addresses, port {_D.port})")
    srv.add_argument("--connections", type=int_range(1, 65535), metavar="N",
                     help="maximum simultaneous control connections, exactly, and with --ppp-program "
                          "the programs running at once (default: --max-sessions "
                          f"+ {BUILTIN_CONNECTION_MARGIN} in built-in mode, {DEFAULT_PROGRAM_CONNECTIONS} "
                          "with --ppp-program)")
    srv.add_argument("--max-per-source", type=int_range(1, 65535), metavar="N",
                     help=f"maximum control connections from one address, and with --ppp-program the "
                          f"programs for one address (default {_D.max_per_source})")
    srv.add_argument("--stimeout", type=positive_float, metavar="S",
                     help=f"seconds a client may take to start the control connection (default "
                          f"{_D.stimeout:g})")
    srv.add_argument("--pidfile", metavar="PATH",
                     help="write the server's pid to PATH once it listens (removed on exit)")
    srv.add_argument("--window", type=int_range(1, 0xFFFF), metavar="N",
                     help=f"packet receive window to advertise (default {_D.window})")
    add_gre_options(srv, peer="each client")
    srv.add_argument("--workers", type=int_range(1, MAX_WORKERS), metavar="N",
                     help="built-in mode: server processes sharing the sessions, one core each "
                          "(default: the CPUs this process may run on, at most "
                          f"{MAX_WORKERS}; 1 with --ppp-program, or a shared --tun-name with "
                          "no room for the worker's index); limits and the address pool stay "
                          "global")
    ctl = srv.add_mutually_exclusive_group()
    ctl.add_argument("--ctl-socket", metavar="PATH",
                     help=f"the control socket for 'pptpkit ctl' (default {DEFAULT_CTL_SOCKET}; "
                          "root and the server's user only)")
    ctl.add_argument("--no-ctl", action="store_true", help="no control socket")

    group = srv.add_argument_group("built-in mode (no --ppp-program)")
    group.add_argument("--local-ip", dest="localip", type=ip_list, metavar="LIST",
                       help="our tunnel address(es), pptpd localip syntax (same as --localip)")
    group.add_argument("--remote-ip", dest="remoteip", type=ip_list, metavar="RANGE",
                       help="client address pool, pptpd remoteip syntax: 198.51.100.10-50,198.51.100.60")
    group.add_argument("--secrets", metavar="FILE",
                       help=f"pppd-format secrets file (default {DEFAULT_SECRETS}, or chap-secrets next "
                            "to the pppd options with --config); reloaded on SIGHUP")
    group.add_argument("--name",
                       help=f"our name for CHAP and the secrets' server column (default {_D.name})")
    group.add_argument("--dns", type=ipv4_address, action="append", metavar="IP",
                       help="DNS server to push via IPCP (repeatable, at most 2)")
    group.add_argument("--wins", type=ipv4_address, action="append", metavar="IP",
                       help="WINS/NBNS server to push via IPCP (repeatable, at most 2)")
    mppe = group.add_mutually_exclusive_group()
    for flag, what in (("require-mppe-128", "require 128-bit MPPE (the default)"),
                       ("require-mppe", "require MPPE, 40 or 128 bits"),
                       ("mppe-optional", "offer MPPE but accept clients without it (traffic may then "
                                         "be clear text)"),
                       ("no-mppe", "never use MPPE")):
        mppe.add_argument(f"--{flag}", dest="mppe", action="store_const", const=flag, help=what)
    group.add_argument("--mppe-stateful", action="store_true",
                       help="allow stateful MPPE (default stateless only)")
    for method in AuthMethod:
        word = auth_words("require", [method])[0]
        group.add_argument(f"--{word}", dest="require", action="append_const", const=word,
                           help=f"accept {method.pppd_name.upper()} authentication (repeatable; default "
                                "MS-CHAPv2 only)")
    group.add_argument("--noauth", action="store_true",
                       help="do not authenticate clients (needs --no-mppe: MPPE keys come from MS-CHAP)")
    group.add_argument("--max-sessions", type=int_range(1, 65535), metavar="N",
                       help=f"maximum simultaneous authenticated sessions; more calls are refused as "
                            f"Busy (default {_D.max_sessions})")
    group.add_argument("--auth-fail-limit", type=int_range(0, 1000), metavar="N",
                       help=f"failed logins within --auth-fail-window from one address (or for one user) "
                            f"that lock it out (default {_D.auth_fail_limit}; 0: never)")
    group.add_argument("--auth-fail-window", type=positive_float, metavar="S",
                       help=f"seconds the failures are counted over (default {_D.auth_fail_window:g})")
    group.add_argument("--auth-lockout", type=positive_float, metavar="S",
                       help=f"first lockout in seconds, doubled on each repeat up to an hour (default "
                            f"{_D.auth_lockout:g})")
    group.add_argument("--auth-lock-users", action="store_true",
                       help="also lock a user name out after --auth-fail-limit failures from anywhere "
                            "(off by default: anyone knowing a name could lock its owner out)")
    group.add_argument("--auth-timeout", type=positive_float, metavar="S",
                       help=f"seconds a call has to authenticate before it is closed (default "
                            f"{DEFAULT_AUTH_TIMEOUT:g})")
    group.add_argument("--max-preauth", type=int_range(1, 65535), metavar="N",
                       help=f"calls that have not authenticated yet, in all; more are refused as Busy "
                            f"(default {DEFAULT_MAX_PREAUTH}); they do not count against --max-sessions")
    group.add_argument("--max-preauth-per-source", type=int_range(1, 65535), metavar="N",
                       help=f"calls not authenticated yet from one address (default "
                            f"{DEFAULT_MAX_PREAUTH_PER_SOURCE})")
    group.add_argument("--tun-mode", choices=TUN_MODES,
                       help="per-session: an interface pptpkitN per session (default); shared: one "
                            "interface for all sessions, routed by address (scales to thousands)")
    group.add_argument("--tun-name", metavar="NAME",
                       help="interface name: per-session template (default pptpkit%%d) or the shared "
                            "interface (default pptpkit-srv; with several workers each adds its index: "
                            "pptpkit-srv0, pptpkit-srv1, ...)")
    group.add_argument("--mtu", type=int_range(576, 1500), metavar="N",
                       help=f"the most we send in one packet (pppd's mtu) and, unless --mru, our MRU; "
                            f"the tunnel MTU is the smaller MRU less MPPE's 4 octets, at most N (default "
                            f"{_D.mtu}, so GRE is not fragmented on a 1500-byte path)")
    group.add_argument("--mru", type=int_range(576, 1500), metavar="N",
                       help="the most we ask a client to send in one packet (pppd's mru; default --mtu)")
    group.add_argument("--echo-interval", type=float, metavar="S",
                       help=f"seconds between LCP echo requests, 0 = off (default {_D.echo_interval:g})")
    group.add_argument("--echo-failure", type=int_range(1, 1000), metavar="N",
                       help=f"unanswered echoes before a session is dropped (default {_D.echo_failure})")
    group.add_argument("--idle", type=positive_float, metavar="S",
                       help="drop a session after S seconds without data (default never)")
    group.add_argument("--no-mss-clamp", action="store_true",
                       help="do not install the nft TCP MSS clamping rule for forwarded traffic")
    group.add_argument("--ipv6", action="store_true",
                       help="also negotiate IPv6 (IPV6CP, pppd's +ipv6): each session's interface gets "
                            "the link-local pair of the negotiated identifiers (per-session interfaces)")
    group.add_argument("--ipv6-prefix", metavar="NET",
                       help="route a /64 from NET (for example 2001:db8:100::/48) to each IPv6 session's "
                            "client, through its link-local address (needs --ipv6)")
    group.add_argument("--proxyarp", action="store_true",
                       help="publish each client's address on the LAN interface whose subnet holds it "
                            "(pppd's proxyarp), so LAN hosts reach clients as neighbours")
    group.add_argument("--shaper", type=rate_limit, metavar="DOWN[/UP]",
                       help="limit each session to DOWN kbit/s towards the client and UP from it "
                            "(suffix k/M/G; UP defaults to DOWN; 0: unlimited); a rate=DOWN/UP word "
                            "in the user's secrets entry comes first")
    group.add_argument("--no-source-check", action="store_true",
                       help="accept packets from a client whatever their source address (for clients "
                            "that route networks of their own; by default a packet whose source is "
                            "not the client's tunnel address is dropped and counted)")
    group.add_argument("--metrics", type=metrics_address, metavar="ADDR:PORT",
                       help="serve Prometheus metrics at http://ADDR:PORT/metrics (IPv6: [ADDR]:PORT; "
                            "off by default)")
    radius = srv.add_argument_group("RADIUS (built-in mode)")
    radius.add_argument("--radius-server", dest="radius_servers", action="append", metavar="HOST[:PORT]",
                        help="RADIUS authentication server, an IP address (default port 1812); repeat "
                             "for failover, in order")
    radius.add_argument("--radius-acct-server", dest="radius_acct_servers", action="append",
                        metavar="HOST[:PORT]",
                        help="RADIUS accounting server (default: the --radius-server hosts, port 1813)")
    radius.add_argument("--radius-secret-file", metavar="FILE",
                        help="file holding the shared secret (never on the command line)")
    radius.add_argument("--radius-timeout", type=positive_float, metavar="S",
                        help=f"seconds before a RADIUS request is sent again (default {_D.radius_timeout:g}, "
                             "doubling)")
    radius.add_argument("--radius-retries", type=int_range(0, 20), metavar="N",
                        help=f"retransmissions per server before the next one (default {_D.radius_retries})")
    radius.add_argument("--nas-identifier", metavar="TEXT",
                        help="NAS-Identifier in every request (default pptpkit, unless --nas-ip-address)")
    radius.add_argument("--nas-ip-address", metavar="IP", help="NAS-IP-Address in every request")
    radius.add_argument("--radius-interim", type=positive_float, metavar="S",
                        help="Interim-Update interval when the Access-Accept sets none (default: none; "
                             "at least 60)")
    radius.add_argument("--radius-dae-listen", metavar="ADDR[:PORT]",
                        help="listen for RFC 5176 Disconnect/CoA requests (port 3799 by default; off "
                             "unless set)")
    radius.add_argument("--radius-dae-client", dest="radius_dae_clients", action="append", metavar="IP",
                        help="address allowed to send Disconnect/CoA requests (repeatable)")
    _add_hook_flags(srv)
    return srv


def _add_hook_flags(srv: argparse.ArgumentParser) -> None:
    hooks = srv.add_argument_group("hook scripts (built-in mode; pppd's, run when present and executable)")
    for kind in ("ip-up", "ip-down", "ipv6-up", "ipv6-down"):
        hooks.add_argument(f"--{kind}", metavar="PATH", help=f"the {kind} script (default /etc/ppp/{kind})")
    hooks.add_argument("--no-hooks", action="store_true", help="run no hook scripts")
    hooks.add_argument("--hook-timeout", type=positive_float, metavar="S",
                       help="kill a hook script still running after S seconds (default 30)")


#: Flags whose value is the setting as it is: dest -> settings field.
_PLAIN: Final = {
    "ppp_program": "ppp_program", "option": "option_file", "localip": "localip",
    "remoteip": "remoteip", "speed": "speed", "noipparam": "noipparam", "delegate": "delegate",
    "connections": "connections", "max_per_source": "max_per_source", "stimeout": "stimeout",
    "window": "window", "nobuffer": "nobuffer", "secrets": "secrets", "name": "name",
    "max_sessions": "max_sessions", "tun_mode": "tun_mode", "tun_name": "tun_name", "mtu": "mtu",
    "echo_interval": "echo_interval", "echo_failure": "echo_failure", "idle": "idle",
    "pidfile": "pidfile", "auth_timeout": "auth_timeout", "auth_fail_limit": "auth_fail_limit",
    "auth_fail_window": "auth_fail_window", "auth_lockout": "auth_lockout", "max_preauth": "max_preauth",
    "max_preauth_per_source": "max_preauth_per_source", "ipv6_prefix": "ipv6_prefix",
    "radius_secret_file": "radius_secret_file", "radius_timeout": "radius_timeout",
    "radius_retries": "radius_retries", "nas_identifier": "nas_identifier",
    "nas_ip_address": "nas_ip_address", "radius_interim": "radius_interim",
    "radius_dae_listen": "radius_dae_listen",
    "ctl_socket": "ctl_socket",
    "ip_up": "ip_up", "ip_down": "ip_down", "ipv6_up": "ipv6_up", "ipv6_down": "ipv6_down",
    "hook_timeout": "hook_timeout",
    "metrics": "metrics",
    "mru": "mru",
    "shaper": "shaper",
    "workers": "workers",
}


def flag_changes(args: argparse.Namespace, base: ServerSettings) -> ServerChanges:
    """The settings the flags given on the command line say (``base``: the layers below, for
    the flags that adjust a setting instead of replacing it, such as ``--mppe-stateful``)."""
    given: dict[str, Any] = vars(args)
    changes: dict[str, Any] = {field: given[dest] for dest, field in _PLAIN.items() if dest in given}
    if "listen" in given:
        changes["listen"], changes["port"] = given["listen"]
    if "ignore_peer_window" in given:
        changes["respect_peer_window"] = False
    if "ppp_arg" in given:
        changes["ppp_args"] = tuple(given["ppp_arg"])
    for name in ("dns", "wins", "radius_servers", "radius_acct_servers", "radius_dae_clients"):
        if name in given:
            changes[name] = tuple(given[name])
    if "no_mss_clamp" in given:
        changes["mss_clamp"] = False
    if "proxyarp" in given:
        changes["proxyarp"] = True
    if "ipv6" in given:
        changes["ipv6"] = True
    if "mtu" in given and "mru" not in given:
        changes["mru"] = None  # --mtu is our MRU too, whatever MRU the file asked for
    if "auth_lock_users" in given:
        changes["auth_lock_users"] = True
    if "no_source_check" in given:
        changes["source_check"] = False
    if "no_ctl" in given:
        changes["ctl_socket"] = None
    if "no_hooks" in given:
        changes["hooks"] = False
    if given.get("verbose"):
        changes["verbose"] = max(base.verbose, given["verbose"])
    # Stateful MPPE is a setting of its own: a mode flag keeps what the file said about it.
    stateful = "mppe_stateful" in given or base.mppe.stateful
    if "mppe" in given:
        words = SERVER_MPPE_WORDS[given["mppe"]]
        changes["mppe"] = mppe_policy([*words, "mppe-stateful" if stateful else "nomppe-stateful"])
    elif stateful:
        changes["mppe"] = replace(base.mppe, stateful=True)
    if "noauth" in given:
        if "require" in given:
            raise ConfigError("--noauth contradicts --require-*")
        changes["auth"] = auth_policy(["noauth"])
    elif "require" in given:
        changes["auth"] = auth_policy(given["require"])
    return cast(ServerChanges, changes)


def server_settings(args: argparse.Namespace, *, etc_dir: str | None = None) -> ServerSettings:
    """Defaults, then ``--config``, then the flags.  Raises :class:`ConfigError`."""
    settings = ServerSettings()
    if "config" in args:
        from pptpkit.compat.pptpdconf import read_pptpd_conf, server_changes

        conf = read_pptpd_conf(args.config)
        builtin = "ppp_program" not in args and conf.ppp is None
        settings = settings.with_file(server_changes(conf, builtin=builtin, etc_dir=etc_dir))
    return settings.with_flags(flag_changes(args, settings))


def program_config(settings: ServerSettings) -> PppProgramConfig:
    """The PPP-program mode's per-call program settings."""
    assert settings.ppp_program is not None
    settings.check_program()
    if settings.option_file is not None:
        from pptpkit.compat.pptpdconf import unreadable

        why = unreadable(settings.option_file)
        if why is not None:
            # From the command line: pptpd.conf's 'option' was checked at its line.
            raise ConfigError(f"--option {settings.option_file}: cannot read: {why}")
    pool = None
    if not settings.delegate and settings.localip is not None and settings.remoteip is not None:
        pool = AddressPool(list(settings.localip), list(settings.remoteip))
    return PppProgramConfig(program=settings.ppp_program, program_args=settings.ppp_args,
                            option_file=settings.option_file, pool=pool, speed=str(settings.speed),
                            noipparam=settings.noipparam, delegate=settings.delegate,
                            # pptpd runs one pppd per connection: as many programs as connections.
                            max_programs=settings.connection_limit,
                            max_programs_per_source=settings.max_per_source)


def builtin_config(settings: ServerSettings) -> BuiltinConfig:
    """The built-in mode's PPP settings (loads the secrets file)."""
    settings.check_builtin()
    assert settings.localip is not None and settings.remoteip is not None
    radius = bool(settings.radius_servers)
    return BuiltinConfig(
        pool=AddressPool(list(settings.localip), list(settings.remoteip)),
        # With RADIUS the secrets stay with the AAA: no local file is read (or needed).
        secrets=StaticSecrets({}) if radius else PppSecretsFile(settings.secrets),
        external_auth=radius,
        name=settings.name,
        auth_policy=settings.auth,
        mppe=settings.mppe,
        dns_servers=settings.dns,
        nbns_servers=settings.wins,
        mru=settings.mru if settings.mru is not None else settings.mtu,
        echo_interval=settings.echo_interval,
        echo_failure=settings.echo_failure,
        idle_timeout=settings.idle,
        max_sessions=settings.max_sessions,
        max_per_source=settings.max_per_source,
        source_check=settings.source_check,
        proxyarp=settings.proxyarp,
        ipv6=settings.ipv6,
        ipv6_prefixes=None if settings.ipv6_prefix is None else PrefixPool(settings.ipv6_prefix),
        mschap_strip_domain=settings.mschap_strip_domain,
        auth_timeout=settings.auth_timeout,
        max_preauth=settings.max_preauth,
        max_preauth_per_source=settings.max_preauth_per_source,
    )


def radius_setup(settings: ServerSettings) -> RadiusSetup | None:
    """The RADIUS configuration (reads the secret file), None without RADIUS servers."""
    server_secrets = None
    if settings.radius_servers_file is not None and settings.radius_secret_file is None:
        from pptpkit.compat.radiusclient import read_servers_file

        server_secrets = read_servers_file(settings.radius_servers_file)
    return RadiusSetup.build(
        server_secrets=server_secrets,
        auth_servers=settings.radius_servers, acct_servers=settings.radius_acct_servers,
        secret_file=settings.radius_secret_file, timeout=settings.radius_timeout,
        retries=settings.radius_retries, nas_identifier=settings.nas_identifier,
        nas_ip_address=settings.nas_ip_address, interim=settings.radius_interim,
        dae_listen=settings.radius_dae_listen, dae_clients=settings.radius_dae_clients)


def pptp_server_config(settings: ServerSettings) -> PptpServerConfig:
    """The PAC settings for either mode, limits exactly as given."""
    if not settings.builtin:
        return PptpServerConfig(listen=settings.listen, port=settings.port,
                                max_connections=settings.connection_limit,
                                max_per_source=settings.max_per_source,
                                start_timeout=settings.stimeout, window=settings.window,
                                nobuffer=settings.nobuffer,
                                respect_peer_window=settings.respect_peer_window)
    return PptpServerConfig(
        listen=settings.listen, port=settings.port,
        # Both limits exactly as given: a session beyond them is refused at the connection,
        # and one within them may still be refused at the call (Busy) by the session limits.
        max_connections=settings.connection_limit,
        max_per_source=settings.max_per_source,
        start_timeout=settings.stimeout, window=settings.window, nobuffer=settings.nobuffer,
        respect_peer_window=settings.respect_peer_window,
    )


async def _start(server: PptpServer, settings: ServerSettings) -> int | None:
    try:
        await server.start()
    except OSError as exc:
        if is_not_permitted(exc):
            return not_permitted("server", exc)
        return fail("server", ExitStatus.FATAL,
                    f"cannot start the server on {settings.listen or '*'}:{settings.port}: {exc}")
    return None


class _PidFile:
    """``--pidfile``/pptpd.conf's ``pidfile``: written once the server listens, removed when it
    stops (only if it still holds our pid: a successor may own it by then)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._written = False

    def write(self) -> None:
        if self.path is None:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)  # atomically: nobody reads half a pid
        self._written = True

    def remove(self) -> None:
        if self.path is None or not self._written:
            return
        with contextlib.suppress(OSError):
            with open(self.path) as f:
                if f.read().strip() != str(os.getpid()):
                    return
            os.unlink(self.path)


def _ready(server: PptpServer, pidfile: _PidFile) -> None:
    pidfile.write()
    notify("READY=1", f"STATUS=listening on {', '.join(server.addresses)}")


async def run_program(settings: ServerSettings, program: PppProgramConfig) -> int:
    """PPP-program mode until SIGINT/SIGTERM/SIGHUP."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_signals(loop, stop)
    server = PptpServer(pptp_server_config(settings), ppp_program_factory(program))
    pidfile = _PidFile(settings.pidfile)
    ctl = None
    if settings.ctl_socket is not None:
        from pptpkit.ops.ctl import CtlServer, ProgramBackend

        ctl = CtlServer(settings.ctl_socket)
        try:
            await ctl.open(ProgramBackend(server))
        except (PptpkitError, OSError) as exc:
            return not_permitted("server", exc) if is_not_permitted(exc) else fail(
                "server", ExitStatus.FATAL, str(exc))
    try:
        failed = await _start(server, settings)
        if failed is not None:
            return failed
        try:
            _ready(server, pidfile)
            await stop.wait()
            notify("STOPPING=1")
            log.info("shutting down: %d connections, %d calls", server.connections, len(server.calls))
            await server.close()
        finally:
            pidfile.remove()
    finally:
        if ctl is not None:
            await ctl.close()
    log.info("stopped")
    return ExitStatus.OK


def extensions(settings: ServerSettings, radius: RadiusSetup | None = None) -> list[ServerExtension]:
    """What the settings ask to run beside the built-in sessions (:mod:`pptpkit.ops`), in the
    order they start."""
    found: list[ServerExtension] = []
    if radius is not None and radius.auth is not None:
        from pptpkit.ops.radius_auth import RadiusAuth

        found.append(RadiusAuth(radius))
    if radius is not None and radius.acct is not None:
        from pptpkit.ops.accounting import RadiusAccounting

        found.append(RadiusAccounting(radius))
    if radius is not None and radius.dae_listen is not None:
        from pptpkit.ops.dae import DynamicAuthorization

        found.append(DynamicAuthorization(radius))
    if settings.ctl_socket is not None:
        from pptpkit.ops.ctl import CtlExtension

        found.append(CtlExtension(settings.ctl_socket))
    if settings.hooks:
        from pptpkit.ops.hooks import HookScripts, HookSettings
        from pptpkit.vpn.hooks import HookKind

        found.append(HookScripts(HookSettings(
            scripts={HookKind.IP_UP: settings.ip_up, HookKind.IP_DOWN: settings.ip_down,
                     HookKind.IPV6_UP: settings.ipv6_up, HookKind.IPV6_DOWN: settings.ipv6_down},
            timeout=settings.hook_timeout, speed=settings.speed, ipparam=not settings.noipparam)))
    # Always: a secrets entry's rate= applies even without a default.
    from pptpkit.ops.shaper import Shaper

    found.append(Shaper(settings.shaper, shared=settings.tun_mode == "shared"))
    if settings.metrics is not None:
        from pptpkit.ops.metrics import Metrics
        from pptpkit.ops.radius_auth import RadiusAuth

        # Last, so it can export what the extensions before it count.
        auth = next((e for e in found if isinstance(e, RadiusAuth)), None)
        found.append(Metrics(settings.metrics, radius=auth))
    return found


def guard_config(settings: ServerSettings) -> GuardConfig:
    """The failed-login guard's settings (each worker's and, with workers, the supervisor's)."""
    return GuardConfig(limit=settings.auth_fail_limit, window=settings.auth_fail_window,
                       lockout=settings.auth_lockout, max_lockout=max(3600.0, settings.auth_lockout),
                       lock_users=settings.auth_lock_users)


def _clamp_pattern(settings: ServerSettings) -> str:
    if settings.tun_mode == "shared":
        return f"{settings.tun_name or DEFAULT_SHARED_TUN}{'*' if settings.worker_count > 1 else ''}"
    return (settings.tun_name or "pptpkit%d").replace("%d", "*")


async def run_supervisor(settings: ServerSettings, config: BuiltinConfig, argv: list[str],
                         radius: RadiusSetup | None = None) -> int:
    """``--workers N`` (N > 1): the supervisor (:mod:`pptpkit.ops.supervisor`) starts N workers
    running this same command line and keeps what they share."""
    from pptpkit.ops.supervisor import Supervisor
    from pptpkit.vpn.workers import Ledger, LedgerLimits

    ledger = Ledger(config.pool, LedgerLimits(
        max_sessions=config.max_sessions, max_per_source=config.max_per_source,
        max_preauth=config.max_preauth, max_preauth_per_source=config.max_preauth_per_source,
        max_connections=settings.connection_limit, max_connections_per_source=settings.max_per_source))
    pidfile = _PidFile(settings.pidfile)
    clamp = MssClamp(_clamp_pattern(settings)) if settings.mss_clamp else None
    try:
        if clamp is not None:
            try:
                await clamp.install()
            except (NftError, OSError) as exc:
                log.warning("TCP MSS clamping not installed: %s", exc)
        accounting = None
        if radius is not None and radius.acct is not None:
            from pptpkit.ops.accounting import RadiusAccounting

            accounting = RadiusAccounting(radius)
        # Said before any worker starts: whoever reads the log knows to wait for all of them.
        log.info("starting %d workers (%s)", settings.worker_count,
                 "--workers" if settings.workers is not None
                 else "one per CPU this process may run on; --workers 1 for a single process")
        supervisor = Supervisor(argv, settings.worker_count, ledger, ctl_socket=settings.ctl_socket,
                                metrics=settings.metrics, pidfile=pidfile.write, accounting=accounting,
                                dae=radius if radius is not None and radius.dae_listen is not None else None,
                                guard=AuthGuard(guard_config(settings), time.monotonic),
                                status=f"listening on {settings.listen or '0.0.0.0'}:{settings.port}")
        return await supervisor.run()
    except (PptpkitError, OSError) as exc:
        return (not_permitted("server", exc) if is_not_permitted(exc)
                else fail("server", ExitStatus.FATAL, str(exc)))
    finally:
        if clamp is not None:
            await clamp.remove()
        pidfile.remove()


async def run_builtin(settings: ServerSettings, config: BuiltinConfig,
                      radius: RadiusSetup | None = None, worker: WorkerSide | None = None) -> int:
    """Built-in mode until SIGINT/SIGTERM (SIGHUP re-reads the secrets); ``worker``: as one
    worker of a supervisor (``--workers``)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    router: SharedTunRouter | None = None
    plane: DataPlane
    if settings.tun_mode == "shared":
        shared_name = settings.tun_name or DEFAULT_SHARED_TUN
        if worker is not None:
            # One shared interface per worker: a TUN device's packets go to whoever reads it.
            shared_name = f"{shared_name}{worker.slot.index}"
        router = SharedTunRouter(shared_name, mtu=settings.mtu)
        plane = router
        pattern = router.name
    else:
        name = settings.tun_name or "pptpkit%d"
        # pppd's mtu: the interface never carries more than --mtu, whatever the MRUs allow.
        plane = TunDataPlane(name, mtu=settings.mtu)
        pattern = name.replace("%d", "*")
    guard = AuthGuard(guard_config(settings), time.monotonic)
    config = dataclasses.replace(config, secrets=GuardedSecrets(config.secrets, guard))
    if worker is not None and config.ipv6_prefixes is not None:
        # Every worker its own share of the prefixes: no two hand out the same one.
        config = dataclasses.replace(config, ipv6_prefixes=PrefixPool(
            str(config.ipv6_prefixes.network), share=(worker.slot.index, worker.slot.count)))
    sessions = BuiltinSessions(config, plane)
    guard.attach(sessions)
    if worker is None:
        server = PptpServer(pptp_server_config(settings), sessions)
    else:
        await worker.open(stop)
        gre, call_ids = worker.pptp_overrides()
        server = PptpServer(dataclasses.replace(pptp_server_config(settings), reuse_port=True), sessions,
                            gre_socket=gre, call_ids=call_ids)
    # With workers the supervisor installs the clamp once, for every worker's interfaces.
    clamp = MssClamp(pattern) if settings.mss_clamp and worker is None else None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        notify("RELOADING=1", "STATUS=reloading the secrets")
        sessions.reload_secrets()
        notify("READY=1", f"STATUS=listening on {', '.join(server.addresses)}")

    loop.add_signal_handler(signal.SIGHUP, reload)
    pidfile = _PidFile(settings.pidfile)
    code: int = ExitStatus.OK
    started: list[ServerExtension] = []
    try:
        if router is not None:
            await router.open()
        # A worker leaves the control socket to the supervisor and serves no metrics itself.
        wanted = extensions(settings if worker is None else replace(settings, ctl_socket=None), radius)
        if worker is not None:
            worker.adopt(wanted)
        for extension in wanted:
            await extension.start(sessions, server)
            started.append(extension)
        if worker is not None:
            from pptpkit.ops.metrics import Metrics

            worker.attach(sessions, server, next((e for e in started if isinstance(e, Metrics)), None),
                          guard)
        if clamp is not None:
            try:
                await clamp.install()
            except (NftError, OSError) as exc:
                log.warning("TCP MSS clamping not installed: %s", exc)
        failed = await _start(server, settings)
        if failed is not None:
            return failed
        log.info("built-in PPP: %s, %s, pool %d addresses, tun mode %s, mru %d", config.name,
                 config.mppe.describe(), config.pool.size, settings.tun_mode, config.mru)
        if worker is None:
            _ready(server, pidfile)
        else:
            worker.ready()
        await stop.wait()
        notify("STOPPING=1")
        log.info("shutting down: %d sessions, %d connections", sessions.sessions, server.connections)
        await sessions.close_all()
    except (PptpkitError, OSError) as exc:
        code = (not_permitted("server", exc) if is_not_permitted(exc)
                else fail("server", ExitStatus.FATAL, str(exc)))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.close()
        for extension in reversed(started):
            try:
                await extension.stop()
            except Exception:
                log.exception("stopping %s failed", type(extension).__name__)
        if router is not None:
            await router.close()
        if clamp is not None:
            await clamp.remove()
        if worker is not None:
            await worker.close()
        pidfile.remove()
        log.info("stopped")
    return code


def main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """``pptpkit server``: settings (usage errors and unusable files exit 2), then the server.
    ``argv``: the whole command line after the program name (what workers are started with)."""
    try:
        settings = server_settings(args)
        settings.check_workers()
        if settings.verbose > args.verbose or settings.logfile is not None:
            # pptpd.conf's or the options' 'debug', the options' 'logfile'.
            setup_logging(max(settings.verbose, args.verbose), args.quiet, args.log,
                          copy=settings.logfile)
        if settings.builtin:
            config = builtin_config(settings)
            radius = radius_setup(settings)
        else:
            program = program_config(settings)
    except ConfigError as exc:
        return fail("server", ExitStatus.USAGE, str(exc))
    if settings.builtin:
        from pptpkit.ops.supervisor import WorkerSide, worker_slot

        try:
            slot = worker_slot()
        except ConfigError as exc:
            return fail("server", ExitStatus.USAGE, str(exc))
        from pptpkit.io.loop import freeze_startup_heap

        freeze_startup_heap()
        if slot is None and settings.worker_count > 1:
            return asyncio.run(run_supervisor(settings, config, argv if argv is not None else sys.argv[1:],
                                              radius))
        return asyncio.run(run_builtin(settings, config, radius, None if slot is None else WorkerSide(slot)))
    return asyncio.run(run_program(settings, program))
