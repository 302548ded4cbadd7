"""Argument types and options shared by the command-line front ends."""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable
from typing import Any


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type accepting an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    # argparse names the type in its error messages.
    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float) -> Callable[[str], float]:
    """An argparse type accepting a finite number in ``low..high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in {low:g}..{high:g}")
        return value

    parse.__name__ = "number"
    return parse


def ipv4_address(text: str) -> ipaddress.IPv4Address:
    """An argparse type accepting a dotted-quad IPv4 address."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


ipv4_address.__name__ = "IPv4 address"


def add_gre_options(parser: Any, *, peer: str) -> None:
    """``--nobuffer`` and ``--ignore-peer-window`` on ``parser`` (a parser or an argument group);
    ``peer`` names the other end in the help ("the server", "each client")."""
    parser.add_argument("--nobuffer", action="store_true",
                        help="deliver GRE packets at once, never hold them for reordering")
    parser.add_argument("--ignore-peer-window", action="store_true",
                        help=f"send GRE beyond the window {peer} advertises, as pptp-linux, pptpd "
                             "and the Linux kernel do (faster one-way bulk towards peers that ack "
                             "slowly)")
