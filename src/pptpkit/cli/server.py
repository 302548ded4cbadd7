"""``pptpkit server`` in built-in mode (no ``--ppp-program``): our own PPP stack per call.

One process serves every session: PPTP control and GRE (:class:`~pptpkit.pptp.server.PptpServer`),
a :class:`~pptpkit.io.link.PppLink` per call (:class:`~pptpkit.pptp.server.BuiltinSessions`), IP on a
TUN interface per session or on one shared TUN, TCP MSS clamping in an nft table of our own.
SIGINT/SIGTERM: LCP Terminate-Request to every peer, Call-Disconnect-Notify and
Stop-Control-Connection-Request, interfaces, routes and the nft table removed.  SIGHUP: the
secrets file is re-read (a bad file keeps the old secrets; the error says ``path:line``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from typing import Final

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import PppSecretsFile
from pptpkit.cli.argtypes import int_range
from pptpkit.cli.main import EXIT_ERROR, EXIT_OK, EXIT_USAGE, _ipv4, _positive_float
from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.io.link import DataPlane, SharedTunRouter, TunDataPlane
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.pptp.server import (
    DEFAULT_BUILTIN_MRU,
    AddressPool,
    BuiltinConfig,
    BuiltinSessions,
    PptpServer,
    PptpServerConfig,
)
from pptpkit.vpn.netpolicy import MssClamp, NftError

__all__ = ["BUILTIN_HELP", "add_builtin_arguments", "builtin_config", "run_builtin"]

log = logging.getLogger("pptpkit.server")

DEFAULT_SECRETS: Final = "/etc/ppp/chap-secrets"
TUN_MODES: Final = ("per-session", "shared")

BUILTIN_HELP: Final = """\
built-in mode (the default, without --ppp-program): pptpkit runs the PPP sessions itself and
routes IP over TUN interfaces.  Security defaults, as a production pptpd should be set up:
authentication required (MS-CHAPv2, secrets from /etc/ppp/chap-secrets) and MPPE-128 required;
relax with --require-mppe (40 or 128 bits), --mppe-optional or --no-mppe, and --require-X for
other authentication methods.  A secrets entry naming one address gives that user that address
instead of one from --remote-ip.  SIGHUP re-reads the secrets without dropping sessions.
"""

_AUTH_OPTIONS: Final = {
    "pap": AuthMethod.PAP,
    "chap": AuthMethod.CHAP_MD5,
    "mschap": AuthMethod.MSCHAP_V1,
    "mschap-v2": AuthMethod.MSCHAP_V2,
    "eap": AuthMethod.EAP,
}


def add_builtin_arguments(srv: argparse.ArgumentParser) -> None:
    """Add the built-in mode's options to the ``server`` parser (cli.py owns the others)."""
    from pptpkit.cli.main import _ip_list

    srv.add_argument("--config", metavar="PPTPD_CONF",
                     help="read an existing pptpd.conf: 'ppp PROGRAM' selects the PPP-program mode, "
                          "otherwise the built-in stack runs with the pppd options file 'option' names")
    group = srv.add_argument_group("built-in mode (no --ppp-program)")
    group.add_argument("--local-ip", dest="localip", type=_ip_list, metavar="LIST",
                       help="our tunnel address(es), pptpd localip syntax (same as --localip)")
    group.add_argument("--remote-ip", dest="remoteip", type=_ip_list, metavar="RANGE",
                       help="client address pool, pptpd remoteip syntax: 198.51.100.10-50,198.51.100.60")
    group.add_argument("--secrets", default=DEFAULT_SECRETS, metavar="FILE",
                       help=f"pppd-format secrets file (default {DEFAULT_SECRETS}); reloaded on SIGHUP")
    group.add_argument("--name", default="pptpd",
                       help="our name for CHAP and the secrets' server column (default pptpd)")
    group.add_argument("--dns", type=_ipv4, action="append", default=[], metavar="IP",
                       help="DNS server to push via IPCP (repeatable, at most 2)")
    group.add_argument("--wins", type=_ipv4, action="append", default=[], metavar="IP",
                       help="WINS/NBNS server to push via IPCP (repeatable, at most 2)")
    mppe = group.add_mutually_exclusive_group()
    mppe.add_argument("--require-mppe-128", dest="mppe", action="store_const", const="128",
                      help="require 128-bit MPPE (the default)")
    mppe.add_argument("--require-mppe", dest="mppe", action="store_const", const="any",
                      help="require MPPE, 40 or 128 bits")
    mppe.add_argument("--mppe-optional", dest="mppe", action="store_const", const="optional",
                      help="offer MPPE but accept clients without it (traffic may then be clear text)")
    mppe.add_argument("--no-mppe", dest="mppe", action="store_const", const="none", help="never use MPPE")
    group.add_argument("--mppe-stateful", action="store_true",
                       help="allow stateful MPPE (default stateless only)")
    for word in _AUTH_OPTIONS:
        group.add_argument(f"--require-{word}", dest="require", action="append_const", const=word,
                           help=f"accept {word.upper()} authentication (repeatable; default MS-CHAPv2 only)")
    group.add_argument("--noauth", action="store_true",
                       help="do not authenticate clients (needs --no-mppe: MPPE keys come from MS-CHAP)")
    group.add_argument("--max-sessions", type=int_range(1, 65535), default=1000, metavar="N",
                       help="maximum simultaneous sessions; more calls are refused as Busy (default 1000)")
    group.add_argument("--tun-mode", choices=TUN_MODES, default="per-session",
                       help="per-session: an interface pptpkitN per session (default); shared: one "
                            "interface for all sessions, routed by address (scales to thousands)")
    group.add_argument("--tun-name", default=None, metavar="NAME",
                       help="interface name: per-session template (default pptpkit%%d) or the shared "
                            "interface (default pptpkit-srv)")
    group.add_argument("--mtu", type=int_range(576, 1500), default=DEFAULT_BUILTIN_MRU, metavar="N",
                       help=f"our MRU; the tunnel MTU is the smaller MRU less MPPE's 4 octets (default "
                            f"{DEFAULT_BUILTIN_MRU}, so GRE is not fragmented on a 1500-byte path)")
    group.add_argument("--echo-interval", type=float, default=10.0, metavar="S",
                       help="seconds between LCP echo requests, 0 = off (default 10)")
    group.add_argument("--echo-failure", type=int_range(1, 1000), default=3, metavar="N",
                       help="unanswered echoes before a session is dropped (default 3)")
    group.add_argument("--idle", type=_positive_float, default=None, metavar="S",
                       help="drop a session after S seconds without data (default never)")
    group.add_argument("--no-mss-clamp", action="store_true",
                       help="do not install the nft TCP MSS clamping rule for forwarded traffic")


