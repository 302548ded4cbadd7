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
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pptpkit.auth.secrets import PppSecretsFile, SecretsProvider, StaticSecrets
from pptpkit.compat.pppdopts import PppdOptions, parse_pppd_argv
from pptpkit.errors import (
    NOT_PERMITTED_MESSAGE,
    ConfigError,
    ExitStatus,
    PptpkitError,
    is_not_permitted,
    os_error_text,
)
from pptpkit.io.dataplane import TunDataPlane, link_local
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.link import PppLink, outcome_text
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.pty import FdStream, set_raw
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    Ipv6Down,
    LinkDown,
    LinkParameters,
    LinkUp,
    SessionEvent,
    SessionRole,
)
from pptpkit.vpn.hooks import HookContext, HookKind, HookRunner, hook_argv, hook_env, runnable

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
#: Where the pid files go (pppd's /var/run; tests point it elsewhere).
ENV_RUN: Final = "PPTPKIT_PPP_RUN"
DEFAULT_RUN: Final = "/var/run"
DEFAULT_ETC: Final = "/etc/ppp"
#: pppd.h exit statuses that do not come from the session itself.
EXIT_FATAL_ERROR: Final = int(ExitStatus.FATAL)
EXIT_OPTION_ERROR: Final = int(ExitStatus.USAGE)
EXIT_NOT_ROOT: Final = int(ExitStatus.NOT_PERMITTED)
EXIT_USER_REQUEST: Final = int(ExitStatus.USER_REQUEST)
#: pppd's status when the pty command could not be run.
EXIT_PTY_FAILED: Final = 9


@dataclass(slots=True)
class PppRun:
    """What :func:`run` needs, resolved from argv and the environment."""

    options: PppdOptions
    secrets: SecretsProvider | None
    etc_dir: str
    hostname: str
    #: pppd's DEVICE and the scripts' tty argument: our terminal ("" on a socketpair).
    device: str = ""
    #: pppd's CALL_FILE: the NAME of ``call NAME``.
    call_file: str | None = None


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
    peers = os.path.join(etc, "peers") + os.sep
    call_file = next((os.path.basename(f) for f in opts.files if f.startswith(peers)), None)
    device = ""
    with contextlib.suppress(OSError):
        device = os.ttyname(0)
    return PppRun(options=opts, secrets=secrets, etc_dir=etc, hostname=socket.gethostname(), device=device,
                  call_file=call_file)


