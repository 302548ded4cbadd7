"""``pptpkit connect --peer NAME``: a pppd peer profile (``/etc/ppp/peers/NAME``, as pptpsetup
writes it) as the built-in client's settings.

The profile is read as pppd reads it (``/etc/ppp/options`` first, then the peer file) by
:mod:`pptpkit.compat.pppdopts`.  The server comes from the ``pty`` command, which must run
pptp-linux (``pptp SERVER --nolaunchpppd [--localbind IP] [--nobuffer] ...``): the built-in
client is what replaces that command and pppd together.  The password is the profile's
``password`` or the secrets line for (``name``, ``remotename``), as pppd would pick it.

Every option of the profile either maps to a setting of the client or is refused at its
``path:line``; nothing is dropped silently.  A few mean nothing here and are said once
(``notices``): ``ipparam`` and ``linkname`` only reach ip-up scripts and pid files, which
``pptpkit connect`` does not use.  The command line still wins: a flag given next to
``--peer`` overrides the profile's value.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Final

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import PppSecretsFile
from pptpkit.compat.pppdopts import PppdOptions, parse_pppd_argv
from pptpkit.errors import ConfigError
from pptpkit.ppp.session_config import MppePolicy

__all__ = ["PeerProfile", "read_peer_profile"]

#: Options of a server-side pppd that a client profile cannot have: field -> option name.
_FIELD_OPTION: Final = {
    "idle": "idle", "proxyarp": "proxyarp", "ms_dns": "ms-dns", "ms_wins": "ms-wins",
    "local_address": "LOCAL:REMOTE", "remote_address": "LOCAL:REMOTE", "strip_domain": "chapms-strip-domain",
    "speed": "speed", "remotenumber": "remotenumber", "original_ip": "pptpd-original-ip",
    "logwtmp": "plugin", "radius": "plugin", "radius_config": "radius-config-file",
    # Hook scripts on the client: issue 12 (pptpkit.vpn.hooks is ready for it).
    "ip_up_script": "ip-up-script", "ip_down_script": "ip-down-script",
    "ipv6_up_script": "ipv6-up-script", "ipv6_down_script": "ipv6-down-script",
}


@dataclass(frozen=True, kw_only=True)
class PeerProfile:
    """What ``pptpkit connect`` takes from a profile (None: the profile does not say)."""

    path: str
    server: str
    user: str
    password: str = field(repr=False)
    local_address: str | None = None
    nobuffer: bool = False
    mppe: MppePolicy | None = None
    refuse: frozenset[AuthMethod] = frozenset()
    mtu: int | None = None
    mru: int | None = None
    echo_interval: float | None = None
    echo_failure: int | None = None
    default_route: bool = False
    dns: bool = False
    persist: bool = False
    max_retries: int | None = None
    holdoff: float | None = None
    ifname: str | None = None
    ipv6: bool = False
    notices: tuple[str, ...] = ()


def _pptp_command(opts: PppdOptions, path: str) -> tuple[str, str | None, bool]:
    """(server, --localbind address, --nobuffer) from ``pty "pptp SERVER --nolaunchpppd ..."``."""
    where = opts.where("pty")
    if opts.pty is None:
        raise ConfigError(f"{path}: no 'pty' option: the profile does not say which server to call")
    try:
        words = shlex.split(opts.pty)
    except ValueError as exc:
        raise ConfigError(f"{where}: pty: {exc}") from None
    if not words or os.path.basename(words[0]) != "pptp":
        raise ConfigError(f"{where}: pty {opts.pty!r}: --peer needs a profile that runs pptp-linux's pptp")
    server: str | None = None
    localbind: str | None = None
    nobuffer = launch_pppd = False
    i = 1
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--nolaunchpppd":
            launch_pppd = True
        elif word == "--nobuffer":
            nobuffer = True
        elif word in ("--localbind", "--loglevel", "--timeout") and i < len(words):
            if word == "--localbind":
                localbind = words[i]
            elif word == "--timeout":
                raise ConfigError(f"{where}: pty: pptp --timeout: use pptpkit connect --timeout instead")
            i += 1
        elif word.startswith("--"):
            raise ConfigError(f"{where}: pty: pptp option {word} is not supported by pptpkit connect")
        elif server is None:
            server = word
        else:
            raise ConfigError(f"{where}: pty: unexpected {word!r} after the server")
    if server is None:
        raise ConfigError(f"{where}: pty {opts.pty!r}: no server")
    if not launch_pppd:
        raise ConfigError(f"{where}: pty {opts.pty!r}: pptp without --nolaunchpppd starts a pppd of its own")
    return server, localbind, nobuffer


def read_peer_profile(name: str, *, etc_dir: str = "/etc/ppp") -> PeerProfile:
    """The profile ``etc_dir/peers/NAME`` (after ``etc_dir/options``); ConfigError at the line."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--peer {name!r}: a profile name, not a path")
    path = os.path.join(etc_dir, "peers", name)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such peer profile")
    # pppd reads /etc/ppp/options first; the peer file then overrides it.
    opts = parse_pppd_argv(["file", path], etc_dir=etc_dir, default_files=[os.path.join(etc_dir, "options")])
    defaults = PppdOptions()
    for field_name, option in _FIELD_OPTION.items():
        if getattr(opts, field_name) != getattr(defaults, field_name):
            raise ConfigError(f"{opts.where(option)}: {option}: not supported by pptpkit connect")
    if opts.auth_policy.authenticates_peer:
        raise ConfigError(f"{opts.where('auth')}: the client does not authenticate the server "
                          "(use noauth, as pptpsetup writes)")
    if opts.detach == "up":
        raise ConfigError(f"{opts.where('updetach')}: updetach: pptpkit connect stays in the foreground "
                          "(run it as a service, or use pptpkit ppp call NAME)")
    server, localbind, nobuffer = _pptp_command(opts, path)
    user = opts.user or opts.name
    if not user:
        raise ConfigError(f"{path}: no 'name' or 'user': the profile does not say who we are")
    password = opts.password
    if password is None:
        secrets_path = os.path.join(etc_dir, "chap-secrets")
        found = PppSecretsFile(secrets_path).lookup(user, opts.remotename or "*")
        if found is None:
            raise ConfigError(f"{secrets_path}: no secret for {user!r} towards "
                              f"{opts.remotename or 'any server'!r}")
        password = found.secret
    notices = [f"{opts.where(o)}: {o}: no ip-up scripts or pid files with pptpkit connect"
               for o, v in (("ipparam", opts.ipparam), ("linkname", opts.linkname)) if v is not None]
    if opts.replacedefaultroute:
        notices.append(f"{opts.where('replacedefaultroute')}: replacedefaultroute: pptpkit connect's "
                       "default route (0/1 + 128/1) already wins over the existing one, which stays")
    ifname = opts.ifname or (f"ppp{opts.unit}" if opts.unit is not None else None)
    return PeerProfile(
        path=path, server=server, user=user, password=password, local_address=localbind, nobuffer=nobuffer,
        mppe=opts.mppe if opts.locations.keys() & _MPPE_WORDS else None,
        refuse=opts.auth_policy.refuse, mtu=opts.mtu, mru=opts.mru,
        echo_interval=opts.echo_interval if "lcp-echo-interval" in opts.locations else None,
        echo_failure=opts.echo_failure if "lcp-echo-failure" in opts.locations else None,
        default_route=opts.defaultroute, dns=opts.usepeerdns, persist=opts.persist,
        max_retries=(opts.maxfail or None) if opts.persist else None,
        holdoff=float(opts.holdoff) if "holdoff" in opts.locations else None,
        ifname=ifname, ipv6=opts.ipv6, notices=tuple(notices))


_MPPE_WORDS: Final = frozenset({
    "require-mppe", "require-mppe-40", "require-mppe-128", "nomppe", "nomppe-40", "nomppe-128",
    "mppe-stateful", "nomppe-stateful", "mppe-40", "mppe-128", "-mppe", "-mppe-40", "-mppe-128",
})
