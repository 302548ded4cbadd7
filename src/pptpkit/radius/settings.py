"""What ``pptpkit server`` needs to talk to RADIUS, built from its settings.

The command line and the config files say *where* (server addresses, a secret file, timeouts,
the NAS's identity); this module turns that into the client engine's configuration
(:class:`~pptpkit.radius.client.RadiusClientConfig`) for authentication and for accounting, and
the :class:`~pptpkit.radius.access.NasInfo` every request carries.

The shared secret is read from a file, never from the command line (where ``ps`` shows it) and
never logged: the server objects keep it out of their ``repr``.  The file holds one secret on
its first non-empty, non-comment line; an unreadable or empty file is an error naming it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pptpkit.errors import ConfigError
from pptpkit.radius.access import NasInfo
from pptpkit.radius.client import RadiusClientConfig, RadiusServer

__all__ = [
    "ACCT_PORT",
    "AUTH_PORT",
    "DAE_PORT",
    "RadiusSetup",
    "parse_server",
    "read_secret",
    "resolve",
    "split_server",
]

AUTH_PORT: Final = 1812
ACCT_PORT: Final = 1813
#: RFC 5176 3: Disconnect and CoA requests go to UDP 3799.
DAE_PORT: Final = 3799


def split_server(text: str, default_port: int) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` -> (host as written, port)."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"RADIUS server {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"RADIUS server {text!r}: junk after ']'")
            port = _port(text, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(text, port_text)
    if not host:
        raise ConfigError(f"RADIUS server {text!r}: no host")
    return host, port


def parse_server(text: str, default_port: int) -> tuple[str, int]:
    """(address, port) of a server given as in :func:`split_server`.  A name is resolved here,
    once at start-up, so no login ever waits for the resolver."""
    host, port = split_server(text, default_port)
    return resolve(host, text), port


def resolve(host: str, text: str | None = None) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"RADIUS server {text or host!r}: cannot resolve {host!r}: {exc}") from None
    return str(infos[0][4][0])


def _port(text: str, port_text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"RADIUS server {text!r}: bad port {port_text!r}")
    return int(port_text)


def read_secret(path: str) -> bytes:
    """The shared secret in ``path`` (first line that is not empty or a ``#`` comment)."""
    try:
        with open(path, "rb") as f:
            lines = f.read(65536).splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the RADIUS secret: {exc.strerror}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if len(line) > 256:
            raise ConfigError(f"{path}:{number}: the RADIUS secret is longer than 256 octets")
        return line
    raise ConfigError(f"{path}: no RADIUS secret in the file")


@dataclass(frozen=True, kw_only=True)
class RadiusSetup:
    """Everything the server's RADIUS parts run with.

    ``auth``: the authentication servers (None: RADIUS does not authenticate);
    ``acct``: the accounting servers (None: no accounting).  ``interim``: the default
    Acct-Interim-Interval in seconds (0: none unless the Access-Accept sends one).
    ``dae_listen``: (address, port) of the RFC 5176 listener, None when off;
    ``dae_clients``: the addresses allowed to send Disconnect/CoA requests, with the secret.
    """

    nas: NasInfo
    auth: RadiusClientConfig | None = None
    acct: RadiusClientConfig | None = None
    interim: float = 0.0
    dae_listen: tuple[str, int] | None = None
    dae_clients: tuple[str, ...] = ()
    dae_secret: bytes = field(default=b"", repr=False)

    @classmethod
    def build(cls, *, auth_servers: tuple[str, ...], acct_servers: tuple[str, ...], secret_file: str | None,
              timeout: float, retries: int, nas_identifier: str | None, nas_ip_address: str | None,
              interim: float = 0.0, dae_listen: str | None = None,
              dae_clients: tuple[str, ...] = (),
              server_secrets: Mapping[str, bytes] | None = None) -> RadiusSetup | None:
        """None when no RADIUS server is configured; :class:`ConfigError` for what is
        inconsistent.  Accounting goes to the authentication servers (port 1813) unless
        ``acct_servers`` names others.  The secret: ``secret_file`` for every server, else
        each server's from ``server_secrets`` (radiusclient's servers file, by host as written
        or by address)."""
        if not auth_servers and not acct_servers:
            if secret_file or dae_listen:
                raise ConfigError("a RADIUS secret or listener is set but no --radius-server")
            return None
        if secret_file is None and server_secrets is None:
            raise ConfigError("RADIUS needs --radius-secret-file (the secret is never given on the "
                              "command line)")
        secret = read_secret(secret_file) if secret_file is not None else b""

        def secret_of(text: str, port: int) -> tuple[str, bytes]:
            host, _ = split_server(text, port)
            address = resolve(host, text)
            if secret_file is not None or server_secrets is None:
                return address, secret
            found = server_secrets.get(host, server_secrets.get(address))
            if found is None:
                raise ConfigError(f"RADIUS server {text!r}: no secret for it in the servers file")
            return address, found
        try:
            nas_ip = ipaddress.IPv4Address(nas_ip_address) if nas_ip_address else None
        except ValueError:
            raise ConfigError(f"--nas-ip-address {nas_ip_address!r} is not an IPv4 address") from None
        nas = NasInfo(nas_identifier=nas_identifier or (None if nas_ip else "pptpkit"), nas_ip_address=nas_ip)

        def client(texts: tuple[str, ...], port: int) -> RadiusClientConfig:
            servers = []
            for text in texts:
                address, key = secret_of(text, port)
                servers.append(RadiusServer(address=address, port=split_server(text, port)[1], secret=key))
            return RadiusClientConfig(servers=tuple(servers), timeout=timeout, retries=retries)

        auth = client(auth_servers, AUTH_PORT) if auth_servers else None
        # Accounting defaults to the authentication hosts, on the accounting port.
        acct_texts = acct_servers or tuple(f"[{h}]" if ":" in h else h
                                           for h, _ in (split_server(t, AUTH_PORT) for t in auth_servers))
        acct = client(acct_texts, ACCT_PORT)
        if interim < 0:
            raise ConfigError("the interim accounting interval must not be negative")
        if 0 < interim < 60:
            raise ConfigError("the interim accounting interval is at least 60 s (RFC 2869 5.16)")
        listen = None
        if dae_listen is not None and secret_file is None:
            raise ConfigError("--radius-dae-listen needs --radius-secret-file (the secret Disconnect "
                              "and CoA requests are checked with)")
        if dae_listen is not None:
            listen = parse_server(dae_listen, DAE_PORT)
            if not dae_clients:
                raise ConfigError("--radius-dae-listen needs --radius-dae-client (who may send "
                                  "Disconnect/CoA requests)")
        clients = tuple(str(ipaddress.ip_address(c)) for c in _checked_addresses(dae_clients))
        return cls(nas=nas, auth=auth, acct=acct, interim=interim, dae_listen=listen,
                   dae_clients=clients, dae_secret=secret)


def _checked_addresses(texts: tuple[str, ...]) -> tuple[str, ...]:
    for text in texts:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(f"RADIUS dynamic-authorization client {text!r} is not an IP address") from None
    return texts
