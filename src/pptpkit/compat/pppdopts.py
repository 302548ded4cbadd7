"""pppd options (files such as ``options.pptpd`` and pppd's command line) -> our PPP config.

One parser serves three callers: ``pptpkit server`` in built-in mode (the ``option`` file named
by pptpd.conf), ``pptpkit ppp`` (the argv pptpctrl or a pptp-linux user gives pppd, including
``file OPTFILE`` and ``call NAME``) and tests.  Words are split with pppd's own rules (quotes,
backslash escapes, ``#`` comments; see :mod:`pptpkit.auth.secrets`).

The rule that matters most: **an option we cannot honour is a** :class:`ConfigError` naming
``path:line`` (or the argv position), never dropped.  A silently ignored ``require-mppe-128`` or
``require-mschap-v2`` would turn a secure configuration into an insecure one.  Options that are
accepted without doing anything are listed in :data:`NOOP_OPTIONS` with the reason why doing
nothing *is* their meaning for a user-space PPP stack on a pty.

Defaults are pppd's where they differ from :class:`~pptpkit.ppp.session_config.SessionConfig`'s:
no LCP echo unless ``lcp-echo-interval`` is given (pppd's default is 0), and, as in pppd, the peer
is not asked to authenticate unless ``auth`` or a ``require-*`` option says so.  One difference is
deliberate and documented: pppd also demands authentication when the host has a default route
and ``noauth`` is absent; we never look at routes, so a server configuration must say ``auth`` or
``require-X`` (every pptpd options file does).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Address
from typing import Final

from pptpkit.auth.base import MAX_NAME_LEN, MAX_SECRET_LEN, AuthenticatorConfig, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import SecretsProvider, split_words
from pptpkit.errors import ConfigError
from pptpkit.ppp.session_config import MppePolicy, SessionConfig, SessionRole

__all__ = [
    "COMMAND_LINE",
    "MAX_FILE_BYTES",
    "MAX_INCLUDE_DEPTH",
    "MAX_WORDS",
    "NOOP_OPTIONS",
    "PppdOptions",
    "Where",
    "parse_pppd_argv",
    "parse_pppd_file",
    "parse_pppd_files",
    "parse_pppd_text",
]

#: Name used as the "path" of errors in a command line (the line is the argv position, 1-based).
COMMAND_LINE: Final = "<command line>"
#: Caps: an options file is small; nesting (``file`` inside ``file``) is bounded so a file that
#: includes itself is an error instead of a recursion; and the total number of words is bounded.
MAX_FILE_BYTES: Final = 256 * 1024
MAX_INCLUDE_DEPTH: Final = 8
MAX_WORDS: Final = 4096
#: pppd keeps two DNS and two WINS servers for ms-dns / ms-wins.
MAX_NAME_SERVERS: Final = 2

#: Options accepted without any effect, with the reason that is exactly their meaning here.
NOOP_OPTIONS: Final[dict[str, str]] = {
    "lock": "creates a UUCP lock for a serial device opened by name; we only use the fd we were "
            "given (a pty or socketpair nobody else can dial), so there is nothing to lock",
    "nolock": "see lock: no device is opened by name",
    "local": "ignore modem control lines; a pty or socketpair has none",
    "modem": "use modem control lines (carrier detect, DTR hang-up); a pty or socketpair has "
             "none, so there is nothing to wait for or drop (Debian's /etc/ppp/options says it, "
             "pptpctrl's 'local' overrides it)",
    "crtscts": "hardware flow control of a serial line; a pty has no RTS/CTS lines",
    "nocrtscts": "see crtscts",
    "-crtscts": "see crtscts",
    "nobsdcomp": "refuse BSD-Compress in CCP; we never offer or accept it",
    "nodeflate": "refuse Deflate in CCP; we never offer or accept it",
    "nopredictor1": "refuse Predictor-1 in CCP; we never offer or accept it",
    "novj": "refuse Van Jacobson header compression in IPCP; we never negotiate it",
    "novjccomp": "refuse VJ connection-ID compression; we never negotiate VJ at all",
    "noipx": "disable IPX; we have no IPX support to disable",
    "nodefaultroute": "do not add a default route; we never add one unless defaultroute is given",
    "noreplacedefaultroute": "do not replace the default route; we never replace one",
    "noipdefault": "do not derive our IP address from the host name; we never do (the peer or "
                   "LOCAL:REMOTE gives it)",
    "ipcp-accept-local": "accept the peer's idea of our address; we always take the address the "
                         "authenticating server assigns",
    "ipcp-accept-remote": "accept the peer's idea of its address; a client takes what it is given",
    "noproxyarp": "do not add a proxy ARP entry; we only add one with proxyarp",
    "hide-password": "keep passwords out of the log; we never log them",
}

#: pppd's old +x / -x spellings of require-x / refuse-x.
_AUTH_ALIASES: Final = {
    "+pap": "require-pap", "-pap": "refuse-pap",
    "+chap": "require-chap", "-chap": "refuse-chap",
    "+mschap": "require-mschap", "-mschap": "refuse-mschap",
    "+mschap-v2": "require-mschap-v2", "-mschap-v2": "refuse-mschap-v2",
    "+eap": "require-eap", "-eap": "refuse-eap",
}
_AUTH_WORDS: Final = frozenset(
    ["auth", "noauth"]
    + [f"{kind}-{m.pppd_name}" for kind in ("require", "refuse") for m in AuthMethod]
)
_MPPE_ALIASES: Final = {"mppe-40": "require-mppe-40", "mppe-128": "require-mppe-128",
                        "-mppe": "nomppe", "-mppe-40": "nomppe-40", "-mppe-128": "nomppe-128"}
_MPPE_WORDS: Final = frozenset({"require-mppe", "require-mppe-40", "require-mppe-128", "nomppe",
                                "nomppe-40", "nomppe-128", "mppe-stateful", "nomppe-stateful"})
#: The pptpd plugin we understand: it writes wtmp records for the call (we log instead).
_LOGWTMP_PLUGIN: Final = "pptpd-logwtmp.so"
#: pppd's RADIUS plugin: the built-in server reads its configuration and does RADIUS itself.
_RADIUS_PLUGIN: Final = "radius.so"


@dataclass(frozen=True, slots=True)
class Where:
    """Where a word came from: a file and line, or :data:`COMMAND_LINE` and argv position."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line)


