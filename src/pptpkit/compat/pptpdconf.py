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
configured from the pppd options file named by ``option`` (see :mod:`pptpkit.compat.pppdopts`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from pptpkit.compat.pppdopts import PppdOptions, Where, parse_pppd_files
from pptpkit.compat.program import PppProgramConfig
from pptpkit.errors import ConfigError
from pptpkit.vpn.pool import AddressPool, parse_ip_list
from pptpkit.vpn.server import DEFAULT_BUILTIN_MRU
from pptpkit.vpn.settings import ServerChanges

__all__ = [
    "DEFAULT_CONNECTIONS",
    "DEFAULT_SPEED",
    "DEFAULT_STIMEOUT",
    "MAX_CONF_BYTES",
    "SUPPORTED",
    "UNSUPPORTED",
    "PptpdConf",
    "builtin_options",
    "parse_pptpd_conf",
    "read_pptpd_conf",
    "server_changes",
    "unreadable",
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
    "pidfile": "path",
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
    #: None when the file does not say (pptpd then uses :data:`DEFAULT_CONNECTIONS`).
    connections: int | None = None
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
    #: keyword -> the line it is on (errors about a keyword's value, found later, name it).
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)

    def where(self, keyword: str) -> Where:
        """The ``path:line`` of ``keyword`` (line 0 when the file does not have it)."""
        return Where(self.path, self.lines.get(keyword, 0))

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
        limit = self.connections if self.connections is not None else DEFAULT_CONNECTIONS
        return AddressPool(list(self.localip[:limit]), list(self.remoteip[:limit]))

    def program_config(self, *, program_args: tuple[str, ...] = (),
                       stderr: int | str | None = 2) -> PppProgramConfig:
        """The bridge-mode settings: pptpd's argv for ``ppp`` (see
        :func:`pptpkit.compat.program.ppp_program_argv`)."""
        if self.ppp is None:
            raise ConfigError("no 'ppp' keyword: not a bridge-mode configuration", path=self.path)
        return PppProgramConfig(program=self.ppp, program_args=program_args, option_file=self.option,
                                pool=self.address_pool(), speed=str(self.speed),
                                noipparam=self.noipparam, delegate=self.delegate, stderr=stderr)

    def check_builtin(self) -> AddressPool:
        """The built-in mode needs an address pool (our PPP stack assigns the addresses)."""
        if self.delegate:
            raise self.where("delegate").error(
                "delegate: the built-in PPP stack has no other source of addresses; give localip and "
                "remoteip")
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
    conf = PptpdConf(path=path, warnings=tuple(warnings),
                     lines={keyword: number for keyword, (number, _) in seen.items()})
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
        if not (value.isascii() and value.isdigit()) or not bounds[0] <= int(value) <= bounds[1]:
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


def unreadable(path: str) -> str | None:
    """Why ``path`` cannot be read (None when it can): a PPP program's options file is checked
    when the server starts, not by the first caller's pppd."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


# -- pptpkit server --config ----------------------------------------------------------------------


def builtin_options(conf: PptpdConf, *, etc_dir: str = "/etc/ppp") -> PppdOptions:
    """The pppd options the built-in stack runs with: what pptpd's pppd would read, i.e.
    ``etc_dir/options`` (when it exists) and then the ``option`` file.  An ``option`` file
    that cannot be read is reported at the pptpd.conf line naming it."""
    named = [(conf.option, conf.where("option"))] if conf.option else []
    return parse_pppd_files(named, etc_dir=etc_dir, default_files=[os.path.join(etc_dir, "options")])


#: PppdOptions fields the built-in server cannot honour, with why; a non-default value is an
#: error naming where the option was given.
_BUILTIN_UNSUPPORTED: Final = {
    "defaultroute": ("defaultroute", "a server does not route through its clients"),
    "usepeerdns": ("usepeerdns", "a server pushes DNS (ms-dns), it does not take any"),
    "ifname": ("ifname", "interfaces are named by --tun-name"),
    "user": ("user", "the server does not authenticate itself to its clients"),
    "password": ("password", "the server does not authenticate itself to its clients"),
    "remotename": ("remotename", "every client is checked against the secrets' server column 'name'"),
    "accm": ("asyncmap", "PPTP carries no async map"),
    "pfc": ("nopcomp", "protocol compression is always negotiated"),
    "acfc": ("noaccomp", "address/control compression is always negotiated"),
    "local_address": ("LOCAL:REMOTE", "addresses come from localip/remoteip"),
    "remote_address": ("LOCAL:REMOTE", "addresses come from localip/remoteip"),
    "speed": ("speed", "only a PPP program on a pty has a line speed"),
    "ipparam": ("ipparam", "it is per call: pptpd passes the client's address"),
    "remotenumber": ("remotenumber", "it is per call: pptpd passes the client's address"),
    "original_ip": ("pptpd-original-ip", "it is per call: pptpd passes the client's address"),
    "pty": ("pty", "the server answers calls, it does not dial"),
    "persist": ("persist", "the server answers calls, it does not redial"),
    "maxfail": ("maxfail", "the server answers calls, it does not redial"),
    "holdoff": ("holdoff", "the server answers calls, it does not redial"),
    "linkname": ("linkname", "sessions are named by their session ID"),
    "unit": ("unit", "interfaces are named by --tun-name"),
    "replacedefaultroute": ("replacedefaultroute", "a server does not route through its clients"),
}

#: PppdOptions fields the built-in server takes (see :func:`_builtin_changes`).  Every field is
#: in exactly one of these, :data:`_BUILTIN_UNSUPPORTED` and :data:`_BOOKKEEPING` (a unit test
#: checks it), so an option added to the parser cannot be dropped here unnoticed.
_BUILTIN_TAKEN: Final = frozenset({
    "name", "auth_policy", "strip_domain", "mppe", "ccp", "mru", "mtu", "echo_interval",
    "echo_failure", "idle", "ms_dns", "ms_wins", "ipv6", "proxyarp", "radius", "radius_config",
    "debug", "dump", "logfile", "logfd", "detach", "logwtmp",
    "ip_up_script", "ip_down_script", "ipv6_up_script", "ipv6_down_script",
})
_BOOKKEEPING: Final = frozenset({"files", "notices", "locations"})
#: The built-in server's own bounds for pppd's mtu and mru (those of --mtu).
_BUILTIN_MTU_RANGE: Final = (576, 1500)


def server_changes(conf: PptpdConf, *, builtin: bool, etc_dir: str | None = None) -> ServerChanges:
    """``pptpkit server --config FILE``: what pptpd.conf (and, in built-in mode, the pppd
    options it names) says, as one layer of :class:`~pptpkit.vpn.settings.ServerSettings`.

    ``builtin``: the mode the server runs in (no ``ppp`` keyword and no ``--ppp-program``).
    PPP-program mode takes the program, ``option``, the pool, speed, noipparam, delegate.
    Built-in mode takes what pptpd's pppd would read (see :func:`builtin_options`).  listen,
    connections, stimeout and debug apply to both.  Options the mode cannot honour raise
    :class:`ConfigError` with their ``path:line``.  ``etc_dir``: pppd's directory (default
    ``$PPTPKIT_PPP_ETC`` or /etc/ppp).
    """
    etc_dir = etc_dir or os.environ.get("PPTPKIT_PPP_ETC") or "/etc/ppp"
    changes = ServerChanges(stimeout=conf.stimeout)
    if conf.pidfile is not None:
        changes["pidfile"] = conf.pidfile
    if conf.connections is not None:
        changes["connections"] = conf.connections
    if conf.listen is not None:
        changes["listen"] = conf.listen
    if conf.debug:
        changes["verbose"] = 1
    if not builtin:
        if conf.ppp is not None:
            conf.program_config()  # validates the pool
            changes["ppp_program"] = conf.ppp
        why = unreadable(conf.option) if conf.option is not None else None
        if why is not None:
            # pppd would fail on every call; say so once, where the file is named.
            raise conf.where("option").error(f"option file {conf.option}: cannot read: {why}")
        changes.update(ServerChanges(option_file=conf.option, speed=conf.speed,
                                     noipparam=conf.noipparam, delegate=conf.delegate))
        if conf.localip is not None:
            changes["localip"] = conf.localip
        if conf.remoteip is not None:
            changes["remoteip"] = conf.remoteip
        return changes
    conf.check_builtin()
    # What pptpd passes pppd for its ip-up scripts: the hook scripts get the same.
    changes["speed"] = conf.speed
    if conf.noipparam:
        changes["noipparam"] = True
    opts = builtin_options(conf, etc_dir=etc_dir)
    changes.update(_builtin_changes(conf, opts))
    # pptpd's pppd reads chap-secrets next to its options.
    changes["secrets"] = os.path.join(etc_dir, "chap-secrets")
    if opts.radius:
        changes.update(_radius_changes(opts))
    return changes


def _radius_changes(opts: PppdOptions) -> ServerChanges:
    """``plugin radius.so``: the servers, secrets and timeouts from its radiusclient.conf."""
    from pptpkit.compat.radiusclient import DEFAULT_RADIUSCLIENT_CONF, read_radiusclient_conf

    path = opts.radius_config or DEFAULT_RADIUSCLIENT_CONF
    try:
        rc = read_radiusclient_conf(path)
    except ConfigError as exc:
        if opts.radius_config is None and not os.path.exists(path):
            raise _at(opts, "plugin", f"plugin radius.so: {exc.reason}") from None
        raise
    for notice in rc.notices:
        log.info("%s", notice)
    if rc.servers_file is None:
        raise ConfigError(f"{rc.path}: no 'servers' file: the shared secrets are read from it")
    changes = ServerChanges(radius_servers=rc.authservers, radius_acct_servers=rc.acctservers,
                            radius_servers_file=rc.servers_file)
    if rc.timeout is not None:
        changes["radius_timeout"] = rc.timeout
    if rc.retries is not None:
        changes["radius_retries"] = rc.retries
    if rc.nas_identifier is not None:
        changes["nas_identifier"] = rc.nas_identifier
    if rc.nas_ip is not None:
        changes["nas_ip_address"] = rc.nas_ip
    return changes


def _at(opts: PppdOptions, option: str, message: str) -> ConfigError:
    """``message`` at the ``path:line`` of ``option`` in the pppd options (``<options>`` when the
    option was not given in a file, e.g. a setting that is wrong by default)."""
    path, _, line = opts.where(option).rpartition(":")
    if path and line.isdigit():
        return ConfigError(message, path=path, line=int(line))
    return ConfigError(message)


def _builtin_changes(conf: PptpdConf, opts: PppdOptions) -> ServerChanges:
    defaults = PppdOptions()
    if opts.detach == "up":
        raise _at(opts, "updetach", "updetach: not supported by the built-in server (it has no link "
                                    "to wait for)")
    for name, (option, why) in _BUILTIN_UNSUPPORTED.items():
        if getattr(opts, name) != getattr(defaults, name):
            raise _at(opts, option, f"{option}: not supported by the built-in server ({why})")
    if opts.logfd not in (None, 2):
        raise _at(opts, "logfd", f"logfd {opts.logfd}: not supported by the built-in server (its log "
                                 "goes to --log and logfile)")
    if not opts.ccp and opts.mppe.allowed:
        raise _at(opts, "noccp", "noccp without nomppe")
    mppe = opts.mppe
    if mppe.required and not mppe.bits_128:
        raise _at(opts, "require-mppe-40", "require-mppe-40 alone: the built-in server requires 128 "
                                           "bits or either")
    if not opts.auth_policy.authenticates_peer and mppe.required:
        raise ConfigError("noauth with required MPPE: MPPE keys come from MS-CHAP", path=conf.path)
    changes = ServerChanges(
        localip=conf.localip or (), remoteip=conf.remoteip or (),
        dns=opts.ms_dns, wins=opts.ms_wins, mppe=mppe,
        # The policy as pppd read it: a bare 'auth' offers every method we know.
        auth=opts.auth_policy,
        echo_interval=opts.echo_interval,
        # pppd's lcp-echo-failure 0 means "never give up"; the closest is the largest count.
        echo_failure=opts.echo_failure or 1000,
    )
    if opts.name:
        changes["name"] = opts.name
    changes.update(_mtu_changes(opts))
    if opts.idle:
        changes["idle"] = opts.idle
    if opts.proxyarp:
        changes["proxyarp"] = True
    if opts.ipv6:
        changes["ipv6"] = True
    if opts.strip_domain:
        changes["mschap_strip_domain"] = True
    if opts.debug:
        changes["verbose"] = 1
    # pppd's ip-up-script & co.: the built-in server's hook scripts (pptpkit.ops.hooks).
    for name in ("ip_up", "ip_down", "ipv6_up", "ipv6_down"):
        script = getattr(opts, f"{name}_script")
        if script is not None:
            changes[name] = script  # type: ignore[literal-required]
    if opts.logfile is not None:
        changes["logfile"] = _check_logfile(opts)
    for notice in opts.notices:
        log.warning("%s", notice)
    if opts.dump:
        # pppd prints the option values when it reads them; so do we, at the level it uses.
        for line in opts.dump_lines():
            log.info("%s", line)
    return changes


def _mtu_changes(opts: PppdOptions) -> ServerChanges:
    """pppd's ``mtu`` caps what we send (the interface MTU), its ``mru`` is what we ask the peer
    to send (LCP's MRU).  Settings: ``mtu`` and ``mru`` (None: ``mtu``).  With ``mru`` alone
    both are that value, as before ``mru`` had a setting of its own: our link MTU never exceeds
    our own MRU (:meth:`pptpkit.ppp.session.PppSession` takes the smaller MRU), so capping the
    interface there changes nothing.  With ``mtu`` alone the MRU we ask for stays the default."""
    low, high = _BUILTIN_MTU_RANGE
    for option in ("mtu", "mru"):
        value = getattr(opts, option)
        if value is not None and not low <= value <= high:
            raise _at(opts, option, f"{option} {value}: the built-in server takes {low}..{high}")
    changes = ServerChanges()
    if opts.mtu is not None:
        changes["mtu"] = opts.mtu
        changes["mru"] = opts.mru if opts.mru is not None else DEFAULT_BUILTIN_MRU
    elif opts.mru is not None:
        changes["mtu"] = opts.mru
        changes["mru"] = opts.mru
    return changes


def _check_logfile(opts: PppdOptions) -> str:
    """pppd opens its logfile while it reads the options; so do we, to report a file we cannot
    write at the line that names it (the server opens it again when it starts logging)."""
    assert opts.logfile is not None
    try:
        with open(opts.logfile, "a"):
            pass
    except OSError as exc:
        raise _at(opts, "logfile", f"logfile {opts.logfile}: {exc.strerror or exc}") from None
    return opts.logfile
