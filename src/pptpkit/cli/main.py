"""The ``pptpkit`` command: builds the parser and hands each command to its own module.

One module per command (:mod:`.pty`, :mod:`.server`, :mod:`.connect`, :mod:`.ppp`, :mod:`.demo`,
:mod:`.bench`, :mod:`.ctl`, :mod:`.probe`); this one only knows their names.  Imports go one
way: main imports the command modules, they import :mod:`.argtypes` and :mod:`.common`, never
main or each other.  Only the command being run is imported, for its parser and its run
(``pptpkit ppp`` on a pptpd server, or ``pptpkit ctl`` in a monitoring loop, should not pay for
loading the server); the top-level ``--help`` imports them all, for their summaries.

Exit statuses: one table for every command, :class:`pptpkit.errors.ExitStatus` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence
from typing import Final

from pptpkit import __version__
from pptpkit.cli.common import fail, not_permitted, setup_logging
from pptpkit.errors import ConfigError, ExitStatus, PptpkitError, is_not_permitted

__all__ = ["build_parser", "main"]


#: Every command, in the order of ``--help``: its module and the function adding its parser.
_COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "pty": ("pptpkit.cli.pty", "add_pty_parser"),
    "server": ("pptpkit.cli.server", "add_server_parser"),
    "demo": ("pptpkit.cli.demo", "add_demo_parser"),
    "connect": ("pptpkit.cli.connect", "add_connect_parser"),
    "ppp": ("pptpkit.cli.ppp", "add_ppp_parser"),
    "bench": ("pptpkit.cli.bench", "add_bench_parser"),
    "ctl": ("pptpkit.cli.ctl", "add_ctl_parser"),
    "probe": ("pptpkit.cli.probe", "add_probe_parser"),
}


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``pptpkit`` command line.  ``load``: the commands whose own parser is built (None:
    all).  The others only take their place among the choices: a command module imports what
    its command runs on (``server`` the whole server), and ``pptpkit ctl`` or ``--version``
    should not wait for that."""
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
    for name, (module, function) in _COMMANDS.items():
        if load is None or name in load:
            getattr(importlib.import_module(module), function)(sub, common)
        else:
            sub.add_parser(name, add_help=False)
    return parser


def _commands_to_load(words: Sequence[str]) -> set[str] | None:
    """What :func:`build_parser` must build for ``words``: the command they name (the top level
    has only ``--help`` and ``--version`` of its own), nothing for ``--version``, else all (the
    top-level help lists every command with its summary)."""
    first = words[0] if words else None
    if first in _COMMANDS:
        return {first}
    if first == "--version":
        return set()
    return None


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
    args = build_parser(_commands_to_load(words)).parse_args(words)
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
