"""``pptpkit server --workers N``: the supervisor process and each worker's side of it.

The supervisor runs no PPTP itself.  It starts N workers - ``python -m pptpkit`` with the same
command line, told who they are through :data:`WORKER_ENV` (an index, the count and the file
descriptor of their end of a socketpair) - and then:

* keeps the :class:`~pptpkit.vpn.workers.Ledger` (limits, connection limits, pool, static
  addresses) and answers
  the workers' requests on the socketpairs, one at a time;
* owns the control socket: each request line goes to every worker, which answers it from its own
  sessions as a single server would (:func:`pptpkit.ops.ctl.handle_line`), and the answers are
  merged (:func:`merge_ctl`): the sessions of all, a kill wherever the session lives, summed
  counters;
* owns the metrics endpoint: each scrape asks every worker for its exposition text and sums the
  samples (:func:`merge_metrics`), so Prometheus sees one server;
* counts failed logins for the whole server (:class:`~pptpkit.vpn.guard.AuthGuard`, fed by
  every worker) and sends each lockout it starts to every worker;
* sends RADIUS Accounting-On/Off once for the whole server (workers account their own sessions
  without them), and the Stop of every session of a worker that died, from the last record the
  worker reported for it (:func:`pptpkit.ops.accounting.lost_stop_record`);
* forwards SIGHUP (reload the secrets) to every worker, and on SIGTERM/SIGINT stops them all and
  waits for their sessions to end;
* starts worker 0 alone and the others once it is ready, so that what keeps the server from
  starting (no privileges, the port taken) is said once, by one worker, and the server exits
  with that worker's status; a worker that exits before all are ready is not restarted;
* restarts a worker that dies, after forgetting everything it held in the ledger - its sessions
  died with it, so their addresses return to the pool at once.  A worker that keeps dying (more
  than :data:`MAX_RESTARTS` within :data:`RESTART_WINDOW` seconds) stops the server: a crash
  loop is a bug or a broken host, not something to hide.

Why separate processes started afresh and not ``fork()``: the supervisor's event loop is
running when a worker must be restarted, and a forked child would inherit the loop, its
sockets and its signal handlers; a new interpreter inherits nothing but the socketpair.

Each worker (:class:`WorkerSide`) listens with ``SO_REUSEPORT`` on the same TCP port, opens its
own raw GRE socket with the BPF filter of its call-ID partition (:mod:`pptpkit.gre.partition`),
hands out call IDs only from it, and writes no pidfile and no ``sd_notify``: the supervisor is
the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pptpkit.control import CallIdAllocator
from pptpkit.errors import ConfigError, ExitStatus
from pptpkit.gre.partition import CallIdRange, gre_partition_filter, partition
from pptpkit.io.gresock import GreSocket
from pptpkit.io.sdnotify import notify
from pptpkit.ops.ctl import CtlError, CtlServer, ErrorKind, encode, error_answer, parse_request
from pptpkit.ops.metrics import MAX_REQUEST_HEAD, REQUEST_TIMEOUT, http_response
from pptpkit.vpn.workers import Ledger, LedgerClient, Port, PortClosed

if TYPE_CHECKING:
    from pptpkit.ops import ServerExtension
    from pptpkit.ops.accounting import RadiusAccounting, Status
    from pptpkit.ops.dae import DaeForwarder, DynamicAuthorization
    from pptpkit.ops.metrics import Metrics
    from pptpkit.pptp.server import PptpServer
    from pptpkit.radius.settings import RadiusSetup
    from pptpkit.vpn.guard import AuthGuard
    from pptpkit.vpn.server import BuiltinSessions

__all__ = [
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "WORKER_ENV",
    "Supervisor",
    "WorkerSide",
    "WorkerSlot",
    "merge_ctl",
    "merge_metrics",
    "worker_slot",
]

log = logging.getLogger(__name__)

#: ``index/count/fd`` in a worker's environment (removed at once: hook scripts and PPP programs
#: must not think they are workers).
WORKER_ENV: Final = "PPTPKIT_WORKER"
#: Restarts of one worker within :data:`RESTART_WINDOW` seconds before the server gives up.
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0
#: Seconds a worker has to start listening.
READY_TIMEOUT: Final = 30.0
#: Seconds workers have to end their sessions on SIGTERM before they are killed.
STOP_TIMEOUT: Final = 20.0
#: Seconds to wait for a worker's ctl or metrics answer.
ASK_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int
    count: int
    fd: int

    @property
    def call_ids(self) -> CallIdRange:
        return partition(self.index, self.count)


def worker_slot(environ: dict[str, str] | None = None) -> WorkerSlot | None:
    """This process's slot if a supervisor started it (and the variable is then removed)."""
    env = os.environ if environ is None else environ
    text = env.pop(WORKER_ENV, None)
    if text is None:
        return None
    try:
        index, count, fd = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"{WORKER_ENV}={text!r} is not INDEX/COUNT/FD") from None
    partition(index, count)  # checks both
    return WorkerSlot(index, count, fd)