def _script_path(run: PppRun, name: str) -> str | None:
    """pppd's script ``name`` (ip-up ...): its ``*-script`` option, else ``ETC/name``."""
    override = getattr(run.options, f"{name.replace('-', '_')}_script", None)
    return override if isinstance(override, str) else os.path.join(run.etc_dir, name)


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
    """The host-side options a pppd applies when the link comes up: defaultroute (and
    replacedefaultroute), proxyarp, usepeerdns, the pid files.  Everything is undone at detach
    (routes through the TUN go with it; a replaced default route is put back)."""

    def __init__(self, run: PppRun, runner: HookRunner | None = None) -> None:
        self.run = run
        self.runner = runner
        #: Set by the caller once the link exists: its counters go to ip-down.
        self.link: PppLink | None = None
        self._up: tuple[str, LinkUp, float] | None = None
        self.proxy: tuple[str, int] | None = None
        self.resolv: str | None = None
        self.replaced: tuple[str | None, int | None] | None = None
        self.pidfiles: list[str] = []
        #: The link-local pair ipv6-up ran with (None: IPV6CP is not up, or no script ran).
        self._ipv6: tuple[str, str] | None = None

    async def hook(self, ifname: str, up: LinkUp, nc: NetConfig) -> None:
        opts = self.run.options
        if opts.defaultroute:
            defaults = [r for r in await nc.routes() if r[0] == "0.0.0.0/0"]
            if defaults and opts.replacedefaultroute:
                _, gateway, oif = defaults[0]
                await nc.delete_route("0.0.0.0/0", gateway=gateway)
                self.replaced = (gateway, oif)
                await nc.add_route("0.0.0.0/0", dev=ifname)
                log.info("default route through %s (replacing the one via %s)", ifname,
                         gateway or f"dev index {oif}")
            elif defaults:
                log.warning("defaultroute: not replacing the existing default route %s (add "
                            "replacedefaultroute to replace it)",
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
        self._write_pidfiles(ifname)
        self._up = (ifname, up, asyncio.get_running_loop().time())
        self._script(HookKind.IP_UP, ifname, up)
        if up.local_ipv6_id is not None and up.peer_ipv6_id is not None:
            # IPV6CP came up before IPCP: its addresses went on with the interface.
            await self.ipv6_up(ifname, up.local_ipv6_id, up.peer_ipv6_id)

    async def ipv6_up(self, ifname: str, local_id: bytes, peer_id: bytes) -> None:
        """pppd's ipv6-up: IPV6CP is up and the link-local addresses are on the interface."""
        if self._up is None or self._ipv6 is not None:
            return
        self._ipv6 = (link_local(local_id), link_local(peer_id))
        self._script(HookKind.IPV6_UP, ifname, self._up[1], addresses=self._ipv6)

    def ipv6_down(self) -> None:
        """pppd's ipv6-down: IPV6CP went down, alone or with the link."""
        addresses, self._ipv6 = self._ipv6, None
        if addresses is not None and self._up is not None:
            self._script(HookKind.IPV6_DOWN, self._up[0], self._up[1], addresses=addresses)

    async def pre_up(self, ifname: str, up: LinkUp, nc: NetConfig) -> None:
        """pppd's ip-pre-up: the interface has its addresses and is not up yet; pppd waits for
        this one (a script may set the interface up first), so we do too, within the timeout."""
        path = _script_path(self.run, "ip-pre-up")
        if self.runner is None or not runnable(path):
            return
        assert path is not None
        ctx = self._context(ifname, up)
        task = self.runner.submit("pre", "ppp", HookKind.IP_UP, hook_argv(path, ctx),
                                  self._env(HookKind.IP_UP, ctx, up))
        if task is not None:
            await task

    def _context(self, ifname: str, up: LinkUp, *, down: bool = False) -> HookContext:
        opts = self.run.options
        connect_time = bytes_sent = bytes_rcvd = None
        if down and self._up is not None and self.link is not None:
            connect_time = int(asyncio.get_running_loop().time() - self._up[2])
            bytes_sent, bytes_rcvd = self.link.stats.octets_out, self.link.stats.octets_in
        return HookContext(
            ifname=ifname, local=str(up.local_address), remote=str(up.peer_address),
            device=self.run.device, speed=opts.speed or 115200, ipparam=opts.ipparam,
            # pppd's PEERNAME: the name the peer authenticated with, so only when we checked it.
            peername=(up.username or None) if opts.role is SessionRole.SERVER else None,
            linkname=opts.linkname, call_file=self.run.call_file,
            dns=tuple(str(d) for d in up.dns_servers) if opts.usepeerdns else (),
            connect_time=connect_time, bytes_sent=bytes_sent, bytes_rcvd=bytes_rcvd)

    def _env(self, kind: HookKind, ctx: HookContext, up: LinkUp) -> dict[str, str]:
        env = hook_env(kind, ctx)
        if self.run.options.usepeerdns and up.dns_servers:
            env["USEPEERDNS"] = "1"  # pppd's: the scripts that install resolv.conf look for it
        return env

    def _script(self, kind: HookKind, ifname: str, up: LinkUp, *,
                addresses: tuple[str, str] | None = None) -> None:
        """``addresses``: the link-local pair of the ``ipv6-*`` scripts (else IPCP's)."""
        path = _script_path(self.run, kind.value)
        if self.runner is None or not runnable(path):
            return
        assert path is not None
        ctx = self._context(ifname, up, down=kind.down)
        if addresses is not None:
            ctx = replace(ctx, local=addresses[0], remote=addresses[1])
        # One chain: pppd runs its scripts one after the other.
        self.runner.submit("ip", "ppp", kind, hook_argv(path, ctx), self._env(kind, ctx, up))

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

    def _write_pidfiles(self, ifname: str) -> None:
        """pppd's: ``RUN/IFNAME.pid`` (the pid) and, with linkname, ``RUN/ppp-NAME.pid`` (the pid
        and the interface), which ``poff`` and scripts read."""
        run_dir = os.environ.get(ENV_RUN, DEFAULT_RUN)
        files = [(os.path.join(run_dir, f"{ifname}.pid"), f"{os.getpid()}\n")]
        if self.run.options.linkname is not None:
            files.append((os.path.join(run_dir, f"ppp-{self.run.options.linkname}.pid"),
                          f"{os.getpid()}\n{ifname}\n"))
        for path, text in files:
            try:
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
                self.pidfiles.append(path)
            except OSError as exc:
                log.warning("cannot write %s: %s", path, os_error_text(exc))

    async def undo(self, ifname: str) -> None:
        if self._up is not None:
            # The interface is gone by now (pppd keeps its unit until the script exits); the
            # script still gets the addresses, the counters and the connect time.
            up_ifname, up, _ = self._up
            self._script(HookKind.IP_DOWN, up_ifname, up)
            self.ipv6_down()
            self._up = None
        for path in self.pidfiles:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.pidfiles.clear()
        if self.replaced is not None:
            gateway, oif = self.replaced
            self.replaced = None
            nc = await NetConfig().open()
            try:
                if oif is not None:
                    await nc.add_route("0.0.0.0/0", dev=await nc.link_name(oif), gateway=gateway)
                log.info("default route via %s restored", gateway or f"dev index {oif}")
            except NetConfigError as exc:
                log.warning("cannot restore the default route via %s: %s", gateway, exc)
            finally:
                await nc.close()
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


async def _run_link(ppp: PppRun, line: FdStream, stop: asyncio.Event,
                    on_up: Callable[[], None] | None = None,
                    runner: HookRunner | None = None) -> tuple[LinkDown | None, bool]:
    """One link on ``line`` until it ends or ``stop`` is set: (how it ended, whether it came
    up).  None when the options cannot make a session (logged)."""
    opts = ppp.options
    try:
        config = opts.session_config(hostname=ppp.hostname, secrets=ppp.secrets)
    except ConfigError as exc:
        log.error("%s", exc)
        return None, False
    host = _HostSetup(ppp, runner)
    ifname = opts.ifname or (f"ppp{opts.unit}" if opts.unit is not None else "ppp%d")
    plane = TunDataPlane(ifname, mtu=opts.mtu, hook=host.hook, on_detach=host.undo, pre_hook=host.pre_up,
                         ipv6_hook=host.ipv6_up)
    link_box: list[PppLink] = []

    def frame_in(frame: bytes) -> None:
        if link_box:
            link_box[0].frame_received(frame)

    def line_closed(exc: BaseException | None) -> None:
        if link_box:
            link_box[0].lower_down(f"line closed{f' ({exc})' if exc else ''}")

    bridge = HdlcStreamBridge(line, on_frame=frame_in, on_close=line_closed)
    mppe_seen: list[str] = []
    def on_event(lk: PppLink, event: SessionEvent) -> None:
        _log_event(lk, event, mppe_seen)
        if isinstance(event, Ipv6Down):
            host.ipv6_down()
        if isinstance(event, LinkUp) and on_up is not None:
            on_up()  # updetach: after the link's lines were said on the terminal

    link = PppLink(config, bridge, plane, name="ppp", on_event=on_event)
    link_box.append(link)
    host.link = link
    log.info("pptpkit ppp: %s role, %s, %s", config.role.value, config.mppe.describe(),
             f"remotenumber {opts.remotenumber}" if opts.remotenumber else "no remote number")
    if opts.ipparam is not None:
        log.info("ipparam %s", opts.ipparam)
    for notice in opts.notices:
        log.warning("%s", notice)
    if opts.dump:
        for dumped in opts.dump_lines():
            log.info("%s", dumped)

    async def closer() -> None:
        await stop.wait()
        link.close("User request")

    stopper = asyncio.ensure_future(closer())
    bridge.start()
    link.start()
    try:
        down: LinkDown = await link.closed
        if stop.is_set() and not link.session.finished:
            down = await link.aclose()
    finally:
        stopper.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(line.drain(), 1.0)
        bridge.close()
    return down, link.up_at is not None


def _signals(stop: asyncio.Event, signalled: list[int]) -> list[int]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        log.info("terminating on signal %d", sig)
        stop.set()

    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    return installed


def _unsignal(installed: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)


async def run(ppp: PppRun, *, stream: FdStream | None = None, on_up: Callable[[], None] | None = None) -> int:
    """Run the link: on ``stream`` (default: fd 0/1) once, or, with the ``pty`` option, over
    the command's line, redialled while ``persist`` says so; returns pppd's exit status."""
    if ppp.options.pty is not None and stream is None:
        return await _run_dialled(ppp, on_up)
    line = stream or _open_line()
    saved_tty: list[Any] | None = None
    if stream is None and os.isatty(0):
        with contextlib.suppress(termios.error):
            saved_tty = termios.tcgetattr(0)
            set_raw(0)
    stop = asyncio.Event()
    signalled: list[int] = []
    installed = _signals(stop, signalled)
    runner = HookRunner()
    try:
        down, _ = await _run_link(ppp, line, stop, on_up, runner)
    finally:
        _unsignal(installed)
        await runner.aclose()  # ip-down runs to its end (bounded by the timeout), as with pppd
        if saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSANOW, saved_tty)
    if down is None:
        return EXIT_OPTION_ERROR
    if signalled:
        return EXIT_USER_REQUEST
    return down.exit_status


