"""``pptpkit demo``: a whole VPN between two fresh network namespaces (:mod:`pptpkit.lab.demo`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pptpkit.cli.argtypes import int_range, positive_float
from pptpkit.cli.common import exit_help, not_permitted

__all__ = ["add_demo_parser", "main"]


def add_demo_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to ``sub`` (the subparsers of ``pptpkit``)."""
    demo: argparse.ArgumentParser = sub.add_parser(
        "demo", parents=[common], help="a whole VPN between two fresh network namespaces",
        description="Two network namespaces joined by a veth pair (TEST-NET addresses): 'pptpkit "
                    "server' (built-in PPP, MS-CHAPv2 + MPPE-128 required) in one, 'pptpkit connect' "
                    "in the other.  Prints what was negotiated, a ping and a TCP throughput figure "
                    "through the tunnel, then removes everything.  Needs root.",
        epilog=exit_help("demo", extra="  130  interrupted (Ctrl-C); everything was removed\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--pings", type=int_range(1, 100), default=5, metavar="N",
                      help="pings across the tunnel (default 5)")
    demo.add_argument("--seconds", type=positive_float, default=3.0, metavar="S",
                      help="seconds of TCP for the throughput figure (default 3)")
    return demo


def main(args: argparse.Namespace) -> int:
    """``pptpkit demo``."""
    if os.geteuid() != 0:
        # Checked here, before any namespace exists, so the line and status are every command's.
        return not_permitted("demo", "network namespaces, TUN and raw GRE sockets")
    from pptpkit.lab.demo import run_demo

    return run_demo(pings=args.pings, seconds=min(args.seconds, 60.0), verbose=args.verbose)