@dataclass(frozen=True, kw_only=True)
class PppdOptions:
    """Everything the options said, already checked.

    Authentication: ``name`` (pppd's name: ours as authenticator, default username),
    ``user``, ``password``, ``remotename``, ``auth_policy`` (auth/noauth/require-/refuse-),
    ``strip_domain`` (chapms-strip-domain).  Encryption: ``mppe``, ``ccp`` (False: noccp).
    LCP: ``mru``, ``mtu`` (cap on what we send; None: the peer's MRU), ``accm`` (None:
    default-asyncmap, not negotiated), ``pfc``, ``acfc``, ``echo_interval``/``echo_failure``
    (pppd's lcp-echo-*; 0 = off), ``idle``.  IPCP: ``local_address``/``remote_address``
    (LOCAL:REMOTE), ``ms_dns``/``ms_wins`` (pushed to the peer), ``usepeerdns``, ``ipv6``.
    The interface and host: ``ifname``, ``proxyarp``, ``defaultroute`` (added only when there
    is no default route, unless ``replacedefaultroute``).  Context from pptpctrl:
    ``speed``, ``ipparam``, ``remotenumber``, ``original_ip`` (the logwtmp plugin's
    pptpd-original-ip), ``logwtmp``.  RADIUS: ``radius`` (``plugin radius.so``) and
    ``radius_config`` (its ``radius-config-file``).  A dialled link: ``pty`` (the command that
    carries the line), ``persist``/``maxfail``/``holdoff`` (pppd's defaults: 10 failures, 30 s),
    ``linkname``, ``ip_up_script``/``ip_down_script``/``ipv6_up_script``/``ipv6_down_script``
    (pppd's ``ip-up-script`` & co.; the built-in server runs them), ``unit``, ``detach`` (None:
    pppd's default, background when it has a pty;
    ``"up"``: updetach; ``"never"``: nodetach), ``replacedefaultroute``.  Logging: ``debug``,
    ``dump`` (log the option values in effect), ``logfile``, ``logfd`` (None: nologfd),
    ``files`` (every file read, in order).
    ``notices``: things the user should know that do not stop us (logged by the caller).
    """

    name: str | None = None
    user: str | None = None
    password: str | None = None
    remotename: str | None = None
    auth_policy: AuthPolicy = field(default_factory=AuthPolicy)
    strip_domain: bool = False
    mppe: MppePolicy = field(default_factory=MppePolicy)
    ccp: bool = True
    mru: int | None = None
    mtu: int | None = None
    accm: int | None = 0
    pfc: bool = True
    acfc: bool = True
    echo_interval: float = 0.0
    echo_failure: int = 0
    idle: float = 0.0
    local_address: IPv4Address | None = None
    remote_address: IPv4Address | None = None
    ms_dns: tuple[IPv4Address, ...] = ()
    ms_wins: tuple[IPv4Address, ...] = ()
    usepeerdns: bool = False
    ipv6: bool = False
    ifname: str | None = None
    proxyarp: bool = False
    defaultroute: bool = False
    speed: int | None = None
    ipparam: str | None = None
    remotenumber: str | None = None
    original_ip: str | None = None
    logwtmp: bool = False
    radius: bool = False
    radius_config: str | None = None
    pty: str | None = None
    persist: bool = False
    maxfail: int = 10
    holdoff: int = 30
    linkname: str | None = None
    ip_up_script: str | None = None
    ip_down_script: str | None = None
    ipv6_up_script: str | None = None
    ipv6_down_script: str | None = None
    unit: int | None = None
    detach: str | None = None
    replacedefaultroute: bool = False
    debug: bool = False
    dump: bool = False
    logfile: str | None = None
    logfd: int | None = 2
    files: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    locations: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Option name -> ``path:line`` where it was last given (for callers' own errors)."""

    def dump_lines(self) -> list[str]:
        """pppd's ``dump``: one ``field = value`` line per option value that differs from the
        default (the bookkeeping fields ``files``, ``notices``, ``locations`` left out)."""
        defaults = PppdOptions()
        lines = [f"options read from {', '.join(self.files) or 'the command line'}"]
        for f in fields(self):
            if f.name in ("files", "notices", "locations", "password"):
                continue
            value = getattr(self, f.name)
            if value != getattr(defaults, f.name):
                lines.append(f"  {f.name} = {value}")
        if self.password is not None:
            lines.append("  password = ********")  # never logged (hide-password is pppd's default)
        return lines

    def where(self, option: str) -> str:
        """``path:line`` of ``option``, or ``"<options>"`` when it was not given."""
        return self.locations.get(option, "<options>")

    @property
    def role(self) -> SessionRole:
        """pppd has no roles; this mirrors what its options imply.  A pppd that makes the peer
        authenticate (``auth`` or ``require-X``) is the server side: it checks the peer and hands
        out ``remote_address``.  Without authentication, a pppd given a REMOTE address and no
        user name of its own still acts as the server (assigns the address)."""
        if self.auth_policy.authenticates_peer:
            return SessionRole.SERVER
        if self.remote_address is not None and self.user is None and self.password is None:
            return SessionRole.SERVER
        return SessionRole.CLIENT

    def session_config(
        self,
        *,
        hostname: str,
        secrets: SecretsProvider | None = None,
        role: SessionRole | None = None,
        local_address: IPv4Address | None = None,
        remote_address: IPv4Address | None = None,
    ) -> SessionConfig:
        """The :class:`SessionConfig` these options describe.

        ``hostname`` stands in for ``name`` when none was given (pppd's default).  ``secrets``
        (chap-secrets) checks the peer in the server role and supplies our password in the
        client role when ``password`` is absent.  ``local_address``/``remote_address`` override
        the LOCAL:REMOTE word (a server's address pool).
        """
        role = role or self.role
        our_name = self.name or hostname
        local = local_address or self.local_address
        remote = remote_address or self.remote_address
        mtu_mru = self.mru if self.mru is not None else 1500
        common = {
            "auth_policy": self.auth_policy,
            "mru": mtu_mru,
            "accm": self.accm,
            "pfc": self.pfc,
            "acfc": self.acfc,
            "echo_interval": self.echo_interval,
            "echo_failure": self.echo_failure,
            "ccp": self.ccp,
            "mppe": self.mppe,
            "idle_timeout": self.idle,
            "ipv6": self.ipv6,
        }
        peer: PeerConfig | None = None
        username = self.user or our_name
        if self.password is not None or secrets is not None:
            peer = PeerConfig(username=username, password=self.password, secrets=secrets,
                              remote_name=self.remotename)
        authenticator: AuthenticatorConfig | None = None
        if self.auth_policy.authenticates_peer:
            if secrets is None:
                raise ConfigError("the peer must authenticate but no secrets were given")
            authenticator = AuthenticatorConfig(name=our_name, secrets=secrets,
                                                mschap_strip_domain=self.strip_domain)
        if role is SessionRole.SERVER:
            if local is None or remote is None:
                raise ConfigError("the server side needs LOCAL:REMOTE addresses")
            return SessionConfig(role=role, authenticator=authenticator, peer=peer,
                                 local_address=local, peer_address=remote, dns_servers=self.ms_dns,
                                 nbns_servers=self.ms_wins, **common)  # type: ignore[arg-type]
        return SessionConfig(role=role, authenticator=authenticator, peer=peer,
                             local_address=local, request_dns=self.usepeerdns,
                             **common)  # type: ignore[arg-type]


# -- the parser --------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    values: dict[str, object] = field(default_factory=dict)
    auth_words: list[tuple[str, Where]] = field(default_factory=list)
    mppe_words: list[tuple[str, Where]] = field(default_factory=list)
    ms_dns: list[IPv4Address] = field(default_factory=list)
    ms_wins: list[IPv4Address] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    locations: dict[str, str] = field(default_factory=dict)
    words: int = 0
    depth: int = 0


_Handler = Callable[["_Parser", list[str], Where], None]


def _int_arg(text: str, where: Where, option: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise where.error(f"{option}: {text!r} is not a number") from None
    if not low <= value <= high:
        raise where.error(f"{option}: {value} is not in {low}..{high}")
    return value


def _ip_arg(text: str, where: Where, option: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise where.error(f"{option}: {text!r} is not an IPv4 address") from None


def _name_arg(text: str, where: Where, option: str, limit: int = MAX_NAME_LEN) -> str:
    if len(text.encode("utf-8", "surrogateescape")) > limit:
        raise where.error(f"{option}: longer than {limit} bytes")
    return text


class _Parser:
    def __init__(self, etc_dir: str) -> None:
        self.etc_dir = etc_dir
        self.state = _State()

    # -- sources -------------------------------------------------------------------------------

    def read_file(self, path: str, where: Where | None, what: str = "") -> None:
        """Read ``path``; ``where`` names the place that named it (errors about the file as a
        whole are reported there), ``what`` says what it is there (``"option file "``)."""
        if self.state.depth >= MAX_INCLUDE_DEPTH:
            msg = f"options files nested deeper than {MAX_INCLUDE_DEPTH} (a file including itself?)"
            raise where.error(msg) if where else ConfigError(msg, path=path)
        try:
            if "\0" in path:
                raise OSError(errno.EINVAL, "NUL in the file name")
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            # Worded as every command words an unreadable file ("PATH: cannot read: why"),
            # after where the file was named.
            msg = f"cannot read: {exc.strerror or exc}"
            raise where.error(f"{what}{path}: {msg}") if where else ConfigError(msg, path=path) from None
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"larger than {MAX_FILE_BYTES} bytes", path=path)
        self.state.files.append(path)
        self.state.depth += 1
        try:
            self.parse_text(data.decode("utf-8", "surrogateescape"), path)
        finally:
            self.state.depth -= 1

    def parse_text(self, text: str, path: str) -> None:
        words: list[tuple[str, Where]] = []
        for line in split_words(text, path):
            words.extend((w, Where(path, line.number)) for w in line.words)
        self.apply(words)

    def apply(self, words: Sequence[tuple[str, Where]]) -> None:
        i = 0
        while i < len(words):
            word, where = words[i]
            i += 1
            self.state.words += 1
            if self.state.words > MAX_WORDS:
                raise where.error(f"more than {MAX_WORDS} option words")
            self.state.locations[word] = str(where)
            spec = _OPTIONS.get(word)
            if spec is None:
                self.bare_word(word, where)
                continue
            nargs, handler = spec
            args = [w for w, _ in words[i : i + nargs]]
            if len(args) < nargs:
                raise where.error(f"option {word} needs {nargs} argument{'s' if nargs > 1 else ''}")
            i += nargs
            handler(self, [word, *args], where)

    def bare_word(self, word: str, where: Where) -> None:
        """A word that is no option name: pppd's device name, speed or LOCAL:REMOTE."""
        if word in NOOP_OPTIONS:
            return
        if word in _AUTH_ALIASES or word in _AUTH_WORDS:
            self.state.auth_words.append((_AUTH_ALIASES.get(word, word), where))
            return
        if word in _MPPE_ALIASES or word in _MPPE_WORDS:
            self.state.mppe_words.append((_MPPE_ALIASES.get(word, word), where))
            return
        if word.isascii() and word.isdigit():
            # pppd takes a bare number as the serial line speed; a pty has none to set, but
            # pptpctrl always passes one, so it is recorded (and logged) only.
            self.state.values["speed"] = _int_arg(word, where, "speed", 1, 0xFFFFFFFF)
            self.state.locations["speed"] = str(where)
            return
        if ":" in word and not word.startswith("/"):
            self.state.locations["LOCAL:REMOTE"] = str(where)
            local_text, _, remote_text = word.partition(":")
            if local_text:
                self.state.values["local_address"] = _ip_arg(local_text, where, "local address")
            if remote_text:
                self.state.values["remote_address"] = _ip_arg(remote_text, where, "remote address")
            return
        if word.startswith("/") or word.startswith("tty"):
            raise where.error(f"device {word!r}: pptpkit ppp runs on its standard input only")
        raise where.error(f"unsupported pppd option {word!r}")


# -- option handlers ---------------------------------------------------------------------------


def _set(key: str, value: object) -> _Handler:
    def handler(p: _Parser, args: list[str], where: Where) -> None:
        p.state.values[key] = value

    return handler


def _set_name(key: str, limit: int = MAX_NAME_LEN) -> _Handler:
    def handler(p: _Parser, args: list[str], where: Where) -> None:
        p.state.values[key] = _name_arg(args[1], where, args[0], limit)

    return handler


def _set_int(key: str, low: int, high: int) -> _Handler:
    def handler(p: _Parser, args: list[str], where: Where) -> None:
        p.state.values[key] = _int_arg(args[1], where, args[0], low, high)

    return handler


def _file(p: _Parser, args: list[str], where: Where) -> None:
    p.read_file(args[1], where)


def _call(p: _Parser, args: list[str], where: Where) -> None:
    name = args[1]
    if not name or "/" in name or name.startswith("."):
        raise where.error(f"call: {name!r} is not a peer name")
    p.read_file(os.path.join(p.etc_dir, "peers", name), where)


def _name_server(key: str) -> _Handler:
    def handler(p: _Parser, args: list[str], where: Where) -> None:
        servers: list[IPv4Address] = getattr(p.state, key)
        if len(servers) >= MAX_NAME_SERVERS:
            raise where.error(f"{args[0]}: at most {MAX_NAME_SERVERS} servers")
        servers.append(_ip_arg(args[1], where, args[0]))

    return handler


def _asyncmap(p: _Parser, args: list[str], where: Where) -> None:
    text = args[1]
    try:
        value = int(text, 16)
    except ValueError:
        raise where.error(f"asyncmap: {text!r} is not a hexadecimal map") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise where.error("asyncmap: more than 32 bits")
    current = p.state.values.get("accm")
    # pppd ORs successive asyncmap options together.
    p.state.values["accm"] = value | (current if isinstance(current, int) else 0)


def _echo_interval(p: _Parser, args: list[str], where: Where) -> None:
    p.state.values["echo_interval"] = float(_int_arg(args[1], where, args[0], 0, 86400))


def _idle(p: _Parser, args: list[str], where: Where) -> None:
    p.state.values["idle"] = float(_int_arg(args[1], where, args[0], 0, 86400 * 365))


def _ifname(p: _Parser, args: list[str], where: Where) -> None:
    name = args[1]
    # The kernel's IFNAMSIZ is 16 including the NUL.
    if not 1 <= len(name) <= 15 or "/" in name or any(c.isspace() for c in name):
        raise where.error(f"ifname: {name!r} is not an interface name")
    p.state.values["ifname"] = name


def _logfd(p: _Parser, args: list[str], where: Where) -> None:
    p.state.values["logfd"] = _int_arg(args[1], where, args[0], 0, 1023)


def _plugin(p: _Parser, args: list[str], where: Where) -> None:
    if os.path.basename(args[1]) == _RADIUS_PLUGIN:
        # The built-in server does RADIUS itself, from the plugin's radiusclient.conf.
        p.state.values["radius"] = True
        return
    if os.path.basename(args[1]) != _LOGWTMP_PLUGIN:
        raise where.error(f"plugin {args[1]!r}: pppd plugins cannot be loaded by pptpkit ppp")
    p.state.values["logwtmp"] = True
    p.state.notices.append(f"{where}: plugin {_LOGWTMP_PLUGIN}: no wtmp records are written "
                           "(the session is logged instead)")


def _radius_config(p: _Parser, args: list[str], where: Where) -> None:
    if not p.state.values.get("radius"):
        raise where.error("radius-config-file is an option of the radius.so plugin; load it first")
    p.state.values["radius_config"] = _name_arg(args[1], where, args[0], 4096)


def _linkname(p: _Parser, args: list[str], where: Where) -> None:
    name = _name_arg(args[1], where, args[0], 64)
    if not name or "/" in name or name.startswith("."):
        raise where.error(f"linkname {name!r}: it becomes part of a file name (/var/run/ppp-NAME.pid)")
    p.state.values["linkname"] = name


def _demand(p: _Parser, args: list[str], where: Where) -> None:
    raise where.error("demand: dial-on-demand is not supported (the link is brought up at once; "
                      "use persist to keep it up)")


def _original_ip(p: _Parser, args: list[str], where: Where) -> None:
    if not p.state.values.get("logwtmp"):
        raise where.error("pptpd-original-ip is an option of the pptpd-logwtmp plugin; load it first")
    p.state.values["original_ip"] = _name_arg(args[1], where, args[0])


def _defaultroute(p: _Parser, args: list[str], where: Where) -> None:
    p.state.values["defaultroute"] = True
    p.state.notices.append(f"{where}: defaultroute: a default route is added through the link only "
                           "if there is none (with replacedefaultroute, an existing one is replaced "
                           "and put back at the end)")


_OPTIONS: Final[dict[str, tuple[int, _Handler]]] = {
    "file": (1, _file),
    "call": (1, _call),
    "name": (1, _set_name("name")),
    "user": (1, _set_name("user")),
    "password": (1, _set_name("password", MAX_SECRET_LEN)),
    "remotename": (1, _set_name("remotename")),
    "chapms-strip-domain": (0, _set("strip_domain", True)),
    "noccp": (0, _set("ccp", False)),
    "ccp": (0, _set("ccp", True)),
    "mru": (1, _set_int("mru", 128, 16384)),
    "mtu": (1, _set_int("mtu", 128, 16384)),
    "asyncmap": (1, _asyncmap),
    "default-asyncmap": (0, _set("accm", None)),
    "nopcomp": (0, _set("pfc", False)),
    "noaccomp": (0, _set("acfc", False)),
    "lcp-echo-interval": (1, _echo_interval),
    "lcp-echo-failure": (1, _set_int("echo_failure", 0, 1000)),
    "idle": (1, _idle),
    "ms-dns": (1, _name_server("ms_dns")),
    "ms-wins": (1, _name_server("ms_wins")),
    "usepeerdns": (0, _set("usepeerdns", True)),
    "+ipv6": (0, _set("ipv6", True)),
    "ipv6cp-use-ipaddr": (0, _set("ipv6", True)),
    "noipv6": (0, _set("ipv6", False)),
    "-ipv6": (0, _set("ipv6", False)),
    "ifname": (1, _ifname),
    "proxyarp": (0, _set("proxyarp", True)),
    "defaultroute": (0, _defaultroute),
    "ipparam": (1, _set_name("ipparam", 1024)),
    "remotenumber": (1, _set_name("remotenumber")),
    "plugin": (1, _plugin),
    "pptpd-original-ip": (1, _original_ip),
    "radius-config-file": (1, _radius_config),
    "pty": (1, _set_name("pty", 4096)),
    "persist": (0, _set("persist", True)),
    "nopersist": (0, _set("persist", False)),
    "maxfail": (1, _set_int("maxfail", 0, 1_000_000)),
    "holdoff": (1, _set_int("holdoff", 0, 86400)),
    "linkname": (1, _linkname),
    "ip-up-script": (1, _set_name("ip_up_script", 4096)),
    "ip-down-script": (1, _set_name("ip_down_script", 4096)),
    "ipv6-up-script": (1, _set_name("ipv6_up_script", 4096)),
    "ipv6-down-script": (1, _set_name("ipv6_down_script", 4096)),
    "unit": (1, _set_int("unit", 0, 65535)),
    "nodetach": (0, _set("detach", "never")),
    "updetach": (0, _set("detach", "up")),
    "replacedefaultroute": (0, _set("replacedefaultroute", True)),
    "demand": (0, _demand),
    "debug": (0, _set("debug", True)),
    "dump": (0, _set("dump", True)),
    "nodebug": (0, _set("debug", False)),
    "logfile": (1, _set_name("logfile", 4096)),
    "logfd": (1, _logfd),
    "nologfd": (0, _set("logfd", None)),
}


def _finish(p: _Parser) -> PppdOptions:
    st = p.state
    values = dict(st.values)
    try:
        policy = AuthPolicy.from_pppd_options(w for w, _ in st.auth_words)
    except ConfigError as exc:
        raise st.auth_words[-1][1].error(exc.reason) from None
    try:
        mppe = MppePolicy.from_pppd_options(w for w, _ in st.mppe_words)
    except ConfigError as exc:
        raise st.mppe_words[-1][1].error(exc.reason) from None
    ccp = values.get("ccp", True)
    if mppe.required and ccp is False:
        where = st.mppe_words[-1][1]
        raise where.error("MPPE is required but noccp disables CCP, which carries it")
    if values.get("echo_failure") and not values.get("echo_interval"):
        # pppd: lcp-echo-failure without an interval sends no echo at all; say so rather than
        # let the user believe dead peers are detected.
        st.notices.append("lcp-echo-failure has no effect without lcp-echo-interval")
    opts = PppdOptions(auth_policy=policy, mppe=mppe, ms_dns=tuple(st.ms_dns),
                       ms_wins=tuple(st.ms_wins), files=tuple(st.files), notices=tuple(st.notices),
                       locations=dict(st.locations))
    return replace(opts, **values)  # type: ignore[arg-type]


def parse_pppd_text(text: str, path: str = "<options>", *, etc_dir: str = "/etc/ppp") -> PppdOptions:
    """Parse the text of one options file."""
    p = _Parser(etc_dir)
    p.parse_text(text, path)
    return _finish(p)


def parse_pppd_file(path: str, *, etc_dir: str = "/etc/ppp") -> PppdOptions:
    """Parse one options file (and the files it includes)."""
    p = _Parser(etc_dir)
    p.read_file(path, None)
    return _finish(p)


def parse_pppd_argv(
    argv: Iterable[str], *, etc_dir: str = "/etc/ppp", default_files: Sequence[str] = ()
) -> PppdOptions:
    """Parse pppd's command line (without the program name) after ``default_files`` (pppd reads
    /etc/ppp/options first; files that do not exist are skipped, as pppd does).  Errors name
    :data:`COMMAND_LINE` and the 1-based argument position."""
    p = _Parser(etc_dir)
    for path in default_files:
        if os.path.exists(path):
            p.read_file(path, None)
    words = [(w, Where(COMMAND_LINE, i)) for i, w in enumerate(argv, 1)]
    p.apply(words)
    return _finish(p)


def parse_pppd_files(
    named: Sequence[tuple[str, Where]], *, etc_dir: str = "/etc/ppp", default_files: Sequence[str] = (),
    what: str = "option file ",
) -> PppdOptions:
    """Parse ``default_files`` (skipped when missing, as pppd does), then each file of ``named``:
    a path and the :class:`Where` that named it (pptpd.conf's ``option`` line), so a file that
    cannot be read is reported there - ``pptpd.conf:3: option file /x: cannot read: ...``."""
    p = _Parser(etc_dir)
    for path in default_files:
        if os.path.exists(path):
            p.read_file(path, None)
    for path, where in named:
        p.read_file(path, where, what)
    return _finish(p)
