"""RADIUS accounting (RFC 2866, RFC 2869): Start, Interim-Update and Stop per session, and
Accounting-On/Off for the server.

Each record is built by :func:`session_record` from what the session table knows - the same
``Acct-Session-Id`` as the logs and ``pptpkit ctl`` - with the session's counters as the NAS
sees them (input = received from the client, RFC 2866 5.3) split into octets and Gigawords, and
``Acct-Terminate-Cause`` from :class:`~pptpkit.vpn.notices.TerminateCause`, which is numbered
as RFC 2866 5.10.  ``NAS-Port`` is the PPTP call ID, as in the Access-Request, so an AAA that
keys leases or sessions on NAS + port (FreeRADIUS's sqlippool does) sees one session.

Delivery: the client engine retransmits with backoff and fails over between servers.  A record
whose request still times out is not lost: it waits in a bounded queue (oldest dropped first
beyond :data:`MAX_QUEUED`, counted and logged) and is sent again, in order, every
:data:`RETRY_INTERVAL` seconds until a server answers; ``Acct-Delay-Time`` then says how late
it is (RFC 2866 5.2).  The record being retried leaves the queue while it is in flight, so
a full queue dropping its oldest entry can never take the wrong one; a failed retry puts it
back at the head (or, with the queue full again, counts it as the oldest dropped).  At a clean
stop the queue gets one last ordered attempt, bounded by the engine's own give-up time, so a
server that came back just before the stop still gets everything.  One log line when
accounting starts failing (a timeout, or the engine's own queue full) and one when it recovers.

``Acct-Interim-Interval`` from an Access-Accept is raised to :data:`MIN_INTERIM` (RFC 2869
5.16 says it should not be smaller): the AAA must not be able to make us send a record per
second per session.  ``--radius-interim`` enforces the same floor at configuration time.

Accounting-On goes out when the server starts (so the AAA closes sessions a crash left open),
Accounting-Off at a clean stop, after every session's Stop.

With ``--workers`` (:mod:`pptpkit.ops.supervisor`) each worker accounts its own sessions with
``nas_records`` off, and the supervisor sends Accounting-On/Off once for the whole server
(:meth:`RadiusAccounting.open_nas`).  A worker also tells the supervisor every record it sends
(``on_record``), so that when a worker dies the supervisor sends the Stop of each session it
had (:func:`lost_stop_record`, cause NAS-Error): an Accounting-On would close the other
workers' sessions too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pptpkit.io.radius import RadiusUdpClient
from pptpkit.radius.access import NasInfo
from pptpkit.radius.client import AccountingResponded, AttributeSpec, RadiusBusyError
from pptpkit.radius.settings import RadiusSetup
from pptpkit.vpn.notices import SessionDown, SessionNotice, SessionUp, TerminateCause

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = ["MAX_QUEUED", "MIN_INTERIM", "RETRY_INTERVAL", "Counters", "RadiusAccounting", "Status",
           "decode_attributes", "encode_attributes", "lost_stop_record", "session_record"]

log = logging.getLogger(__name__)

#: Records kept while no server answers (a day of Interim-Updates for a few hundred sessions).
MAX_QUEUED: Final = 10000
#: The longest a clean stop waits for the AAA to take the last records (Stop, Accounting-Off).
MAX_STOP_WAIT: Final = 10.0
#: Seconds between attempts to deliver the queued records.
RETRY_INTERVAL: Final = 10.0
#: The shortest Interim-Update interval we honour (RFC 2869 5.16).
MIN_INTERIM: Final = 60.0
_GIGA: Final = 1 << 32


class Status(enum.Enum):
    """Acct-Status-Type (RFC 2866 5.1, RFC 2869 for Interim-Update), dictionary spelling."""

    START = "Start"
    STOP = "Stop"
    INTERIM = "Interim-Update"
    ON = "Accounting-On"
    OFF = "Accounting-Off"


@dataclass(frozen=True, slots=True)
class Counters:
    """IP octets and packets each way, from the NAS's point of view."""

    octets_in: int = 0
    octets_out: int = 0
    packets_in: int = 0
    packets_out: int = 0


def _nas(nas: NasInfo) -> list[AttributeSpec]:
    out: list[AttributeSpec] = []
    if nas.nas_ip_address is not None:
        out.append(("NAS-IP-Address", nas.nas_ip_address))
    if nas.nas_identifier is not None:
        out.append(("NAS-Identifier", nas.nas_identifier))
    return out


