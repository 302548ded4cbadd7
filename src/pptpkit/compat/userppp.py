"""``pptpkit ppp``: the built-in PPP stack as a drop-in for pppd on a pty or stdin.

It takes what pptpctrl gives pppd (``local [file OPTFILE] SPEED LOCAL:REMOTE [ipparam X]
[plugin pptpd-logwtmp.so pptpd-original-ip X] remotenumber X``) and what pptp-linux users give
pppd (``name``/``user``, ``password``, ``remotename``, ``require-mppe-128``, ``noauth``,
``defaultroute``, ``usepeerdns``, ``call PEER``, ``file F`` ...), parsed by
:mod:`pptpkit.compat.pppdopts` after ``$ETC/options`` as pppd does.

The wire side is async HDLC on fd 0 - both directions when fd 0 is read-write (a pty slave as
pptpctrl gives it, or the socketpair end ``pptp --nolaunchpppd`` uses), else fd 1 for output.
A tty is put in raw mode first (pptpctrl hands over a cooked one; nothing would arrive) and
restored at the end.  We speak first: our LCP Configure-Request goes out at once, which is what
pptpctrl waits for before it reads any GRE.

The IP side is a TUN interface per link (``ppp%d`` unless ``ifname``), via
:class:`~pptpkit.io.link.PppLink` and :class:`~pptpkit.io.dataplane.TunDataPlane`.  The role follows the
options (see :attr:`pptpkit.compat.pppdopts.PppdOptions.role`): a pppd that authenticates the peer and
hands out LOCAL:REMOTE is the server side.

Files: ``$PPTPKIT_PPP_ETC`` (default ``/etc/ppp``) holds ``options``, ``chap-secrets`` and
``peers/``; usepeerdns writes ``$PPTPKIT_PPP_ETC/resolv.conf`` (pppd's file) and removes it at
exit.  ``PPTPKIT_PASSWORD`` in the environment supplies the password without putting it on a
command line.

Exit statuses are pppd's (and so the project's table, :class:`pptpkit.errors.ExitStatus`): 0
after a link that was up ended normally, 1 fatal error, 2 option error, 3 not permitted (the TUN
interface needs root), 5 terminated by a signal, 10 negotiation failed (MPPE refused included), 11 the peer
failed to authenticate, 12 idle timeout, 15 the peer stopped answering LCP echoes, 16 hang-up
(EOF on the line), 19 we failed to authenticate.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import termios
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pptpkit.auth.secrets import PppSecretsFile, SecretsProvider, StaticSecrets
from pptpkit.compat.pppdopts import PppdOptions, parse_pppd_argv
from pptpkit.errors import NOT_PERMITTED_MESSAGE, ConfigError, ExitStatus, PptpkitError, is_not_permitted
from pptpkit.io.dataplane import TunDataPlane
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.link import PppLink, outcome_text
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.pty import FdStream, set_raw
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    LinkDown,
    LinkParameters,
    LinkUp,
    SessionEvent,
    SessionRole,
)

__all__ = [
    "ENV_ETC",
    "ENV_PASSWORD",
    "EXIT_FATAL_ERROR",
    "EXIT_NOT_ROOT",
    "EXIT_OPTION_ERROR",
    "PppRun",
    "load_options",
    "main",
    "run",
]

log = logging.getLogger("pptpkit.ppp")

ENV_ETC: Final = "PPTPKIT_PPP_ETC"
ENV_PASSWORD: Final = "PPTPKIT_PASSWORD"
DEFAULT_ETC: Final = "/etc/ppp"
#: pppd.h exit statuses that do not come from the session itself.
EXIT_FATAL_ERROR: Final = int(ExitStatus.FATAL)
EXIT_OPTION_ERROR: Final = int(ExitStatus.USAGE)
EXIT_NOT_ROOT: Final = int(ExitStatus.NOT_PERMITTED)
EXIT_USER_REQUEST: Final = int(ExitStatus.USER_REQUEST)


@dataclass(slots=True)
class PppRun:
    """What :func:`run` needs, resolved from argv and the environment."""

    options: PppdOptions
    secrets: SecretsProvider | None
    etc_dir: str
    hostname: str


def load_options(argv: Sequence[str], environ: dict[str, str] | None = None) -> PppRun:
    """Parse pppd's argv after ``$ETC/options``, and find the secrets.  Raises ConfigError."""
    env = dict(os.environ if environ is None else environ)
    etc = env.get(ENV_ETC, DEFAULT_ETC)
    opts = parse_pppd_argv(argv, etc_dir=etc, default_files=[os.path.join(etc, "options")])
    if opts.radius:
        # One pppd per call cannot share a RADIUS client; the built-in server does RADIUS.
        raise ConfigError(f"{opts.where('plugin')}: plugin radius.so: pptpkit ppp does no RADIUS; run "
                          "pptpkit server in built-in mode with the same options (it reads the "
                          "plugin's radiusclient.conf)")
    password = env.get(ENV_PASSWORD)
    if password is not None and opts.password is None:
        opts = replace(opts, password=password)
    secrets: SecretsProvider | None = None
    chap = os.path.join(etc, "chap-secrets")
    if os.path.exists(chap):
        secrets = PppSecretsFile(chap)
    elif opts.auth_policy.authenticates_peer:
        raise ConfigError(f"the peer must authenticate but {chap} does not exist")
    if secrets is None and opts.password is None and opts.role is SessionRole.CLIENT:
        # pppd would still try (and fail authenticating); with no password at all and no
        # secrets we can only run a link whose peer asks for no authentication.
        secrets = StaticSecrets({})
    return PppRun(options=opts, secrets=secrets, etc_dir=etc, hostname=socket.gethostname())


