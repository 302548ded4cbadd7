"""pppd's radius plugin configuration (``radiusclient.conf`` and its ``servers`` file).

A pptpd set up for RADIUS says ``plugin radius.so`` in its pppd options, and optionally
``radius-config-file FILE`` (default ``/etc/radiusclient/radiusclient.conf``).  That file, in
the radiusclient/radcli format, names the servers; the shared secrets are in the file its
``servers`` keyword names, one ``HOST SECRET`` per line.  We read what a NAS needs from them:

* ``authserver``/``acctserver``: ``HOST[:PORT]`` (several per line or several lines, in
  failover order).  A third ``:SECRET`` part is refused: secrets stay in the servers file.
* ``servers``: the secrets file; ``radius_timeout``/``radius_retries``; ``nas-identifier`` and
  ``nas-ip``.
* Keywords that configure the library's login programs or its own files (``dictionary``,
  ``seqfile``, ``mapfile``, ``issue``, ``login_tries``, ``login_timeout``, ``nologin``,
  ``login_radius``, ``login_local``, ``radius_deadtime``) have no meaning for this server;
  they are accepted and said once in the log, never silently.
* What would change behaviour we do not have is an error at its line: ``default_realm``
  (realm rewriting), ``auth_order`` other than ``radius``, a ``bindaddr`` other than ``*``,
  and every unknown keyword.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pptpkit.errors import ConfigError

__all__ = ["DEFAULT_RADIUSCLIENT_CONF", "RadiusClientConf", "read_radiusclient_conf", "read_servers_file"]

log = logging.getLogger(__name__)

DEFAULT_RADIUSCLIENT_CONF = "/etc/radiusclient/radiusclient.conf"

_LIBRARY_ONLY = frozenset({
    "dictionary", "seqfile", "mapfile", "issue", "login_tries", "login_timeout", "nologin",
    "login_radius", "login_local", "radius_deadtime", "serv-type", "clientdebug",
})
_MAX_LINES = 10000


@dataclass(frozen=True, kw_only=True)
class RadiusClientConf:
    path: str
    authservers: tuple[str, ...] = ()
    acctservers: tuple[str, ...] = ()
    servers_file: str | None = None
    timeout: float | None = None
    retries: int | None = None
    nas_identifier: str | None = None
    nas_ip: str | None = None
    notices: tuple[str, ...] = field(default=(), compare=False)


def _lines(path: str, what: str) -> list[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    out = []
    for number, raw in enumerate(text.splitlines()[:_MAX_LINES], 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append((number, line))
    return out


def _servers(path: str, number: int, values: list[str]) -> list[str]:
    out = []
    for value in values:
        if value.count(":") >= 2 and not value.startswith("["):
            raise ConfigError(f"{path}:{number}: {value!r}: a secret in radiusclient.conf is not "
                              "read; put it in the servers file")
        out.append(value)
    return out


def read_radiusclient_conf(path: str) -> RadiusClientConf:
    """The radiusclient.conf at ``path``; :class:`ConfigError` with ``path:line``."""
    auth: list[str] = []
    acct: list[str] = []
    values: dict[str, object] = {}
    notices: list[str] = []
    for number, line in _lines(path, "RADIUS client configuration"):
        # Keyword and values are separated by blanks or tabs (the packaged file uses both).
        key, *args = line.split()
        where = f"{path}:{number}"
        if key in ("authserver", "acctserver"):
            if not args:
                raise ConfigError(f"{where}: {key} needs HOST[:PORT]")
            (auth if key == "authserver" else acct).extend(_servers(path, number, args))
        elif key == "servers":
            if len(args) != 1:
                raise ConfigError(f"{where}: servers needs one file name")
            values["servers_file"] = args[0]
        elif key in ("radius_timeout", "radius_retries"):
            if len(args) != 1 or not args[0].isdigit():
                raise ConfigError(f"{where}: {key} needs a number")
            number_value = int(args[0])
            if key == "radius_timeout":
                if not 1 <= number_value <= 60:
                    raise ConfigError(f"{where}: radius_timeout must be 1..60 seconds")
                values["timeout"] = float(number_value)
            else:
                if number_value > 20:
                    raise ConfigError(f"{where}: radius_retries must be 0..20")
                values["retries"] = number_value
        elif key == "nas-identifier":
            if not args:
                raise ConfigError(f"{where}: nas-identifier needs a value")
            values["nas_identifier"] = " ".join(args)
        elif key in ("nas-ip", "nas_ip"):
            if len(args) != 1:
                raise ConfigError(f"{where}: {key} needs one address")
            values["nas_ip"] = args[0]
        elif key == "bindaddr":
            if args != ["*"]:
                raise ConfigError(f"{where}: bindaddr {' '.join(args)}: requests go out from the address "
                                  "the routing table picks; only '*' is supported")
        elif key == "auth_order":
            if "".join(args).replace(",", " ").split() != ["radius"]:
                raise ConfigError(f"{where}: auth_order {' '.join(args)}: only 'radius' (a local "
                                  "fallback is not supported with RADIUS)")
        elif key == "default_realm":
            if args:
                raise ConfigError(f"{where}: default_realm: realms are not added to user names")
        elif key in _LIBRARY_ONLY:
            notices.append(f"{where}: {key}: not used by pptpkit (it configures the radiusclient "
                           "library's own programs and files)")
        else:
            raise ConfigError(f"{where}: unknown radiusclient.conf keyword {key!r}")
    if not auth:
        raise ConfigError(f"{path}: no authserver")
    return RadiusClientConf(path=path, authservers=tuple(auth), acctservers=tuple(acct),
                            notices=tuple(notices), **values)  # type: ignore[arg-type]


def read_servers_file(path: str) -> dict[str, bytes]:
    """The radiusclient ``servers`` file: ``HOST SECRET`` per line -> {host: secret}."""
    found: dict[str, bytes] = {}
    for number, line in _lines(path, "RADIUS servers file"):
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{number}: expected 'HOST SECRET'")
        host, secret = parts
        if len(secret.encode()) > 256:
            raise ConfigError(f"{path}:{number}: the secret is longer than 256 octets")
        found[host] = secret.encode()
    return found
