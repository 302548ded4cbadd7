"""pppd-compatible hook scripts (``ip-up``, ``ip-down``, ``ipv6-up``, ``ipv6-down``).

Operators have years of ``/etc/ppp/ip-up`` scripts (firewall rules, routes, shaping, logging
per session); they keep working when the PPP sessions are ours instead of pppd's, because the
scripts get what pppd gives them:

* arguments ``interface-name tty-device speed local-address remote-address ipparam``, where
  the addresses are IPv4 for ``ip-*`` and the link-local IPv6 addresses for ``ipv6-*``;
  ``ipparam`` is left out (five arguments) when none is set, as pppd does;
* an environment that is empty but for pppd's variables (``IFNAME``, ``DEVICE``, ``SPEED``,
  ``IPLOCAL``/``IPREMOTE`` or ``LLLOCAL``/``LLREMOTE``, ``PEERNAME`` when the peer
  authenticated, ``ORIG_UID``, ``PPPLOGNAME``, ``PPPD_PID``, ``LINKNAME``/``CALL_FILE`` when
  known, ``DNS1``/``DNS2`` when the peer sent them, and at ``*-down`` ``CONNECT_TIME``,
  ``BYTES_SENT``, ``BYTES_RCVD``).  One addition: a fixed ``PATH``, so a script need not set
  one; scripts written for pppd set their own, which still wins.

:func:`hook_argv` and :func:`hook_env` are pure: the built-in server (:mod:`pptpkit.ops.hooks`)
and the client fill a :class:`HookContext` from what they know and get the same result.

:class:`HookRunner` runs them.  Differences from pppd, each deliberate:

* pppd sends the scripts' output to /dev/null; we read it (bounded by ``max_output``) into
  the log, because a script that fails silently is the commonest hook problem.  Only what the
  script writes before it exits is read: a daemon it starts in the background and that keeps
  the pipe open does not hold the hook up (it should redirect its own output).
* pppd waits for no script; we do not either (the event loop never blocks), but a script still
  running after ``timeout`` seconds is killed - SIGTERM to its whole process group (it runs in
  a session of its own), SIGKILL ``kill_grace`` seconds later - because one hanging script per
  session would otherwise pile up processes for ever.
* At most ``max_running`` scripts run at once; the others wait in a queue of at most
  ``max_queued`` (beyond it a hook is dropped, counted and logged), so a login storm cannot
  fork thousands of processes.

Ordering, as pppd: the hooks of one *chain* (the caller uses one per session and address
family) run one after the other, so an ``ip-down`` waits for that session's ``ip-up`` to
finish.  :meth:`HookRunner.aclose` waits for every hook already submitted (each bounded by the
timeout), so a shutdown still runs the ``ip-down`` of the sessions it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import pwd
import signal
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_HOOK_TIMEOUT",
    "DEFAULT_KILL_GRACE",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_RUNNING",
    "DEFAULT_SCRIPTS",
    "HOOK_PATH",
    "HookContext",
    "HookKind",
    "HookResult",
    "HookRunner",
    "hook_argv",
    "hook_env",
    "runnable",
]

log = logging.getLogger(__name__)

DEFAULT_HOOK_TIMEOUT: Final = 30.0
DEFAULT_KILL_GRACE: Final = 2.0
DEFAULT_MAX_RUNNING: Final = 64
DEFAULT_MAX_QUEUED: Final = 4096
#: Bytes of a script's output kept for the log; the rest is read and counted.
DEFAULT_MAX_OUTPUT: Final = 4096
#: The PATH scripts get (pppd passes none; see the module docstring).
HOOK_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Seconds to read what is left in the pipe once the script has exited.
_OUTPUT_LINGER: Final = 0.2


class HookKind(enum.Enum):
    IP_UP = "ip-up"
    IP_DOWN = "ip-down"
    IPV6_UP = "ipv6-up"
    IPV6_DOWN = "ipv6-down"

    @property
    def down(self) -> bool:
        return self in (HookKind.IP_DOWN, HookKind.IPV6_DOWN)

    @property
    def ipv6(self) -> bool:
        return self in (HookKind.IPV6_UP, HookKind.IPV6_DOWN)


#: pppd's scripts.
DEFAULT_SCRIPTS: Final[Mapping[HookKind, str]] = {kind: f"/etc/ppp/{kind.value}" for kind in HookKind}


@dataclass(frozen=True, slots=True, kw_only=True)
class HookContext:
    """What one script is told about the link.

    ``local``/``remote``: IPv4 addresses for ``ip-*``, link-local IPv6 addresses for
    ``ipv6-*``.  ``device``: the tty (pppd's ``DEVICE``; "" where there is none).
    ``ipparam``: None leaves the argument out.  ``peername``: the name the peer authenticated
    with (None: it did not).  ``connect_time``, ``bytes_sent``, ``bytes_rcvd``: ``*-down`` only.
    ``uid``/``logname``/``pid``: who runs the PPP side (default: this process).
    """

    ifname: str
    local: str
    remote: str
    device: str = ""
    speed: int = 115200
    ipparam: str | None = None
    peername: str | None = None
    linkname: str | None = None
    call_file: str | None = None
    dns: tuple[str, ...] = ()
    connect_time: int | None = None
    bytes_sent: int | None = None
    bytes_rcvd: int | None = None
    uid: int | None = None
    logname: str | None = None
    pid: int | None = None


def hook_argv(path: str, ctx: HookContext) -> list[str]:
    """The script's argv (``path`` first), as pppd builds it."""
    argv = [path, ctx.ifname, ctx.device, str(ctx.speed), ctx.local, ctx.remote]
    if ctx.ipparam is not None:
        argv.append(ctx.ipparam)
    return argv


def _logname(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def hook_env(kind: HookKind, ctx: HookContext) -> dict[str, str]:
    """The script's whole environment (nothing of ours leaks into it)."""
    uid = os.getuid() if ctx.uid is None else ctx.uid
    env = {
        "PATH": HOOK_PATH,
        "IFNAME": ctx.ifname,
        "DEVICE": ctx.device,
        "SPEED": str(ctx.speed),
        "ORIG_UID": str(uid),
        "PPPLOGNAME": ctx.logname if ctx.logname is not None else _logname(uid),
        "PPPD_PID": str(os.getpid() if ctx.pid is None else ctx.pid),
    }
    if kind.ipv6:
        env["LLLOCAL"], env["LLREMOTE"] = ctx.local, ctx.remote
    else:
        env["IPLOCAL"], env["IPREMOTE"] = ctx.local, ctx.remote
    if ctx.peername is not None:
        env["PEERNAME"] = ctx.peername
    if ctx.linkname is not None:
        env["LINKNAME"] = ctx.linkname
    if ctx.call_file is not None:
        env["CALL_FILE"] = ctx.call_file
    for i, server in enumerate(ctx.dns[:2], 1):
        env[f"DNS{i}"] = server
    if kind.down:
        env["CONNECT_TIME"] = str(ctx.connect_time or 0)
        env["BYTES_SENT"] = str(ctx.bytes_sent or 0)
        env["BYTES_RCVD"] = str(ctx.bytes_rcvd or 0)
    return env


def runnable(path: str | None) -> bool:
    """pppd runs a script only if it exists and is executable; it is not an error otherwise."""
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


@dataclass(frozen=True, slots=True)
class HookResult:
    """How one script ended.  ``status``: exit status, -N for signal N, None if it never ran
    (could not be started, or dropped from a full queue).  ``output``: the first bytes of its
    output; ``output_dropped``: bytes beyond them."""

    status: int | None
    timed_out: bool = False
    output: bytes = b""
    output_dropped: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out


class HookRunner:
    """Runs hook scripts off the event loop's critical path (see the module docstring).

    ``label`` names the session in log lines (``[label] ip-up ...``)."""

    def __init__(self, *, timeout: float = DEFAULT_HOOK_TIMEOUT, max_running: int = DEFAULT_MAX_RUNNING,
                 max_queued: int = DEFAULT_MAX_QUEUED, max_output: int = DEFAULT_MAX_OUTPUT,
                 kill_grace: float = DEFAULT_KILL_GRACE) -> None:
        if timeout <= 0 or max_running < 1 or max_queued < 1 or max_output < 0 or kill_grace < 0:
            raise ValueError("hook runner limits must be positive")
        self.timeout = timeout
        self.max_running = max_running
        self.max_queued = max_queued
        self.max_output = max_output
        self.kill_grace = kill_grace
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: set[asyncio.Task[HookResult]] = set()
        self._chains: dict[Hashable, asyncio.Task[HookResult]] = {}
        self.running = 0
        self.started = 0
        self.failed = 0
        self.timed_out = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Hooks submitted and not finished (running or waiting)."""
        return len(self._tasks)

    def submit(self, chain: Hashable, label: str, kind: HookKind, argv: list[str],
               env: dict[str, str]) -> asyncio.Task[HookResult] | None:
        """Run ``argv`` after the hooks already submitted on ``chain``; None if the queue is
        full (the hook is dropped and logged)."""
        if len(self._tasks) >= self.max_queued:
            self.dropped += 1
            log.warning("[%s] %s %s not run: %d hooks already waiting", label, kind.value, argv[0],
                        len(self._tasks))
            return None
        previous = self._chains.get(chain)
        task = asyncio.get_running_loop().create_task(self._run_after(previous, label, kind, argv, env))
        self._tasks.add(task)
        self._chains[chain] = task

        def done(t: asyncio.Task[HookResult]) -> None:
            self._tasks.discard(t)
            if self._chains.get(chain) is t:
                del self._chains[chain]

        task.add_done_callback(done)
        return task

    async def aclose(self) -> None:
        """Wait for every hook submitted (each is bounded by the timeout)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run_after(self, previous: asyncio.Task[HookResult] | None, label: str, kind: HookKind,
                         argv: list[str], env: dict[str, str]) -> HookResult:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        async with self._slots:
            self.running += 1
            try:
                result = await self._run(argv, env)
            finally:
                self.running -= 1
        self._report(label, kind, argv[0], result)
        return result

    def _report(self, label: str, kind: HookKind, path: str, result: HookResult) -> None:
        name = f"{kind.value} {path}"
        if result.error is not None:
            self.failed += 1
            log.warning("[%s] %s: cannot run: %s", label, name, result.error)
            return
        text = result.output.decode(errors="replace").rstrip()
        if text:
            more = f" ({result.output_dropped} more bytes not shown)" if result.output_dropped else ""
            for line in text.splitlines():
                log.info("[%s] %s: %s", label, kind.value, line)
            if more:
                log.info("[%s] %s:%s", label, kind.value, more)
        if result.timed_out:
            self.timed_out += 1
            self.failed += 1
            log.warning("[%s] %s: still running after %g s: killed", label, name, self.timeout)
        elif result.status is not None and result.status < 0:
            self.failed += 1
            log.warning("[%s] %s: killed by signal %d", label, name, -result.status)
        elif result.status:
            self.failed += 1
            log.warning("[%s] %s: exit status %d", label, name, result.status)
        else:
            log.debug("[%s] %s: done", label, name)

    async def _run(self, argv: list[str], env: dict[str, str]) -> HookResult:
        loop = asyncio.get_running_loop()
        try:
            transport, output = await loop.subprocess_exec(
                lambda: _Output(loop, self.max_output), *argv, env=env, cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # A session of its own: on timeout the whole group is killed, children too.
                start_new_session=True, close_fds=True)
        except OSError as exc:
            return HookResult(None, error=exc.strerror or str(exc))
        self.started += 1
        timed_out = False
        try:
            # The script's exit, not its pipe's end: a background child may hold the pipe.
            await asyncio.wait_for(asyncio.shield(output.exited), self.timeout)
        except TimeoutError:
            timed_out = True
            await self._kill(transport.get_pid(), output.exited)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output.eof), _OUTPUT_LINGER)
            transport.close()
        return HookResult(transport.get_returncode(), timed_out=timed_out, output=bytes(output.kept),
                          output_dropped=output.dropped)

    async def _kill(self, pid: int, exited: asyncio.Future[None]) -> None:
        """SIGTERM to the script's process group; after ``kill_grace`` SIGKILL to whatever of
        the group is left (the group's ID is not reused while a member lives, so this cannot
        hit a stranger)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), self.kill_grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        await exited


class _Output(asyncio.SubprocessProtocol):
    """The script's output (stdout and stderr on one pipe), the first ``limit`` bytes kept;
    ``exited`` resolves when the process exits, ``eof`` when the pipe closes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        room = max(0, self.limit - len(self.kept))
        self.kept.extend(data[:room])
        self.dropped += max(0, len(data) - room)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