def _fd_mode(fd: int) -> int | None:
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return None


def _open_line() -> FdStream:
    """fd 0 both ways when it is read-write (pty slave, socketpair), else fd 0 in / fd 1 out."""
    if _fd_mode(0) == os.O_RDWR or _fd_mode(1) not in (os.O_WRONLY, os.O_RDWR):
        return FdStream(0, close_fds=False)
    return FdStream(0, write_fd=1, close_fds=False)


class _HostSetup:
    """The host-side options a pppd applies when the link comes up: defaultroute, proxyarp,
    usepeerdns.  Everything is undone at detach (routes go with the TUN)."""

    def __init__(self, run: PppRun) -> None:
        self.run = run
        self.proxy: tuple[str, int] | None = None
        self.resolv: str | None = None

    async def hook(self, ifname: str, up: LinkUp, nc: NetConfig) -> None:
        opts = self.run.options
        if opts.defaultroute:
            defaults = [r for r in await nc.routes() if r[0] == "0.0.0.0/0"]
            if defaults:
                log.warning("defaultroute: not replacing the existing default route %s",
                            defaults[0][1] or f"dev index {defaults[0][2]}")
            else:
                await nc.add_route("0.0.0.0/0", dev=ifname)
                log.info("default route through %s", ifname)
        if opts.proxyarp and up.peer_address is not None:
            await self._proxyarp(nc, ifname, str(up.peer_address))
        if opts.usepeerdns and up.dns_servers:
            path = os.path.join(self.run.etc_dir, "resolv.conf")
            text = "".join(f"nameserver {a}\n" for a in up.dns_servers)
            try:
                with open(path, "w") as f:
                    f.write(text)
                self.resolv = path
            except OSError as exc:
                log.warning("usepeerdns: cannot write %s: %s", path, exc)

    async def _proxyarp(self, nc: NetConfig, ifname: str, peer: str) -> None:
        # pppd publishes the peer's address on the Ethernet interface whose subnet holds it,
        # and carries on when it cannot.
        try:
            index = await nc.publish_proxy_arp(peer, skip=ifname)
        except NetConfigError as exc:
            log.warning("proxyarp: cannot publish %s: %s", peer, exc)
            return
        if index is None:
            log.warning("proxyarp: no interface on the same subnet as %s", peer)
            return
        self.proxy = (peer, index)
        log.info("proxy ARP entry for %s (interface index %d)", peer, index)

    async def undo(self, ifname: str) -> None:
        if self.resolv is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.resolv)
            self.resolv = None
        if self.proxy is not None:
            peer, index = self.proxy
            self.proxy = None
            nc = await NetConfig().open()
            try:
                await nc.withdraw_proxy_arp(peer, index)
            except NetConfigError as exc:
                log.debug("proxyarp: removing %s: %s", peer, exc)
            finally:
                await nc.close()


