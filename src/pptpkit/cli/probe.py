"""``pptpkit probe HOST``: the command line of :mod:`pptpkit.vpn.probe`.

The report goes to stdout (a table of steps, then the verdicts; or one JSON object with
``--json``); the main failure is also the usual one line ``pptpkit probe: message`` on stderr,
and the exit status is its status in the project's table.  The password is read the way
``pptpkit connect`` reads it (never from the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
from typing import Any

from pptpkit.cli.argtypes import float_range
from pptpkit.cli.common import exit_help, fail
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ConfigError, ExitStatus
from pptpkit.ppp.session_config import MppePolicy

__all__ = ["add_probe_parser", "format_report", "run_probe_command"]

_DESCRIPTION = """\
Why does my VPN not connect?  Tries each layer in turn and says which one fails, with the
usual fix: TCP to the control port, the server's Start-Control-Connection-Reply, a call, GRE
in each direction, the authentication methods the server asks for, and with --user also the
authentication itself, MPPE and big packets through the tunnel (LCP echoes of growing size).
Changes nothing on this host (no interface, no route).  The GRE steps need root
(CAP_NET_RAW, for the raw GRE socket)."""


def add_probe_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "probe", parents=[common], allow_abbrev=False, help="diagnose a PPTP server: TCP, GRE, "
        "authentication, MPPE, MTU", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=exit_help("probe"))
    p.add_argument("server", metavar="HOST", help="the server's IPv4 address or name")
    p.add_argument("--port", type=int, default=PPTP_PORT, help="TCP port (default 1723)")
    p.add_argument("-u", "--user", metavar="NAME",
                   help="also authenticate as NAME (password as for connect: --password-file, "
                        "$PPTPKIT_PASSWORD or a prompt)")
    p.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    mppe = p.add_mutually_exclusive_group()
    mppe.add_argument("--require-mppe", action="store_true",
                      help="a link without MPPE is a failure (exit 10), as for a client that requires it")
    mppe.add_argument("--no-mppe", action="store_true",
                      help="refuse MPPE: does the server work without encryption?")
    p.add_argument("--timeout", type=float_range(0.1, 600), default=10.0, metavar="S",
                   help="seconds each step may take (default 10)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def _mark(ok: bool | None) -> str:
    return "ok" if ok else "FAIL" if ok is False else "-"


def format_report(report: dict[str, Any]) -> str:
    """The report as lines for a terminal."""
    lines = [f"pptpkit probe {report['server']}:{report['port']}"]
    for step in report["steps"]:
        ms = "" if step["ms"] is None else f"{step['ms']:.1f} ms"
        lines.append(f"  {step['name']:<8} {_mark(step['ok']):<5} {ms:>10}  {step['detail']}")
    info = report["server_info"]
    if info is not None:
        lines.append(f"  server: host name {info['host_name'] or '?'}, vendor {info['vendor'] or '?'}, "
                     f"firmware {info['firmware_revision']:#x}, protocol {info['protocol_version']}, "
                     f"framing {'/'.join(info['framing_capabilities'])}, bearer "
                     f"{'/'.join(info['bearer_capabilities'])}, max channels {info['max_channels']}")
    for verdict in report["verdicts"]:
        head = {"fail": f"PROBLEM (status {verdict['status']})", "warn": "note", "ok": "verdict"}
        lines.append(f"{head[verdict['severity']]}: {verdict['problem']}")
        if verdict["fix"]:
            lines.append(f"  fix: {verdict['fix']}")
    return "\n".join(lines)


def _resolve(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
    except OSError as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None


def run_probe_command(args: argparse.Namespace) -> int:
    from pptpkit.cli.connect import ConnectUsageError, read_password
    from pptpkit.vpn.probe import ProbeConfig, run_probe

    try:
        password = read_password(args) if args.user is not None else None
        if args.user is None and args.password_file:
            raise ConnectUsageError("--password-file goes with --user")
        mppe = (MppePolicy.nomppe() if args.no_mppe else
                MppePolicy(bits_40=True, bits_128=True, required=args.require_mppe))
        config = ProbeConfig(server=_resolve(args.server), port=args.port, username=args.user,
                             password=password, mppe=mppe, timeout=args.timeout)
    except (ConfigError, ConnectUsageError) as exc:
        return fail("probe", ExitStatus.USAGE, str(exc))
    if not args.verbose:
        # The report says what the library logs at INFO (connection up, call cleared ...).
        logging.getLogger().setLevel(logging.WARNING)
    report = asyncio.run(run_probe(config)).as_dict()
    print(json.dumps(report) if args.json else format_report(report), flush=True)
    status = ExitStatus(report["status"])
    if status is not ExitStatus.OK:
        problem = next(v["problem"] for v in report["verdicts"] if v["severity"] == "fail")
        return fail("probe", status, problem)
    return int(status)