def session_record(status: Status, session: Session, nas: NasInfo, *, session_time: int,
                   counters: Counters, cause: TerminateCause | None = None) -> list[AttributeSpec]:
    """The attributes of one session's Start, Interim-Update or Stop."""
    attrs: list[AttributeSpec] = [
        ("Acct-Status-Type", status.value),
        ("Acct-Session-Id", session.id),
        ("User-Name", session.user or "-"),
        *_nas(nas),
        ("NAS-Port", session.call.call_id),
        ("NAS-Port-Type", "Virtual"),
        ("Service-Type", "Framed-User"),
        ("Framed-Protocol", "PPP"),
        ("Calling-Station-Id", session.source),
        ("Tunnel-Type", "PPTP"),
        ("Tunnel-Medium-Type", "IPv4"),
        ("Tunnel-Client-Endpoint", session.source),
        ("Acct-Authentic", "RADIUS" if session.access is not None else "Local"),
    ]
    local = session.call.local_address
    if local is not None:
        attrs.append(("Called-Station-Id", local))
    address = session.address or (session.up.peer_address if session.up is not None else None)
    if address is not None:
        attrs.append(("Framed-IP-Address", address))
    if session.access is not None:
        attrs += [("Class", value) for value in session.access.classes]
    if status is not Status.START:
        attrs += [
            ("Acct-Session-Time", max(0, session_time)),
            ("Acct-Input-Octets", counters.octets_in % _GIGA),
            ("Acct-Input-Gigawords", counters.octets_in // _GIGA),
            ("Acct-Output-Octets", counters.octets_out % _GIGA),
            ("Acct-Output-Gigawords", counters.octets_out // _GIGA),
            ("Acct-Input-Packets", counters.packets_in % _GIGA),
            ("Acct-Output-Packets", counters.packets_out % _GIGA),
        ]
    if status is Status.STOP:
        attrs.append(("Acct-Terminate-Cause", int(cause if cause is not None else TerminateCause.NAS_ERROR)))
    return attrs


def nas_record(status: Status, nas: NasInfo, server_id: str, cause: TerminateCause | None = None
               ) -> list[AttributeSpec]:
    """Accounting-On / Accounting-Off for the whole server."""
    attrs: list[AttributeSpec] = [("Acct-Status-Type", status.value), ("Acct-Session-Id", server_id),
                                  *_nas(nas)]
    if cause is not None:
        attrs.append(("Acct-Terminate-Cause", int(cause)))
    return attrs


def encode_attributes(attributes: list[AttributeSpec]) -> list[list[Any]]:
    """JSON-ready (for the supervisor's socketpair): bytes as ``{"hex": ...}``, addresses as
    ``{"ip": ...}``."""
    out: list[list[Any]] = []
    for item in attributes:
        if not isinstance(item, tuple):
            continue  # a pre-built attribute object: not something session_record makes
        name, value = item
        if isinstance(value, bytes):
            out.append([name, {"hex": value.hex()}])
        elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            out.append([name, {"ip": str(value)}])
        else:
            out.append([name, value])
    return out


def decode_attributes(items: list[Any]) -> list[AttributeSpec]:
    """:func:`encode_attributes` undone; ``ValueError`` for anything else."""
    out: list[AttributeSpec] = []
    for item in items:
        name, value = item
        if isinstance(value, dict) and "hex" in value:
            value = bytes.fromhex(value["hex"])
        elif isinstance(value, dict) and "ip" in value:
            value = ipaddress.ip_address(value["ip"])
        elif not isinstance(value, (int, str)):
            raise ValueError(f"attribute {name!r}: {value!r}")
        out.append((str(name), value))
    return out


_STOP_ONLY: Final = frozenset({"Acct-Status-Type", "Acct-Session-Time", "Acct-Terminate-Cause",
                               "Acct-Delay-Time"})


def lost_stop_record(last: list[AttributeSpec], session_time: int) -> list[AttributeSpec]:
    """The Stop of a session whose worker died, from the last record sent for it (its Start or
    latest Interim-Update: the counters are those of that record, the last known)."""
    kept = [a for a in last if not (isinstance(a, tuple) and a[0] in _STOP_ONLY)]
    return [("Acct-Status-Type", Status.STOP.value), *kept, ("Acct-Session-Time", max(0, session_time)),
            ("Acct-Terminate-Cause", int(TerminateCause.NAS_ERROR))]


@dataclass(slots=True)
class _Record:
    attributes: list[AttributeSpec]
    created: float = field(default_factory=time.monotonic)


class RadiusAccounting:
    """The :class:`~pptpkit.ops.ServerExtension` that accounts every session.  ``stats``:
    records sent, answered, queued after a failure, dropped from a full queue."""

    def __init__(self, setup: RadiusSetup) -> None:
        assert setup.acct is not None
        self.setup = setup
        self.client: RadiusUdpClient | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self._sessions: BuiltinSessions | None = None
        self._queue: collections.deque[_Record] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._interims: dict[str, asyncio.TimerHandle] = {}
        #: Sessions whose Start was sent (each gets exactly one Stop).
        self._started: set[str] = set()
        self._retry: asyncio.Task[None] | None = None
        self._failing = False
        self._server_id = ""
        self._raised_interim_logged = False
        self._open = RadiusUdpClient.open  # a test replaces it with a fake AAA
        #: Accounting-On at start and -Off at stop (off in a worker: the supervisor sends them).
        self.nas_records = True
        #: Told of every session record submitted: (status, session ID, attributes).
        self.on_record: Callable[[Status, str, list[AttributeSpec]], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        assert self.setup.acct is not None
        self.client = await self._open(self.setup.acct)
        self._sessions = sessions
        self._server_id = f"{sessions.id_prefix}00000000"  # no session has number 0
        sessions.observers.append(self.observe)
        self._retry = asyncio.get_running_loop().create_task(self._retry_loop())
        log.info("RADIUS accounting: %s", ", ".join(s.label for s in self.setup.acct.servers))
        if self.nas_records:
            self._submit(nas_record(Status.ON, self.setup.nas, self._server_id))

    async def open_nas(self, server_id: str) -> None:
        """The supervisor's accounting: no sessions of its own, Accounting-On now, -Off at
        :meth:`stop`, and :meth:`submit` for the Stops of a dead worker's sessions."""
        assert self.setup.acct is not None
        self.client = await self._open(self.setup.acct)
        self._server_id = server_id
        self._retry = asyncio.get_running_loop().create_task(self._retry_loop())
        log.info("RADIUS accounting: %s", ", ".join(s.label for s in self.setup.acct.servers))
        self._submit(nas_record(Status.ON, self.setup.nas, self._server_id))

    def submit(self, attributes: list[AttributeSpec]) -> None:
        """Send one record (delivered, queued and retried like every other)."""
        self._submit(attributes)

    async def stop(self) -> None:
        """After every session's Stop: Accounting-Off, then what is in flight gets the engine's
        retransmissions (bounded), and the rest is reported lost."""
        for handle in self._interims.values():
            handle.cancel()
        self._interims.clear()
        if self._sessions is not None and self.observe in self._sessions.observers:
            self._sessions.observers.remove(self.observe)
        if self.nas_records:
            self._submit(nas_record(Status.OFF, self.setup.nas, self._server_id, TerminateCause.NAS_REBOOT))
        # A shutdown waits for the AAA, but not for ever: a service manager gives a stop only so
        # long, and what is not delivered by then is logged as lost.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self._give_up_after(), MAX_STOP_WAIT)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._queue:
            # One last ordered attempt: the first failure ends it, so an AAA that is still down
            # costs at most one record's retransmissions.
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(self._flush(), max(0.1, deadline - loop.time())):
                    self._recovered()
        left = len(self._queue) + sum(1 for t in self._tasks if not t.done())
        if left:
            log.warning("RADIUS accounting: %d records not delivered at shutdown", left)
        for task in self._tasks:
            task.cancel()
        if self.client is not None:
            self.client.close()
            self.client = None

    def _give_up_after(self) -> float:
        assert self.setup.acct is not None
        cfg = self.setup.acct
        per_server = sum(min(cfg.timeout * cfg.backoff ** i, cfg.max_timeout) for i in range(cfg.retries + 1))
        return per_server * len(cfg.servers) + 1.0

    # -- notices -----------------------------------------------------------------------------

    def observe(self, notice: SessionNotice) -> None:
        if isinstance(notice, SessionUp):
            session = notice.session
            if session.id in self._started:
                return  # IPCP renegotiated: the same session goes on
            self._started.add(session.id)
            self._record(Status.START, session.id, session_record(
                Status.START, session, self.setup.nas, session_time=0, counters=Counters()))
            self._schedule_interim(session)
        elif isinstance(notice, SessionDown):
            session = notice.session
            handle = self._interims.pop(session.id, None)
            if handle is not None:
                handle.cancel()
            if session.id not in self._started:
                return  # never came up: no Start was sent, so no Stop either
            self._started.discard(session.id)
            counters = Counters(notice.octets_in, notice.octets_out, notice.packets_in, notice.packets_out)
            self._record(Status.STOP, session.id, session_record(
                Status.STOP, session, self.setup.nas, session_time=int(notice.duration),
                counters=counters, cause=notice.cause))

    def _record(self, status: Status, session_id: str, attributes: list[AttributeSpec]) -> None:
        if self.on_record is not None:
            try:
                self.on_record(status, session_id, attributes)
            except Exception:
                log.exception("[%s] telling the supervisor of an accounting record failed", session_id)
        self._submit(attributes)

    def _interval(self, session: Session) -> float:
        access = session.access
        if access is not None and access.acct_interim_interval:
            given = float(access.acct_interim_interval)
            if given < MIN_INTERIM:
                if not self._raised_interim_logged:
                    self._raised_interim_logged = True
                    log.warning("[%s] Acct-Interim-Interval %g s from the RADIUS server raised to %g s "
                                "(RFC 2869 5.16; said once)", session.id, given, MIN_INTERIM)
                return MIN_INTERIM
            return given
        return self.setup.interim

    def _schedule_interim(self, session: Session) -> None:
        interval = self._interval(session)
        if interval <= 0:
            return
        self._interims[session.id] = asyncio.get_running_loop().call_later(interval, self._interim, session)

    def _interim(self, session: Session) -> None:
        link = session.link
        if link.finished or session.id not in self._started:
            return
        now = link.loop.time()
        stats = link.stats
        counters = Counters(stats.octets_in, stats.octets_out, stats.packets_in, stats.packets_out)
        up_for = int(now - link.up_at) if link.up_at is not None else 0
        self._record(Status.INTERIM, session.id, session_record(
            Status.INTERIM, session, self.setup.nas, session_time=up_for, counters=counters))
        self._schedule_interim(session)

    # -- delivery ----------------------------------------------------------------------------

    def _submit(self, attributes: list[AttributeSpec]) -> None:
        self.stats["sent"] += 1
        record = _Record(attributes)
        if self._failing:
            self._enqueue(record)  # keep the order: behind what is already waiting
            return
        task = asyncio.get_running_loop().create_task(self._deliver(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, record: _Record) -> None:
        if not await self._send(record):
            self._enqueue(record)

    async def _send(self, record: _Record) -> bool:
        client = self.client
        if client is None:
            return False
        attrs = record.attributes
        delay = int(time.monotonic() - record.created)
        if delay > 0:
            # Sent late (from the queue): the AAA subtracts this from its receive time.
            attrs = [a for a in attrs if not (isinstance(a, tuple) and a[0] == "Acct-Delay-Time")]
            attrs.append(("Acct-Delay-Time", delay))
        try:
            answer = await client.accounting_request(attrs)
        except RadiusBusyError:
            self.stats["busy"] += 1
            self._mark_failing("too many requests waiting for an answer")
            return False
        if isinstance(answer, AccountingResponded):
            self.stats["answered"] += 1
            return True
        self._mark_failing(f"no answer from {', '.join(answer.servers)}")
        return False

    def _mark_failing(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("RADIUS accounting: %s; records are queued (at most %d) and sent again every %g s",
                        why, MAX_QUEUED, RETRY_INTERVAL)

    def _enqueue(self, record: _Record) -> None:
        self._failing = True
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self._count_dropped()
        self._queue.append(record)
        self.stats["queued"] += 1

    def _count_dropped(self) -> None:
        self.stats["dropped"] += 1
        if self.stats["dropped"] in (1, 10, 100) or self.stats["dropped"] % 1000 == 0:
            log.warning("RADIUS accounting: queue full, %d oldest records dropped", self.stats["dropped"])

    async def _flush(self) -> bool:
        """Send the queue in order until it is empty (True) or a record fails (False)."""
        while self._queue:
            record = self._queue.popleft()
            try:
                ok = await self._send(record)
            except asyncio.CancelledError:
                self._queue.appendleft(record)  # the stop cancelled it in flight: not delivered
                raise
            if not ok:
                if len(self._queue) >= MAX_QUEUED:
                    self._count_dropped()  # it is the oldest, and the queue filled meanwhile
                else:
                    self._queue.appendleft(record)
                return False
        return True

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            await self._flush()
            if not self._queue and self._failing:
                self._recovered()

    def _recovered(self) -> None:
        self._failing = False
        log.warning("RADIUS accounting: a server answers again; every queued record was delivered")

    @property
    def queued(self) -> int:
        return len(self._queue)