def _log_event(link: PppLink, event: SessionEvent, mppe_seen: list[str]) -> None:
    if isinstance(event, LinkParameters):
        log.info("LCP up: MRU %d/%d, auth %s/%s", event.local_mru, event.peer_mru,
                 event.auth_peer.pppd_name if event.auth_peer else "none",
                 event.auth_self.pppd_name if event.auth_self else "none")
    elif isinstance(event, Authenticated):
        who = "peer" if event.we_authenticated_peer else "we"
        log.info("%s authenticated with %s as %r", who, event.method.pppd_name, event.username)
    elif isinstance(event, AuthenticationFailed):
        log.warning("authentication failed (%s, %r): %s", event.method.pppd_name, event.username,
                    event.reason)
    elif isinstance(event, LinkUp):
        if event.mppe != "none":
            # pppd's wording; scripts and tests grep for it.
            log.info("%s compression enabled", event.mppe)
            mppe_seen.append(event.mppe)
        log.info("local  IP address %s", event.local_address)
        log.info("remote IP address %s", event.peer_address)
        for i, dns in enumerate(event.dns_servers, 1):
            log.info("%s DNS address %s", "primary" if i == 1 else "secondary", dns)
        log.info("interface %s up, MTU %d", link.interface, event.mtu)
    elif isinstance(event, LinkDown):
        log.info("connection terminated: %s", outcome_text(event))


async def run(ppp: PppRun, *, stream: FdStream | None = None) -> int:
    """Run one link on ``stream`` (default: fd 0/1) until it ends; returns pppd's exit status."""
    opts = ppp.options
    try:
        config = opts.session_config(hostname=ppp.hostname, secrets=ppp.secrets)
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_OPTION_ERROR
    loop = asyncio.get_running_loop()
    line = stream or _open_line()
    saved_tty: list[Any] | None = None
    if stream is None and os.isatty(0):
        with contextlib.suppress(termios.error):
            saved_tty = termios.tcgetattr(0)
            set_raw(0)
    host = _HostSetup(ppp)
    plane = TunDataPlane(opts.ifname or "ppp%d", mtu=opts.mtu, hook=host.hook, on_detach=host.undo)
    link_box: list[PppLink] = []

    def frame_in(frame: bytes) -> None:
        if link_box:
            link_box[0].frame_received(frame)

    def line_closed(exc: BaseException | None) -> None:
        if link_box:
            link_box[0].lower_down(f"line closed{f' ({exc})' if exc else ''}")

    bridge = HdlcStreamBridge(line, on_frame=frame_in, on_close=line_closed)
    mppe_seen: list[str] = []
    link = PppLink(config, bridge, plane, name="ppp",
                   on_event=lambda lk, ev: _log_event(lk, ev, mppe_seen))
    link_box.append(link)
    log.info("pptpkit ppp: %s role, %s, %s", config.role.value, config.mppe.describe(),
             f"remotenumber {opts.remotenumber}" if opts.remotenumber else "no remote number")
    if opts.ipparam is not None:
        log.info("ipparam %s", opts.ipparam)
    for notice in opts.notices:
        log.warning("%s", notice)
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        log.info("terminating on signal %d", sig)
        link.close("User request")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
    bridge.start()
    link.start()
    try:
        down: LinkDown = await link.closed
        if signalled and not link.session.finished:
            down = await link.aclose()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(line.drain(), 1.0)
        bridge.close()
        if saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSANOW, saved_tty)
    if signalled:
        return EXIT_USER_REQUEST
    return down.exit_status


def _setup_logging(opts: PppdOptions) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    fmt = logging.Formatter("pptpkit-ppp[%(process)d]: %(message)s")
    if opts.logfd is not None:
        try:
            handler: logging.Handler = logging.StreamHandler(
                sys.stderr if opts.logfd == 2 else os.fdopen(os.dup(opts.logfd), "w", buffering=1))
        except OSError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if opts.logfile is not None:
        try:
            file_handler = logging.FileHandler(opts.logfile)
        except OSError as exc:
            print(f"pptpkit ppp: cannot open logfile {opts.logfile}: {exc}", file=sys.stderr)
        else:
            file_handler.setFormatter(fmt)
            root.addHandler(file_handler)
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    root.setLevel(logging.DEBUG if opts.debug else logging.INFO)
    # Library chatter (netlink message dumps) drowns pppd-style debug output.
    for noisy in ("asyncio", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str]) -> int:
    """``pptpkit ppp [pppd options...]``; returns pppd's exit status."""
    try:
        ppp = load_options(argv)
    except ConfigError as exc:
        print(f"pptpkit ppp: {exc}", file=sys.stderr)
        return EXIT_OPTION_ERROR
    _setup_logging(ppp.options)
    try:
        return asyncio.run(run(ppp))
    except KeyboardInterrupt:
        return EXIT_USER_REQUEST
    except (PptpkitError, NetConfigError, OSError) as exc:
        if is_not_permitted(exc):
            # Every pptpkit command words this failure the same; pppd's status is 3 as well.
            print(f"pptpkit ppp: {NOT_PERMITTED_MESSAGE}: {exc}", file=sys.stderr, flush=True)
            return EXIT_NOT_ROOT
        log.error("fatal: %s", exc)
        return EXIT_FATAL_ERROR