# -- merging the workers' answers -----------------------------------------------------------------


def _sum(values: list[Any]) -> Any:
    """Numbers summed, dicts merged key by key; anything else: the first that is not None."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        return present[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return sum(present)
    if all(isinstance(v, dict) for v in present):
        keys: dict[str, None] = {}
        for v in present:
            keys.update(dict.fromkeys(v))
        return {k: _sum([v.get(k) for v in present]) for k in keys}
    return present[0]


def merge_ctl(line: bytes, answers: Sequence[dict[str, Any] | None]) -> bytes:
    """One control answer line from the workers' answers to ``line`` (None: a worker that did
    not answer - it is restarting; what it had is gone with it)."""
    try:
        request = parse_request(line)
    except CtlError as exc:
        return encode(error_answer(exc.kind, str(exc)))
    got = [a for a in answers if a is not None]
    if not got:
        return encode(error_answer(ErrorKind.INTERNAL, "no worker answered"))
    ok = [a for a in got if a.get("ok")]
    errors = [a for a in got if not a.get("ok")]
    cmd = request.cmd
    if cmd == "sessions":
        # Which worker holds each session: the one to look at in the log.
        sessions = [{**s, "worker": i} for i, a in enumerate(answers)
                    if a is not None and a.get("ok") for s in a.get("sessions", [])]
        sessions.sort(key=lambda s: (s.get("started", 0), s.get("id", "")))
        return encode({"ok": True, "mode": "builtin", "sessions": sessions})
    if cmd == "show":
        return encode(ok[0] if ok else errors[0])
    if cmd == "kill":
        killed = [i for a in ok for i in a.get("killed", [])]
        return encode({"ok": True, "killed": killed} if killed else errors[0])
    if cmd == "reload":
        return encode(errors[0] if errors else ok[0])
    if not ok:
        return encode(errors[0])
    stats = _sum([a.get("stats") for a in ok])
    stats["workers"] = len(answers)
    stats["workers_answering"] = len(ok)
    return encode({"ok": True, "mode": "builtin", "stats": stats})


def merge_metrics(texts: Sequence[str], extra: str = "") -> bytes:
    """The workers' exposition texts as one: samples with the same name and labels summed
    (``*_created`` timestamps: the earliest), families in the order first seen; ``extra``
    (the supervisor's own families) appended."""
    families: dict[str, tuple[list[str], dict[str, float]]] = {}
    for text in texts:
        current: tuple[list[str], dict[str, float]] | None = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    current = families.setdefault(name, ([], {}))
                    if line not in current[0]:
                        current[0].append(line)
                continue
            key, _, value = line.rpartition(" ")
            if current is None or not key:
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            samples = current[1]
            if key in samples:
                name = key.split("{", 1)[0]
                old = samples[key]
                samples[key] = min(old, number) if name.endswith("_created") else old + number
            else:
                samples[key] = number
    out: list[str] = []
    for meta, samples in families.values():
        out += meta
        out += [f"{key} {_number(value)}" for key, value in samples.items()]
    return ("\n".join(out) + "\n" + extra).encode()


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e16 else f"{int(value)}.0"


# -- the worker's side ----------------------------------------------------------------------------


class _Prefix(logging.Filter):
    """``worker N:`` in front of every line of a worker, so one log tells them apart."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and not record.msg.startswith(self.prefix):
            record.msg = self.prefix + record.msg
        return True


class WorkerSide:
    """What makes a built-in server one worker of several: its call IDs and GRE filter, the
    ledger behind its sessions, and the supervisor's questions answered from its own state."""

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        self.port: Port | None = None
        self.gre: GreSocket | None = None
        self._sessions: BuiltinSessions | None = None
        self._server: PptpServer | None = None
        self._metrics: Metrics | None = None
        self._dae: DynamicAuthorization | None = None
        self._guard: AuthGuard | None = None
        prefix = _Prefix(slot.index)
        for handler in logging.getLogger().handlers:
            handler.addFilter(prefix)

    async def open(self, stop: asyncio.Event) -> None:
        """Connect to the supervisor; ``stop`` is set when it goes away (a worker never outlives
        its supervisor)."""
        self.port = Port(self._answer, self._notice)
        await self.port.open(socket.socket(fileno=self.slot.fd))
        self.port.closed.add_done_callback(lambda _: stop.set())

    def adopt(self, extensions: list[ServerExtension]) -> None:
        """The extensions as a worker runs them (before they start): no metrics endpoint of its
        own, accounting without Accounting-On/Off and every record told to the supervisor."""
        from pptpkit.ops.accounting import RadiusAccounting, encode_attributes
        from pptpkit.ops.dae import DynamicAuthorization
        from pptpkit.ops.metrics import Metrics

        for extension in extensions:
            if isinstance(extension, Metrics):
                extension.listen = None
            elif isinstance(extension, DynamicAuthorization):
                extension.forwarded = True
                self._dae = extension
            elif isinstance(extension, RadiusAccounting):
                extension.nas_records = False

                def told(status: Status, key: str, attributes: list[Any]) -> None:
                    if self.port is not None:
                        self.port.notify("acct", key=key, status=status.value,
                                         attrs=encode_attributes(attributes), at=time.time())

                extension.on_record = told

    def pptp_overrides(self) -> tuple[GreSocket, CallIdAllocator]:
        """This worker's raw GRE socket (filtered to its call IDs) and call-ID allocator."""
        part = self.slot.call_ids
        self.gre = GreSocket(bpf=gre_partition_filter(part))
        return self.gre, CallIdAllocator(low=part.allocatable_low, high=part.high)

    def attach(self, sessions: BuiltinSessions, server: PptpServer, metrics: Metrics | None,
               guard: AuthGuard | None = None) -> None:
        """Before the server starts: its sessions ask the ledger; with ``guard``, every login's
        outcome goes to the supervisor, and the locks it decides come back."""
        port = self.port
        assert port is not None
        ledger = LedgerClient(port)
        sessions.set_worker(self.slot.index, ledger)
        server.connection_gate = ledger
        self._sessions, self._server, self._metrics, self._guard = sessions, server, metrics, guard
        if guard is not None:
            guard.forward = lambda ok, source, user: port.notify("auth", ok=ok, source=source, user=user)

    def _notice(self, message: dict[str, Any]) -> None:
        if message.get("op") == "lock" and self._guard is not None:
            self._guard.impose(str(message.get("what")), str(message.get("key")),
                               float(message.get("seconds", 0)))

    def ready(self) -> None:
        if self.port is not None:
            self.port.notify("ready", pid=os.getpid())

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        from pptpkit.ops.ctl import BuiltinBackend, handle_line

        op = message.get("op")
        if op == "ctl" and self._sessions is not None and self._server is not None:
            line = str(message.get("line", "")).encode()
            backend = BuiltinBackend(self._sessions, self._server)
            return {"ok": True, "answer": json.loads(handle_line(line, backend))}
        if op == "metrics":
            text = "" if self._metrics is None else self._metrics.render().decode()
            return {"ok": True, "text": text}
        if op == "dae" and self._dae is not None:
            source = message.get("source") or ["", 0]
            return self._dae.decide_datagram(bytes.fromhex(str(message.get("data", ""))),
                                             (str(source[0]), int(source[1])))
        return {"ok": False, "why": f"not ready for {op!r}"}

    async def close(self) -> None:
        if self.gre is not None:
            self.gre.close()
        if self.port is not None:
            await self.port.close()


# -- the supervisor -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    port: Port | None = None
    ready: asyncio.Future[None] | None = None
    pid: int = 0
    starts: list[float] = dataclasses.field(default_factory=list)
    watcher: asyncio.Task[None] | None = None


class Supervisor:
    """Starts ``count`` workers running ``argv`` (the server's own command line, without the
    program name), keeps ``ledger``, serves ``ctl_socket`` and ``metrics`` for all of them."""

    def __init__(self, argv: Sequence[str], count: int, ledger: Ledger, *, ctl_socket: str | None,
                 metrics: tuple[str, int] | None, pidfile: Callable[[], None] | None = None,
                 accounting: RadiusAccounting | None = None, dae: RadiusSetup | None = None,
                 guard: AuthGuard | None = None, status: str = "",
                 executable: Sequence[str] = (sys.executable, "-m", "pptpkit")) -> None:
        self.argv = list(argv)
        self.count = count
        self.ledger = ledger
        self.ctl_socket = ctl_socket
        self.metrics_listen = metrics
        self.executable = list(executable)
        self.write_pidfile = pidfile
        self.accounting = accounting
        self.dae_setup = dae
        #: The failed-login counts of the whole server (each worker reports its logins).
        self.guard = guard
        #: ``STATUS=`` for systemd once every worker listens (``listening on ADDR:PORT``).
        self.status = status
        #: (worker, session ID) -> (the last accounting record reported, when the Start was).
        self._accounted: dict[tuple[int, str], tuple[list[Any], float]] = {}
        self.workers = [_Worker(i) for i in range(count)]
        self.restarts = 0
        self._stopping = False
        #: Every worker has been ready once: from then on a worker that dies is restarted.
        self._started = False
        self._failed: str | None = None
        self._stop = asyncio.Event()
        self._ctl: CtlServer | None = None
        self._http: asyncio.Server | None = None
        self._dae: DaeForwarder | None = None

    # -- workers --

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env[WORKER_ENV] = f"{worker.index}/{self.count}/{theirs.fileno()}"
        env.pop("NOTIFY_SOCKET", None)  # the supervisor is the service systemd watches
        loop = asyncio.get_running_loop()
        worker.ready = loop.create_future()

        def on_notice(message: dict[str, Any]) -> None:
            if message.get("op") == "ready":
                if worker.ready is not None and not worker.ready.done():
                    worker.ready.set_result(None)
                return
            if message.get("op") == "acct":
                self._acct_told(worker.index, message)
                return
            if message.get("op") == "auth":
                self._auth_told(message)
                return
            self.ledger.handle(worker.index, message)

        async def on_request(message: dict[str, Any]) -> dict[str, Any]:
            reply = self.ledger.handle(worker.index, message)
            return reply if reply is not None else {"ok": False, "why": "not a request"}

        port = Port(on_request, on_notice)
        try:
            await port.open(ours)
            worker.process = await asyncio.create_subprocess_exec(
                *self.executable, *self.argv, pass_fds=(theirs.fileno(),), env=env)
        except BaseException:
            await port.close()
            raise
        finally:
            theirs.close()
        worker.port = port
        worker.pid = worker.process.pid
        worker.starts.append(loop.time())
        log.info("worker %d started (pid %d)", worker.index, worker.pid)
        worker.watcher = loop.create_task(self._watch(worker, worker.process))

    def _auth_told(self, message: dict[str, Any]) -> None:
        guard = self.guard
        if guard is None or not guard.config.limit:
            return
        source, user = str(message.get("source", "")), str(message.get("user", ""))
        if message.get("ok"):
            guard.succeeded(source, user)
            return
        for what, key, seconds in guard.failed(source, user):
            for worker in self.workers:
                if worker.port is not None:
                    worker.port.notify("lock", what=what, key=key, seconds=seconds)

    def _acct_told(self, index: int, message: dict[str, Any]) -> None:
        key, status = (index, str(message.get("key"))), message.get("status")
        if status == "Stop":
            self._accounted.pop(key, None)
        elif status == "Start":
            self._accounted[key] = (list(message.get("attrs", [])), float(message.get("at", time.time())))
        elif key in self._accounted:
            self._accounted[key] = (list(message.get("attrs", [])), self._accounted[key][1])

    def _acct_lost(self, index: int) -> int:
        """Stops for the sessions of worker ``index``, which died before sending them."""
        from pptpkit.ops.accounting import decode_attributes, lost_stop_record

        keys = [k for k in self._accounted if k[0] == index]
        now = time.time()
        for key in keys:
            attrs, started = self._accounted.pop(key)
            if self.accounting is not None:
                try:
                    self.accounting.submit(lost_stop_record(decode_attributes(attrs), int(now - started)))
                except (ValueError, TypeError) as exc:
                    log.error("accounting Stop of %s not sent: %s", key[1], exc)
        return len(keys)

    async def _watch(self, worker: _Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if worker.port is not None:
            await worker.port.close()
            worker.port = None
        freed = self.ledger.forget_worker(worker.index)
        self._acct_lost(worker.index)
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(ChildProcessError(f"worker {worker.index} exited with {code}"))
        if self._stopping or not self._started:
            # At startup a worker that exits is the server failing to start: run() says so once.
            return
        log.error("worker %d (pid %d) died (exit status %s); %d sessions lost, their addresses back in "
                  "the pool; restarting it", worker.index, process.pid, code, freed)
        now = asyncio.get_running_loop().time()
        worker.starts = [t for t in worker.starts if now - t < RESTART_WINDOW]
        if len(worker.starts) > MAX_RESTARTS:
            self._failed = (f"worker {worker.index} died {len(worker.starts)} times within "
                            f"{RESTART_WINDOW:g} s; giving up")
            log.error("%s", self._failed)
            self._stop.set()
            return
        await asyncio.sleep(min(5.0, 0.2 * 2 ** (len(worker.starts) - 1)))
        if self._stopping:
            return
        self.restarts += 1
        try:
            await self._spawn(worker)
        except OSError as exc:
            self._failed = f"cannot restart worker {worker.index}: {exc}"
            self._stop.set()

    # -- ctl and metrics --

    async def _ask(self, op: str, **fields: Any) -> list[dict[str, Any] | None]:
        async def one(worker: _Worker) -> dict[str, Any] | None:
            port = worker.port
            if port is None or worker.ready is None or not worker.ready.done() or worker.ready.exception():
                return None
            try:
                reply = await port.request(op, timeout=ASK_TIMEOUT, **fields)
            except PortClosed:
                return None
            return reply if reply.get("ok") else None

        return list(await asyncio.gather(*(one(w) for w in self.workers)))

    async def ctl_line(self, line: bytes) -> bytes:
        replies = await self._ask("ctl", line=line.decode("utf-8", "replace"))
        return merge_ctl(line, [None if r is None else r.get("answer") for r in replies])

    async def metrics_text(self) -> bytes:
        replies = await self._ask("metrics")
        up = sum(r is not None for r in replies)
        extra = ("# HELP pptpkit_workers Worker processes answering.\n# TYPE pptpkit_workers gauge\n"
                 f"pptpkit_workers {up}.0\n"
                 "# HELP pptpkit_worker_restarts_total Workers restarted after dying.\n"
                 "# TYPE pptpkit_worker_restarts_total counter\n"
                 f"pptpkit_worker_restarts_total {self.restarts}.0\n")
        return merge_metrics([str(r.get("text", "")) for r in replies if r is not None], extra)

    async def _scrape(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                body = await self.metrics_text()
                writer.write(http_response(head, lambda: body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    # -- the whole --

    def _signal(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._signal, signal.SIGHUP)
        code: int = ExitStatus.OK
        try:
            if self.ctl_socket is not None:
                self._ctl = CtlServer(self.ctl_socket)
                await self._ctl.open_handler(self.ctl_line)
            if self.accounting is not None:
                await self.accounting.open_nas(f"{int(time.time()) & 0xFFFFFFFF:08X}00000000")
            # Worker 0 alone first: what stops one worker from starting (no privileges, the port
            # taken, a bad file) stops them all, and the user should read it once, not once per
            # CPU.  The others then start together.
            for batch in (self.workers[:1], self.workers[1:]):
                for worker in batch:
                    await self._spawn(worker)
                ready = [w.ready for w in batch if w.ready is not None]
                try:
                    await asyncio.wait_for(asyncio.gather(*ready), READY_TIMEOUT)
                except (ChildProcessError, TimeoutError) as exc:
                    log.error("the workers did not all start: %s", exc or "timed out")
                    code = self._exit_code_of_first_failed()
                    return code
            self._started = True
            if self.dae_setup is not None:
                from pptpkit.ops.dae import DaeForwarder

                async def ask(data: bytes, source: tuple[str, int]) -> list[dict[str, Any] | None]:
                    return await self._ask("dae", data=data.hex(), source=list(source))

                self._dae = DaeForwarder(self.dae_setup, ask)
                await self._dae.start()
            if self.metrics_listen is not None:
                host, port = self.metrics_listen
                self._http = await asyncio.start_server(self._scrape, host, port, limit=MAX_REQUEST_HEAD)
                shown = f"[{host}]" if ":" in host else host
                log.info("metrics on http://%s:%d/metrics", shown, port)
            if self.write_pidfile is not None:
                self.write_pidfile()
            log.info("%d workers running (pids %s)", self.count, ", ".join(str(w.pid) for w in self.workers))
            notify("READY=1", f"STATUS={self.status or 'running'}, {self.count} workers")
            await self._stop.wait()
            notify("STOPPING=1")
            if self._failed is not None:
                code = ExitStatus.FATAL
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return code

    def _exit_code_of_first_failed(self) -> int:
        for worker in self.workers:
            rc = None if worker.process is None else worker.process.returncode
            if rc is not None and rc > 0:
                return rc
        return ExitStatus.FATAL

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._http is not None:
            self._http.close()
        if self._dae is not None:
            await self._dae.stop()
        self._signal(signal.SIGTERM)
        processes = [w.process for w in self.workers if w.process is not None]
        if processes:
            waits = [asyncio.ensure_future(p.wait()) for p in processes]
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            if late:
                log.warning("%d workers did not stop in %g s; killing them", len(late), STOP_TIMEOUT)
                self._signal(signal.SIGKILL)
                await asyncio.wait(waits, timeout=5.0)
        watchers = [w.watcher for w in self.workers if w.watcher is not None]
        if watchers:
            await asyncio.wait(watchers, timeout=5.0)
        for worker in self.workers:
            if worker.port is not None:
                await worker.port.close()
        if self._ctl is not None:
            await self._ctl.close()
        if self.accounting is not None:
            for worker in self.workers:
                self._acct_lost(worker.index)  # killed at the end: what they could not send
            if self.accounting.client is not None:
                await self.accounting.stop()
        log.info("all workers stopped at %s", time.strftime("%H:%M:%S"))
