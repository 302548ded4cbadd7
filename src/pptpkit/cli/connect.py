"""``pptpkit connect SERVER --user NAME``: the command line of :mod:`pptpkit.vpn.connect`.

The password never comes from the command line (other users can read it in ``ps``): from
``--password-file``, the ``PPTPKIT_PASSWORD`` environment variable, or a prompt when stdin is a
terminal, in that order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any, Final

from pptpkit.auth.methods import AuthMethod
from pptpkit.cli.argtypes import add_gre_options, float_range, int_range, ipv4_address
from pptpkit.cli.common import exit_help, fail, not_permitted
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ConfigError, ExitStatus
from pptpkit.io.sdnotify import notify
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.vpn.connect import DEFAULT_BACKOFF_CAP, ConnectConfig, Connector, describe_up
from pptpkit.vpn.routes import parse_route
from pptpkit.vpn.settings import auth_policy, auth_words, mppe_policy

if TYPE_CHECKING:
    from pptpkit.compat.peerprofile import PeerProfile

log = logging.getLogger("pptpkit.connect")

__all__ = [
    "PASSWORD_ENV",
    "ConnectUsageError",
    "add_connect_parser",
    "config_from_args",
    "read_password",
    "run_connect_command",
]

PASSWORD_ENV: Final = "PPTPKIT_PASSWORD"
#: pppd's MAXSECRETLEN is 256; a longer "password file" is the wrong file.
MAX_PASSWORD_FILE: Final = 4096

_REFUSE_FLAGS: Final = (
    ("pap", AuthMethod.PAP, "PAP (sends the password in clear)"),
    ("chap", AuthMethod.CHAP_MD5, "CHAP-MD5"),
    ("mschap", AuthMethod.MSCHAP_V1, "MS-CHAP (v1)"),
    ("mschap-v2", AuthMethod.MSCHAP_V2, "MS-CHAPv2"),
    ("eap", AuthMethod.EAP, "EAP"),
)

DESCRIPTION: Final = """\
Connect to the PPTP server SERVER, authenticate as --user and bring up a TUN interface (pptpN)
with the address the server assigns.  Before anything else a host route to SERVER is pinned to
the path it is reached by now, so no route through the tunnel can capture the tunnel's own TCP
and GRE packets; it is removed on exit with everything else (routes, interface, resolv.conf).

Authentication: whatever the server asks for (EAP, MS-CHAPv2, MS-CHAP, CHAP, PAP), unless
refused with --refuse-*.  MPPE: by default we accept what the server offers, 128-bit preferred,
and also run without encryption if the server offers none (as pppd does without require-mppe);
--require-mppe-128 is what a VPN user normally wants.

