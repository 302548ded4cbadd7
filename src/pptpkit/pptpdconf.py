"""pptpd.conf, read unchanged.

pptpd's format: one ``keyword [value]`` a line, the value being the rest of the line; ``#``
starts a comment (at the start of a line or after white space); keywords are case-insensitive.

Every keyword pptpd knows is either honoured (listed in :data:`SUPPORTED`) or, when we cannot
honour it, accepted with a *warning* naming ``file:line`` (:data:`UNSUPPORTED`; returned in
:attr:`PptpdConf.warnings` and logged) - a pptpd.conf must keep loading, and none of those
keywords weakens security when it is missing.  A keyword pptpd does not know either, a missing
or malformed value, or a keyword given twice with different values, is a :class:`ConfigError`
with ``path:line``.

The ``ppp`` keyword chooses the mode: with it, every call is handed to that program on a pty
(pptpd's own design: the *bridge* mode); without it, the built-in PPP stack runs the calls,
configured from the pppd options file named by ``option`` (see :mod:`pptpkit.pppdopts`).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace
from typing import Final

from .errors import ConfigError
from .server import AddressPool, PppProgramConfig, parse_ip_list

__all__ = [
    "DEFAULT_CONNECTIONS",
    "DEFAULT_SPEED",
    "DEFAULT_STIMEOUT",
    "MAX_CONF_BYTES",
    "SUPPORTED",
    "UNSUPPORTED",
    "PptpdConf",
    "parse_pptpd_conf",
    "read_pptpd_conf",
]

log = logging.getLogger(__name__)

MAX_CONF_BYTES: Final = 256 * 1024
MAX_LINE: Final = 4096
#: pptpd's defaults.
DEFAULT_CONNECTIONS: Final = 100
DEFAULT_SPEED: Final = 115200
DEFAULT_STIMEOUT: Final = 10.0

#: Keywords we honour (value kind: "flag", "int", "path", "iplist", "addr").
SUPPORTED: Final[dict[str, str]] = {
    "option": "path",
    "ppp": "path",
    "localip": "iplist",
    "remoteip": "iplist",
    "listen": "addr",
    "connections": "int",
    "speed": "int",
    "stimeout": "int",
    "noipparam": "flag",
    "delegate": "flag",
    "debug": "flag",
}

#: pptpd keywords we accept with a warning: what pptpd would do, which we do not.
UNSUPPORTED: Final[dict[str, str]] = {
    "logwtmp": "no wtmp records are written for calls (sessions are logged instead)",
    "bcrelay": "broadcasts are not relayed between interfaces",
    "pidfile": "no pid file is written (run under a service manager instead)",
    "vrf": "the server does not bind to a VRF",
}


@dataclass(frozen=True, kw_only=True)
class PptpdConf:
    """A parsed pptpd.conf.  ``localip``/``remoteip`` are the expanded address lists.
    ``warnings``: one ``path:line: keyword: ...`` message per unsupported keyword."""

    path: str = "<pptpd.conf>"
    option: str | None = None
    ppp: str | None = None
    localip: tuple[str, ...] | None = None
    remoteip: tuple[str, ...] | None = None
    listen: str | None = None
    connections: int = DEFAULT_CONNECTIONS
    speed: int = DEFAULT_SPEED
    stimeout: float = DEFAULT_STIMEOUT
    noipparam: bool = False
    delegate: bool = False
    debug: bool = False
    logwtmp: bool = False
    bcrelay: str | None = None
    pidfile: str | None = None
    vrf: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def bridge_mode(self) -> bool:
        """True when ``ppp`` names a program to hand every call to."""
        return self.ppp is not None

    def address_pool(self) -> AddressPool | None:
        """The pool from localip/remoteip; None with ``delegate`` or when neither is given.
        As in pptpd, ``connections`` also caps the pool."""
        if self.delegate or (self.localip is None and self.remoteip is None):
            return None
        if self.localip is None or self.remoteip is None:
            missing = "localip" if self.localip is None else "remoteip"
            raise ConfigError(f"{missing} is missing (give both localip and remoteip, or delegate)",
                              path=self.path)
        limit = self.connections
        return AddressPool(list(self.localip[:limit]), list(self.remoteip[:limit]))

    def program_config(self, *, program_args: tuple[str, ...] = (),
                       stderr: int | str | None = 2) -> PppProgramConfig:
        """The bridge-mode settings: pptpd's argv for ``ppp`` (see
        :func:`pptpkit.server.ppp_program_argv`)."""
        if self.ppp is None:
            raise ConfigError("no 'ppp' keyword: not a bridge-mode configuration", path=self.path)
        return PppProgramConfig(program=self.ppp, program_args=program_args, option_file=self.option,
                                pool=self.address_pool(), speed=str(self.speed),
                                noipparam=self.noipparam, delegate=self.delegate, stderr=stderr)

    def check_builtin(self) -> AddressPool:
        """The built-in mode needs an address pool (our PPP stack assigns the addresses)."""
        if self.delegate:
            raise ConfigError("delegate: the built-in PPP stack has no other source of addresses; "
                              "give localip and remoteip", path=self.path)
        pool = self.address_pool()
        if pool is None:
            raise ConfigError("the built-in PPP stack needs localip and remoteip", path=self.path)
        return pool


def _comment_free(line: str) -> str:
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_pptpd_conf(text: str, path: str = "<pptpd.conf>") -> PptpdConf:
    """Parse pptpd.conf text; warnings are logged and returned in the result."""
    values: dict[str, object] = {}
    seen: dict[str, tuple[int, str]] = {}
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if len(raw) > MAX_LINE:
            raise ConfigError(f"line longer than {MAX_LINE} characters", path=path, line=number)
        line = _comment_free(raw).strip()
        if not line:
            continue
        parts = line.split(None, 1)
        keyword = parts[0].lower()
        value = parts[1].strip() if len(parts) > 1 else ""
        if keyword in seen and seen[keyword][1] != value:
            raise ConfigError(f"{keyword} given twice (first on line {seen[keyword][0]})",
                              path=path, line=number)
        seen.setdefault(keyword, (number, value))
        if keyword in UNSUPPORTED:
            message = f"{path}:{number}: {keyword}: not supported, {UNSUPPORTED[keyword]}"
            warnings.append(message)
            log.warning("%s", message)
            values[keyword] = True if keyword == "logwtmp" else (value or None)
            continue
        kind = SUPPORTED.get(keyword)
        if kind is None:
            raise ConfigError(f"unknown keyword {parts[0]!r}", path=path, line=number)
        values[keyword] = _value(keyword, kind, value, path, number)
    conf = PptpdConf(path=path, warnings=tuple(warnings))
    return replace(conf, **values)  # type: ignore[arg-type]


def _value(keyword: str, kind: str, value: str, path: str, line: int) -> object:
    if kind == "flag":
        if value:
            raise ConfigError(f"{keyword} takes no value (got {value!r})", path=path, line=line)
        return True
    if not value:
        raise ConfigError(f"{keyword} needs a value", path=path, line=line)
    if kind == "path":
        if any(ch.isspace() for ch in value):
            raise ConfigError(f"{keyword}: {value!r} has white space in it", path=path, line=line)
        return value
    if kind == "int":
        bounds = {"connections": (1, 65535), "speed": (1, 0xFFFFFFFF), "stimeout": (1, 3600)}[keyword]
        if not value.isdigit() or not bounds[0] <= int(value) <= bounds[1]:
            raise ConfigError(f"{keyword}: {value!r} is not a number in {bounds[0]}..{bounds[1]}",
                              path=path, line=line)
        return float(value) if keyword == "stimeout" else int(value)
    if kind == "addr":
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ConfigError(f"{keyword}: {value!r} is not an IPv4 address", path=path, line=line) from None
    try:
        return tuple(parse_ip_list(value.replace(" ", "")))
    except ConfigError as exc:
        raise ConfigError(f"{keyword}: {exc.reason}", path=path, line=line) from None


def read_pptpd_conf(path: str) -> PptpdConf:
    """Read and parse a pptpd.conf file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONF_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if len(data) > MAX_CONF_BYTES:
        raise ConfigError(f"larger than {MAX_CONF_BYTES} bytes", path=path)
    return parse_pptpd_conf(data.decode("utf-8", "surrogateescape"), path)