def builtin_config(args: argparse.Namespace) -> BuiltinConfig:
    """The :class:`BuiltinConfig` the command line describes (loads the secrets file)."""
    if args.delegate or args.option or args.ppp_arg or args.noipparam:
        raise ConfigError("--delegate/--option/--ppp-arg/--noipparam only apply with --ppp-program")
    if args.localip is None or args.remoteip is None:
        raise ConfigError("give --local-ip and --remote-ip (the address pool)")
    if len(args.dns) > 2 or len(args.wins) > 2:
        raise ConfigError("IPCP carries at most two DNS and two WINS servers")
    if not 0 <= args.echo_interval <= 3600:
        raise ConfigError("--echo-interval must be between 0 and 3600 seconds")
    mode = args.mppe or "128"
    if mode == "none":
        mppe = MppePolicy.nomppe()
    elif mode == "optional":
        mppe = MppePolicy(stateful=args.mppe_stateful)
    else:
        mppe = MppePolicy(bits_40=mode == "any", bits_128=True, required=True, stateful=args.mppe_stateful)
    if args.noauth:
        if args.require:
            raise ConfigError("--noauth contradicts --require-*")
        policy = AuthPolicy()
    else:
        words = args.require or ["mschap-v2"]
        policy = AuthPolicy(require=frozenset(_AUTH_OPTIONS[w] for w in words))
    secrets = PppSecretsFile(args.secrets)
    return BuiltinConfig(
        pool=AddressPool(args.localip, args.remoteip),
        secrets=secrets,
        name=args.name,
        auth_policy=policy,
        mppe=mppe,
        dns_servers=tuple(ipaddress.IPv4Address(a) for a in args.dns),
        nbns_servers=tuple(ipaddress.IPv4Address(a) for a in args.wins),
        mru=args.mtu,
        echo_interval=args.echo_interval,
        echo_failure=args.echo_failure,
        idle_timeout=args.idle or 0.0,
        max_sessions=args.max_sessions,
        max_per_source=args.max_per_source,
    )


async def run_builtin(args: argparse.Namespace) -> int:
    try:
        config = builtin_config(args)
    except ConfigError as exc:
        print(f"pptpkit server: {exc}", file=sys.stderr)
        # A file that cannot be used is a run-time error; a contradictory command line is not.
        return EXIT_ERROR if exc.path is not None else EXIT_USAGE
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    router: SharedTunRouter | None = None
    plane: DataPlane
    if args.tun_mode == "shared":
        router = SharedTunRouter(args.tun_name or "pptpkit-srv", mtu=args.mtu)
        plane = router
        pattern = router.name
    else:
        name = args.tun_name or "pptpkit%d"
        plane = TunDataPlane(name)
        pattern = name.replace("%d", "*")
    sessions = BuiltinSessions(config, plane)
    host, port = args.listen
    server = PptpServer(PptpServerConfig(
        listen=host, port=port,
        max_connections=min(65535, max(args.connections, args.max_sessions + 16)),
        # Sessions per source are refused at the call, with a result code; the connection
        # limit only guards against a flood of idle control connections.
        max_per_source=min(65535, max(args.max_per_source + 16, 16)),
        start_timeout=args.stimeout, window=args.window, nobuffer=args.nobuffer,
        respect_peer_window=not args.ignore_peer_window,
    ), sessions)
    clamp = None if args.no_mss_clamp else MssClamp(pattern)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, sessions.reload_secrets)
    code = EXIT_OK
    try:
        if router is not None:
            await router.open()
        if clamp is not None:
            try:
                await clamp.install()
            except (NftError, OSError) as exc:
                log.warning("TCP MSS clamping not installed: %s", exc)
        try:
            await server.start()
        except OSError as exc:
            print(f"pptpkit: cannot start the server on {host or '*'}:{port}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        log.info("built-in PPP: %s, %s, pool %d addresses, tun mode %s, mru %d", config.name,
                 config.mppe.describe(), config.pool.size, args.tun_mode, config.mru)
        await stop.wait()
        log.info("shutting down: %d sessions, %d connections", sessions.sessions, server.connections)
        await sessions.close_all()
    except (PptpkitError, OSError) as exc:
        print(f"pptpkit server: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.close()
        if router is not None:
            await router.close()
        if clamp is not None:
            await clamp.remove()
        log.info("stopped")
    return code