The password comes from --password-file, else $PPTPKIT_PASSWORD, else a prompt on the terminal.
"""


PERSIST_HELP: Final = """\
with --persist, every failure is retried (backoff 1, 2, 4 ... 60 s) except 1, 2, 3, 19, 32
and MPPE refused (10); the last failure's status is the exit status.
"""

#: connect's MPPE flags (argparse dests) as the pppd options they are named after.
MPPE_FLAG_WORDS: Final = (
    ("no_mppe", "nomppe"),
    ("require_mppe", "require-mppe"),
    ("require_mppe_128", "require-mppe-128"),
    ("no_mppe_40", "nomppe-40"),
    ("no_mppe_128", "nomppe-128"),
    ("mppe_stateful", "mppe-stateful"),
)


class ConnectUsageError(Exception):
    """A command line that parses but cannot work (printed as a usage error, exit 2)."""


def _ipv4_or_name(text: str) -> str:
    if not text or len(text) > 253:
        raise argparse.ArgumentTypeError(f"bad server {text!r}")
    return text


def _route(text: str) -> ipaddress.IPv4Network:
    try:
        return parse_route(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_connect_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``connect`` subcommand to ``sub`` (the subparsers of ``pptpkit``)."""
    p: argparse.ArgumentParser = sub.add_parser(
        # No abbreviations: "--password X" must not quietly mean --password-file X.
        "connect", parents=[common], allow_abbrev=False,
        help="VPN client: PPTP + PPP to SERVER, a TUN interface, routes",
        description=DESCRIPTION, epilog=exit_help("connect", extra=PERSIST_HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("server", type=_ipv4_or_name, metavar="SERVER", nargs="?",
                   help="the server (IPv4 address or name); optional with --peer")
    p.add_argument("-u", "--user", metavar="NAME",
                   help="user name to authenticate as (required unless --peer)")
    p.add_argument("--peer", metavar="NAME",
                   help="take server, user, password (chap-secrets) and options from the pppd profile "
                        "/etc/ppp/peers/NAME as pptpsetup writes it ($PPTPKIT_PPP_ETC for another "
                        "directory); flags given here override it")
    p.add_argument("--password-file", metavar="FILE",
                   help="read the password from the first line of FILE")
    p.add_argument("--port", type=int_range(1, 0xFFFF), default=PPTP_PORT, help="TCP port (default 1723)")

    mppe = p.add_argument_group("encryption (pppd's MPPE options)")
    mppe.add_argument("--require-mppe-128", action="store_true",
                      help="require 128-bit MPPE; anything else ends with exit status 10")
    mppe.add_argument("--require-mppe", action="store_true", help="require MPPE (40 or 128 bits)")
    mppe.add_argument("--no-mppe", action="store_true", help="never use MPPE (refuse it)")
    mppe.add_argument("--no-mppe-40", action="store_true", help="refuse 40-bit MPPE")
    mppe.add_argument("--no-mppe-128", action="store_true", help="refuse 128-bit MPPE")
    mppe.add_argument("--mppe-stateful", action="store_true",
                      help="allow stateful MPPE (default: stateless only, like pppd)")

    auth = p.add_argument_group("authentication (pppd's refuse-* options)")
    for name, _method, what in _REFUSE_FLAGS:
        auth.add_argument(f"--refuse-{name}", action="store_true",
                          help=f"do not authenticate with {what}")

    link = p.add_argument_group("link")
    link.add_argument("--mtu", type=int_range(576, 65535), metavar="N",
                      help="cap the interface MTU (default: as negotiated, less MPPE overhead)")
    link.add_argument("--mru", type=int_range(128, 65535), default=1500, metavar="N",
                      help="MRU to ask for (default 1500)")
    link.add_argument("--ipv6", action="store_true",
                      help="also negotiate IPv6 (IPV6CP, pppd's +ipv6): the interface gets the "
                           "link-local addresses from the negotiated interface identifiers")
    link.add_argument("--echo-interval", type=float_range(0, 3600), default=10.0, metavar="S",
                      help="seconds between LCP echo requests, 0 = off (default 10, pppd's "
                           "lcp-echo-interval)")
    link.add_argument("--echo-failure", type=int_range(1, 1000), default=3, metavar="N",
                      help="unanswered echo requests before the server is declared dead (default 3)")
    link.add_argument("--lcp-restart", type=float_range(0.1, 60), default=3.0, metavar="S",
                      help="LCP retransmission interval (default 3, pppd's lcp-restart)")
    link.add_argument("--gre-timeout", type=float_range(0.5, 600), metavar="S",
                      help="declare GRE blocked when no GRE packet arrived S seconds after the call "
                           "came up (default: 3 LCP retransmissions + 1 s)")
    link.add_argument("--timeout", type=float_range(0.5, 600), default=10.0, metavar="S",
                      help="seconds to wait for the control connection and the call (default 10)")
    link.add_argument("--ifname", default="pptp%d", metavar="NAME",
                      help="interface name; %%d picks the first free number (default pptp%%d)")

    net = p.add_argument_group("routes and DNS")
    net.add_argument("--route", type=_route, action="append", default=[], metavar="NET",
                     help="route NET (A.B.C.D/LEN) through the tunnel; repeatable")
    net.add_argument("--default-route", action="store_true",
                     help="send all traffic through the tunnel, as 0.0.0.0/1 + 128.0.0.0/1: the "
                          "original default route stays and wins again when the tunnel goes")
    net.add_argument("--no-host-route", action="store_true",
                     help="do not pin a host route to SERVER (routes covering SERVER are then refused)")
    net.add_argument("--dns", action="store_true",
                     help="write the DNS servers the server pushes to resolv.conf, restore it on exit")
    net.add_argument("--resolv-conf", default="/etc/resolv.conf", metavar="PATH",
                     help="the resolv.conf --dns writes (default /etc/resolv.conf)")

    gre = p.add_argument_group("PPTP transport")
    gre.add_argument("--local-address", type=ipv4_address, metavar="IP",
                     help="send TCP and GRE from this local address (pptp-linux's --localbind)")
    add_gre_options(gre, peer="the server")

    retry = p.add_argument_group("reconnecting")
    retry.add_argument("--persist", action="store_true",
                       help="reconnect after failures, waiting 1, 2, 4 ... --backoff-max s (reset "
                            "after a link that stayed up 30 s); not after a wrong password, MPPE "
                            "refused or a refused route")
    retry.add_argument("--max-retries", type=int_range(0, 1_000_000), metavar="N",
                       help="with --persist: give up after N reconnection attempts (default: never)")
    retry.add_argument("--backoff-max", type=float_range(1, 3600), default=DEFAULT_BACKOFF_CAP,
                       metavar="S", help=f"longest wait between attempts (default {DEFAULT_BACKOFF_CAP:g})")

    p.add_argument("--json", action="store_true",
                   help="print events (up, down, retry) as JSON lines on stdout")
    p.add_argument("--pppd", nargs=argparse.REMAINDER, metavar="PPPD_OPTION",
                   help="instead of the built-in PPP: run pppd on a pty with the remaining "
                        "arguments as its options, like 'pptp SERVER [pppd options]', sharing "
                        "the control connection with other such calls ($PPTPKIT_PPPD: the pppd "
                        "program); the exit status is pppd's.  -u is then not needed: pppd's own "
                        "options (user/name) say who we are")
    return p


def read_password(args: argparse.Namespace) -> str:
    """--password-file, else $PPTPKIT_PASSWORD, else a terminal prompt."""
    if args.password_file:
        try:
            with open(args.password_file, "rb") as f:
                data = f.read(MAX_PASSWORD_FILE + 1)
        except OSError as exc:
            raise ConnectUsageError(f"{args.password_file}: cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_PASSWORD_FILE:
            raise ConnectUsageError(f"{args.password_file} is too long for a password file")
        try:
            lines = data.decode().splitlines()
        except UnicodeDecodeError:
            raise ConnectUsageError(f"{args.password_file} is not UTF-8 text") from None
        if not lines or not lines[0]:
            raise ConnectUsageError(f"{args.password_file}: the first line (the password) is empty")
        return lines[0]
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        if not env:
            raise ConnectUsageError(f"${PASSWORD_ENV} is empty")
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            value = getpass.getpass(f"password for {args.user} at {args.server}: ")
        except (EOFError, KeyboardInterrupt):
            raise ConnectUsageError("no password given") from None
        if not value:
            raise ConnectUsageError("empty password")
        return value
    raise ConnectUsageError(f"no password: use --password-file FILE or ${PASSWORD_ENV} "
                            "(stdin is not a terminal, so there is no prompt)")


def _mppe_policy(args: argparse.Namespace) -> MppePolicy:
    if args.no_mppe and (args.require_mppe or args.require_mppe_128):
        raise ConnectUsageError("--no-mppe contradicts --require-mppe/--require-mppe-128")
    if args.require_mppe_128 and args.no_mppe_128:
        raise ConnectUsageError("--require-mppe-128 contradicts --no-mppe-128")
    words = [word for dest, word in MPPE_FLAG_WORDS if getattr(args, dest)]
    try:
        return mppe_policy(words)
    except ConfigError as exc:
        raise ConnectUsageError(str(exc)) from None


def _resolve(server: str) -> ipaddress.IPv4Address:
    with contextlib.suppress(ValueError):
        return ipaddress.IPv4Address(server)
    try:
        infos = socket.getaddrinfo(server, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectUsageError(f"cannot resolve {server!r}: {exc}") from None
    return ipaddress.IPv4Address(infos[0][4][0])


def _apply_peer(args: argparse.Namespace) -> PeerProfile | None:
    """--peer: read the profile; SERVER and --user default to its values."""
    if args.peer is None:
        return None
    from pptpkit.compat.peerprofile import read_peer_profile

    profile = read_peer_profile(args.peer, etc_dir=os.environ.get("PPTPKIT_PPP_ETC") or "/etc/ppp")
    for notice in profile.notices:
        log.info("%s", notice)
    if args.server is None:
        args.server = profile.server
    if args.user is None:
        args.user = profile.user
    return profile


def _profile_config(config: ConnectConfig, profile: PeerProfile, args: argparse.Namespace) -> ConnectConfig:
    """The profile's settings where the command line left the default (a flag always wins)."""
    defaults = _connect_defaults()
    changes: dict[str, Any] = {}

    def take(dest: str, field_name: str, value: object) -> None:
        if value is not None and getattr(args, dest) == defaults.get(dest):
            changes[field_name] = value

    if profile.mppe is not None and not any(getattr(args, d) for d, _ in MPPE_FLAG_WORDS):
        changes["mppe"] = profile.mppe
    if profile.refuse and not config.refuse:
        changes["refuse"] = profile.refuse
    take("mtu", "mtu", profile.mtu)
    take("mru", "mru", profile.mru)
    take("echo_interval", "echo_interval", profile.echo_interval)
    take("echo_failure", "echo_failure", profile.echo_failure)
    take("ifname", "ifname", profile.ifname)
    take("local_address", "local_address",
         None if profile.local_address is None else ipaddress.IPv4Address(profile.local_address))
    if profile.nobuffer:
        changes["nobuffer"] = True
    if profile.default_route:
        changes["default_route"] = True
    if profile.dns:
        changes["dns"] = True
    if profile.ipv6:
        changes["ipv6"] = True
    if profile.persist:
        changes["persist"] = True
        take("max_retries", "max_retries", profile.max_retries)
        if profile.holdoff is not None:
            changes["backoff_initial"] = max(0.1, profile.holdoff)
            changes["backoff_cap"] = max(config.backoff_cap, profile.holdoff, 0.1)
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError as exc:
        raise ConnectUsageError(f"{profile.path}: {exc}") from None


_PROFILE_DESTS: Final = ("mtu", "mru", "echo_interval", "echo_failure", "ifname", "local_address",
                          "max_retries")


def _connect_defaults() -> dict[str, Any]:
    sub = argparse.ArgumentParser().add_subparsers()
    connect = add_connect_parser(sub, argparse.ArgumentParser(add_help=False))
    return {dest: connect.get_default(dest) for dest in _PROFILE_DESTS}


def config_from_args(args: argparse.Namespace, password: str) -> ConnectConfig:
    refused = [m for name, m, _ in _REFUSE_FLAGS if getattr(args, f"refuse_{name.replace('-', '_')}")]
    refuse = auth_policy(auth_words("refuse", refused)).refuse
    if len(refuse) == len(_REFUSE_FLAGS):
        raise ConnectUsageError("every authentication method is refused")
    try:
        return ConnectConfig(
            server=_resolve(args.server), username=args.user, password=password, port=args.port,
            refuse=refuse, mppe=_mppe_policy(args), mtu=args.mtu, mru=args.mru,
            echo_interval=args.echo_interval, echo_failure=args.echo_failure,
            lcp_restart=args.lcp_restart, gre_timeout=args.gre_timeout, connect_timeout=args.timeout,
            routes=tuple(args.route), default_route=args.default_route,
            host_route=not args.no_host_route, dns=args.dns, resolv_conf=args.resolv_conf,
            persist=args.persist, max_retries=args.max_retries, backoff_cap=args.backoff_max,
            ifname=args.ifname, local_address=args.local_address, nobuffer=args.nobuffer,
            respect_peer_window=not args.ignore_peer_window, ipv6=args.ipv6,
        )
    except ConfigError as exc:
        raise ConnectUsageError(str(exc)) from None


def _printer(as_json: bool) -> Any:
    def on_status(status: dict[str, Any]) -> None:
        event = status["event"]
        # Under systemd (Type=notify) the unit is started once the tunnel is up.
        if event == "up":
            notify("READY=1", f"STATUS={describe_up(status)}")
        elif event == "retry":
            notify(f"STATUS=reconnecting in {status['delay']:g} s")
        if as_json:
            print(json.dumps(status), flush=True)
        elif event == "up":
            print(f"pptpkit connect: {describe_up(status)}", flush=True)
        if event == "down":
            print(f"pptpkit connect: {status['message']}", file=sys.stderr, flush=True)
        elif event == "retry":
            print(f"pptpkit connect: reconnecting in {status['delay']:g} s", file=sys.stderr, flush=True)

    return on_status


async def _run(config: ConnectConfig, as_json: bool, verbose: int = 0) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    connector = Connector(config, stop=stop, on_status=_printer(as_json), log_frames=verbose >= 2)
    return int(await connector.run())


def run_connect_command(args: argparse.Namespace) -> int:
    """``main`` for ``connect``: usage errors exit 2 with one line, the rest per the exit table."""
    if getattr(args, "pppd", None) is not None:
        from pptpkit.compat.pppd_launch import run_connect_pppd

        try:
            server = str(_resolve(args.server))
        except ConnectUsageError as exc:
            return fail("connect", ExitStatus.USAGE, str(exc))
        return run_connect_pppd(server, args.pppd, port=args.port, timeout=args.timeout)
    try:
        profile = _apply_peer(args)
        if args.server is None or args.user is None:
            raise ConnectUsageError("give SERVER and --user, or --peer NAME")
        explicit = args.password_file or os.environ.get(PASSWORD_ENV) is not None
        password = profile.password if profile is not None and not explicit else read_password(args)
        config = config_from_args(args, password)
        if profile is not None:
            config = _profile_config(config, profile, args)
    except ConfigError as exc:
        return fail("connect", ExitStatus.USAGE, str(exc))
    except ConnectUsageError as exc:
        return fail("connect", ExitStatus.USAGE, str(exc))
    try:
        return asyncio.run(_run(config, args.json, args.verbose))
    except PermissionError as exc:
        return not_permitted("connect", exc)
