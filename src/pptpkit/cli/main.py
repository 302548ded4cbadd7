"""The ``pptpkit`` command: builds the parser and hands each command to its own module.

One module per command (:mod:`.pty`, :mod:`.server`, :mod:`.connect`, :mod:`.ppp`, :mod:`.demo`,
:mod:`.bench`, :mod:`.ctl`, :mod:`.probe`); this one only knows their names.  Imports go one
way: main imports the command modules, they import :mod:`.argtypes` and :mod:`.common`, never
main or each other.  The command modules are imported when their command runs (``pptpkit ppp``
on a pptpd server should not pay for loading the server), except that building the parser needs
every ``add_*_parser``.

Exit statuses: one table for every command, :class:`pptpkit.errors.ExitStatus` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pptpkit import __version__
from pptpkit.cli.common import fail, not_permitted, setup_logging
from pptpkit.errors import ConfigError, ExitStatus, PptpkitError, is_not_permitted

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole ``pptpkit`` command line."""
    from pptpkit.cli.bench import add_bench_parser
    from pptpkit.cli.connect import add_connect_parser
    from pptpkit.cli.ctl import add_ctl_parser
    from pptpkit.cli.demo import add_demo_parser
    from pptpkit.cli.ppp import add_ppp_parser
    from pptpkit.cli.probe import add_probe_parser
    from pptpkit.cli.pty import add_pty_parser
    from pptpkit.cli.server import add_server_parser

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: protocol debugging; -vv: also one line per PPP frame")
    common.add_argument("-q", "--quiet", action="store_true", default=False,
                        help="warnings and errors only")
    common.add_argument("--log", metavar="WHERE", default=None,
                        help="where the log goes: stderr (default, with timestamps), syslog, journal, "
                             "or a file")

    parser = argparse.ArgumentParser(
        prog="pptpkit", description="PPTP client and server (RFC 2637) in Python.",
        epilog="exit status: pppd's numbers where pppd has the same case, one table for every "
               "command; see each command's --help",
    )
    parser.add_argument("--version", action="version", version=f"pptpkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pty_parser(sub, common)
    add_server_parser(sub, common)
    add_demo_parser(sub, common)
    add_connect_parser(sub, common)
    add_ppp_parser(sub, common)
    add_bench_parser(sub, common)
    add_ctl_parser(sub, common)
    add_probe_parser(sub, common)
    return parser


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    if args.command == "pty":
        from pptpkit.cli import pty

        return pty.main(args)
    if args.command == "server":
        from pptpkit.cli import server

        return server.main(args, list(sys.argv[1:] if argv is None else argv))
    if args.command == "connect":
        from pptpkit.cli.connect import run_connect_command

        return run_connect_command(args)
    if args.command == "bench":
        from pptpkit.cli.bench import run_bench_command

        return run_bench_command(args, argv)
    if args.command == "ctl":
        from pptpkit.cli.ctl import run_ctl_command

        return run_ctl_command(args)
    if args.command == "probe":
        from pptpkit.cli.probe import run_probe_command

        return run_probe_command(args)
    if args.command == "demo":
        from pptpkit.cli import demo

        return demo.main(args)
    raise AssertionError(f"no handler for {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ppp"]:
        # pppd's options (-pap, +ipv6 ...) are not argparse's: hand them over untouched.
        from pptpkit.cli.ppp import main as ppp_main

        return ppp_main(words[1:])
    if words[:1] == ["connect"] and "--pppd" in words:
        # pptp-linux style: the options after --pppd are pppd's, and pppd's own options say
        # who we are, so connect's -u/--user does not apply.
        from pptpkit.compat.pppd_launch import main as pppd_main

        return pppd_main(words[1:])
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.verbose, args.quiet, args.log)
    except ConfigError as exc:
        return fail(args.command, ExitStatus.USAGE, str(exc))
    try:
        return _run(args, argv)
    except KeyboardInterrupt:
        return ExitStatus.OK
    except (PptpkitError, OSError) as exc:
        # What the commands did not report themselves: still one line, still the table.
        if is_not_permitted(exc):
            return not_permitted(args.command, exc)
        return fail(args.command, ExitStatus.FATAL, str(exc))