class _PtyCommand:
    """pppd's ``pty`` option: the command runs on the master side of a new pseudo-terminal
    (its stdin and stdout), the link on the slave, in raw mode.  The command is ended (SIGTERM
    to its process group, then SIGKILL) when the link is."""

    #: Bytes of the command's stderr kept for one log line; longer lines are cut.
    MAX_LINE: Final = 1024

    def __init__(self, command: str) -> None:
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        #: The pseudo-terminal our side uses (pppd's DEVICE).
        self.device = ""
        self._err = -1
        self._pending = b""

    def start(self) -> FdStream:
        master, slave = os.openpty()
        err_read, err_write = os.pipe()
        try:
            set_raw(slave)
            # Its stderr comes to our log, line by line, as pppd logs what its scripts say; and
            # after we detach nothing of it is left on the user's terminal.
            self.proc = subprocess.Popen(["/bin/sh", "-c", self.command], stdin=master, stdout=master,
                                         stderr=err_write, close_fds=True, start_new_session=True)
        except BaseException:
            for fd in (slave, err_read):
                os.close(fd)
            raise
        finally:
            os.close(master)
            os.close(err_write)
        os.set_blocking(err_read, False)
        self._err = err_read
        with contextlib.suppress(OSError):
            self.device = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(err_read, self._read_stderr)
        log.info("pty command started (pid %d): %s", self.proc.pid, self.command)
        return FdStream(slave)

    def _read_stderr(self) -> None:
        try:
            data = os.read(self._err, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_stderr()
            return
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()[: self.MAX_LINE]
        for line in lines:
            if line.strip():
                log.info("pty: %s", line[: self.MAX_LINE].decode(errors="replace").rstrip())

    def _close_stderr(self) -> None:
        if self._err >= 0:
            asyncio.get_running_loop().remove_reader(self._err)
            os.close(self._err)
            self._err = -1
            if self._pending.strip():
                log.info("pty: %s", self._pending.decode(errors="replace").rstrip())
            self._pending = b""

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = asyncio.get_running_loop().time() + wait
            while proc.poll() is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
        if proc.returncode not in (None, 0, -signal.SIGTERM):
            log.info("pty command exited with status %s", proc.returncode)
        self._close_stderr()


async def _run_dialled(ppp: PppRun, on_up: Callable[[], None] | None) -> int:
    """pppd with ``pty``: dial, and with ``persist`` dial again after ``holdoff`` seconds, until
    ``maxfail`` attempts in a row failed before the link came up (0: never give up)."""
    opts = ppp.options
    assert opts.pty is not None
    stop = asyncio.Event()
    signalled: list[int] = []
    installed = _signals(stop, signalled)
    failures = 0
    status = EXIT_FATAL_ERROR
    runner = HookRunner()
    try:
        while True:
            command = _PtyCommand(opts.pty)
            try:
                line = command.start()
            except OSError as exc:
                log.error("cannot start the pty command: %s", os_error_text(exc))
                return EXIT_PTY_FAILED
            ppp.device = command.device
            try:
                down, was_up = await _run_link(ppp, line, stop, on_up, runner)
            finally:
                await command.stop()
            if down is None:
                return EXIT_OPTION_ERROR
            status = down.exit_status
            if signalled:
                return EXIT_USER_REQUEST
            if not opts.persist:
                return status
            failures = 0 if was_up else failures + 1
            if opts.maxfail and failures >= opts.maxfail:
                log.info("%d connection attempts in a row failed (maxfail); giving up", failures)
                return status
            log.info("waiting %d s before dialling again (holdoff)", opts.holdoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), opts.holdoff)
            if stop.is_set():
                return EXIT_USER_REQUEST
    finally:
        _unsignal(installed)
        await runner.aclose()


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


