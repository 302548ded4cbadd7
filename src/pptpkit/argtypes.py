"""Argument types shared by the command-line front ends: bounded numbers with clear messages."""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable


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
