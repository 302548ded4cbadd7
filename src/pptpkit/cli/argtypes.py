"""Argument types and options shared by the command-line front ends.

Every command module imports its validators from here, never from another command: that is
what keeps ``cli/main.py`` (the parser and dispatch) and the command modules free of cycles.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from collections.abc import Callable
from typing import Any

from pptpkit.auth.secrets import RateLimit, parse_rate
from pptpkit.control import PPTP_PORT
from pptpkit.errors import ConfigError
from pptpkit.vpn.pool import parse_ip_list

__all__ = [
    "add_gre_options",
    "float_range",
    "int_range",
    "ip_list",
    "ipv4",
    "ipv4_address",
    "metrics_address",
    "parse_listen",
    "port",
    "positive_float",
    "rate_limit",
]


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


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    return int_range(1, 0xFFFF)(text)


def positive_float(text: str) -> float:
    """A finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def ipv4(text: str) -> str:
    """A dotted-quad IPv4 address, as its canonical text."""
    return str(ipv4_address(text))


def ip_list(text: str) -> tuple[str, ...]:
    """pptpd's address list syntax (``198.51.100.10-50,198.51.100.60``)."""
    try:
        return tuple(parse_ip_list(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_listen(text: str) -> tuple[str | None, int]:
    """``ADDR``, ``ADDR:PORT`` or ``:PORT`` (IPv4); ADDR ``0.0.0.0``/``*``/empty means all."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    host = host.strip()
    number = PPTP_PORT
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 0xFFFF:
            raise argparse.ArgumentTypeError(f"bad port {port_text!r} in {text!r} (1..65535)")
        number = int(port_text)
    if host in ("", "*", "0.0.0.0"):
        return None, number
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{host!r} is not an IPv4 address (in {text!r})") from None
    return host, number


def metrics_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` with an IPv4 address or a bracketed IPv6 one (``[::1]:9100``).  The address
    is required: metrics say how many users are on and from where they are refused, so serving
    them on every interface has to be asked for (``0.0.0.0:9100``, ``[::]:9100``)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r}: give ADDR:PORT, such as 127.0.0.1:9100 or [::1]:9100")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"bad port {port_text!r} in {text!r} (1..65535)")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv6Address(host[1:-1]) if bracketed else ipaddress.IPv4Address(host))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{host!r} is not an IPv4 address or a bracketed IPv6 one (in {text!r})") from None
    return str(address), int(port_text)


def rate_limit(text: str) -> RateLimit:
    """``DOWN[/UP]`` in kbit/s or with a suffix k/M/G (:func:`pptpkit.auth.secrets.parse_rate`)."""
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