def _detach_mode(opts: PppdOptions) -> str | None:
    """pppd's rule: with a device of its own (here: a ``pty`` command) it goes to the
    background at once, unless ``nodetach``; ``updetach`` waits until the link is up.  On its
    standard input (pptpd's program) it never forks."""
    if opts.pty is None or opts.detach == "never":
        return None
    return "up" if opts.detach == "up" else "now"


def _detach(mode: str) -> Callable[[], None] | None:
    """Fork into the background (before any event loop exists).  The parent exits here: at
    once, or with ``"up"`` when the child says the link is up (0) or exits first (its status).
    Returns, in the child, what to call when the link is up."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(write_end)
        if mode == "now":
            os._exit(0)
        with os.fdopen(read_end, "rb") as pipe:
            said = pipe.read(1)
        if said == b"U":
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(read_end)
    os.setsid()
    if mode == "now":
        os.close(write_end)
        _to_background_logging()
        _close_stdio()
        return None
    told = [False]

    def link_up() -> None:
        if told[0]:
            return
        told[0] = True
        with contextlib.suppress(OSError):
            os.write(write_end, b"U")
            os.close(write_end)
        # Until now the terminal saw every line, as with pppd's updetach.
        _to_background_logging()
        _close_stdio()

    return link_up


def _close_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _to_background_logging() -> None:
    """A detached pppd logs to syslog (besides a logfile, if any)."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.StreamHandler)
                     or isinstance(h, logging.FileHandler)]
    with contextlib.suppress(OSError):
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("pptpkit-ppp[%(process)d]: %(message)s"))
        root.addHandler(handler)
    if not root.handlers:
        root.addHandler(logging.NullHandler())


def main(argv: Sequence[str]) -> int:
    """``pptpkit ppp [pppd options...]``; returns pppd's exit status."""
    try:
        ppp = load_options(argv)
    except ConfigError as exc:
        print(f"pptpkit ppp: {exc}", file=sys.stderr)
        return EXIT_OPTION_ERROR
    _setup_logging(ppp.options)
    on_up: Callable[[], None] | None = None
    mode = _detach_mode(ppp.options)
    if mode is not None:
        on_up = _detach(mode)
    try:
        return asyncio.run(run(ppp, on_up=on_up))
    except KeyboardInterrupt:
        return EXIT_USER_REQUEST
    except (PptpkitError, NetConfigError, OSError) as exc:
        if is_not_permitted(exc):
            # Every pptpkit command words this failure the same; pppd's status is 3 as well.
            print(f"pptpkit ppp: {NOT_PERMITTED_MESSAGE}: {exc}", file=sys.stderr, flush=True)
            return EXIT_NOT_ROOT
        log.error("fatal: %s", exc)
        return EXIT_FATAL_ERROR
