"""Prometheus metrics of the built-in server (``pptpkit server --metrics ADDR:PORT``).

Three kinds of numbers, each taken where it already exists instead of being counted twice:

* Events only the notices carry (a call set up, a login failed, a session ended and why, the
  time from the call to IPCP up) are counted here from :mod:`pptpkit.vpn.notices` into
  ordinary prometheus_client counters and a histogram.
* Counters the session table, the PAC, the auth guard and the GRE socket keep anyway
  (refusals, authentication timeouts, lockouts, socket drops) are read when Prometheus scrapes,
  by a custom collector, so the packet and call paths do not change at all for metrics.
* Traffic (IP octets and packets, GRE loss, reordering and duplicates) is the sum of the ended
  sessions' final counters, folded in once when a session ends, plus the live sessions' current
  counters read at scrape time.  The live set is this module's own (filled from
  SessionStarted, emptied on SessionDown) rather than the table's, because the table keeps a
  session for a moment after its SessionDown: reading both would count it twice and the sum
  would then drop - a counter that goes down is reset, to Prometheus, and ``rate()`` breaks.
  A session that left the table without a SessionDown is folded in at the next scrape, so
  the set cannot outgrow the table.

Every label has a fixed, small set of values - RADIUS's terminate causes, the authentication
methods, the refusal reasons named here - and none names a user, an address or a session:
per-user numbers belong to accounting and ``pptpkit ctl``, and a label per user would grow the
time-series database without bound.

Each :class:`Metrics` has a :class:`~prometheus_client.CollectorRegistry` of its own, never the
process-wide default, so several servers (tests, embedders) can run in one process.

It is served by a small asyncio HTTP responder on the server's loop rather than by
``prometheus_client.start_http_server``: that one serves from a thread, and the collector reads
the session table, which only the loop may touch; it also could not be told to stop and drop
its open connections.  Here a scrape runs on the loop (generating the text is a few hundred
microseconds per thousand sessions), the request head is capped, a slow client is cut after
:data:`REQUEST_TIMEOUT`, at most :data:`MAX_CLIENTS` are served at once, and :meth:`stop`
closes the socket and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from pptpkit.vpn.guard import AuthGuard, GuardedSecrets
from pptpkit.vpn.notices import (
    SessionAuthFailed,
    SessionDown,
    SessionNotice,
    SessionStarted,
    SessionUp,
)

if TYPE_CHECKING:
    from pptpkit.ops.radius_auth import RadiusAuth
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = [
    "MAX_CLIENTS",
    "MAX_REQUEST_HEAD",
    "REQUEST_TIMEOUT",
    "SETUP_BUCKETS",
    "Metrics",
    "http_response",
]

log = logging.getLogger(__name__)

#: Seconds from the call to IPCP up: a LAN client takes tens of milliseconds, a far one over a
#: slow RADIUS a few seconds; the authentication timeout (15 s by default) bounds the rest.
SETUP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Octets of request line and headers accepted (a scrape sends a few hundred).
MAX_REQUEST_HEAD: Final = 8192
#: Seconds a client has to send its request and read the answer.
REQUEST_TIMEOUT: Final = 10.0
#: Connections served at once; more are closed without an answer.
MAX_CLIENTS: Final = 16


@dataclass(slots=True)
class _Traffic:
    """Counters summed over sessions."""

    octets_in: int = 0
    octets_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    gre_lost: int = 0
    gre_reordered: int = 0
    gre_duplicates: int = 0

    def add(self, session: Session) -> None:
        st, gre = session.link.stats, session.call.stats
        self.octets_in += st.octets_in
        self.octets_out += st.octets_out
        self.packets_in += st.packets_in
        self.packets_out += st.packets_out
        self.gre_lost += gre.lost
        self.gre_reordered += gre.reordered
        self.gre_duplicates += gre.duplicates

    def copy(self) -> _Traffic:
        return _Traffic(self.octets_in, self.octets_out, self.packets_in, self.packets_out,
                        self.gre_lost, self.gre_reordered, self.gre_duplicates)


@dataclass(slots=True)
class _Live:
    session: Session
    #: Loop time of SessionStarted; None once the session came up (the latency is observed).
    started_at: float | None


class Metrics:
    """The metrics :class:`~pptpkit.ops.ServerExtension`.

    ``listen``: (address, port) to serve ``/metrics`` on; None serves nothing (the registry
    is still filled: embedders and tests read :attr:`registry` themselves).  ``radius``: the
    RADIUS authentication extension whose Access-Request outcomes to export; without one the
    RADIUS family is not registered at all.  ``clock``: the loop's clock by default.
    """

    def __init__(self, listen: tuple[str, int] | None, *, radius: RadiusAuth | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.listen = listen
        self.registry = CollectorRegistry()
        self._radius = radius
        self._clock = clock
        self._sessions: BuiltinSessions | None = None
        self._server: PptpServer | None = None
        self._guard: AuthGuard | None = None
        self._live: dict[str, _Live] = {}
        self._ended = _Traffic()
        self._http: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        r = self.registry
        self.setups = Counter("pptpkit_session_setups", "Calls admitted (a PPP session started on them).",
                              registry=r)
        self.setup_failures = Counter(
            "pptpkit_session_setup_failures", "Sessions that ended before IPCP came up, by terminate "
            "cause.", ["reason"], registry=r)
        self.ended = Counter("pptpkit_sessions_ended", "Sessions ended, by RADIUS terminate cause.",
                             ["cause"], registry=r)
        self.auth_failures = Counter("pptpkit_auth_failures", "Failed logins, by authentication method.",
                                     ["method"], registry=r)
        self.setup_seconds = Histogram(
            "pptpkit_session_setup_seconds", "Seconds from the call to IPCP up (the session usable).",
            buckets=SETUP_BUCKETS, registry=r)
        r.register(self)

    # -- the extension ------------------------------------------------------------------------------

    def attach(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        """Watch ``sessions`` and ``server`` (what :meth:`start` does before it listens)."""
        self._sessions = sessions
        self._server = server
        secrets = sessions.config.secrets
        # pptpkit server always wraps the secrets with its guard; an embedder may not use one.
        self._guard = secrets.guard if isinstance(secrets, GuardedSecrets) else None
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        sessions.observers.append(self.observe)

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        self.attach(sessions, server)
        if self.listen is None:
            return
        host, port = self.listen
        self._http = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics on http://%s:%d/metrics", shown, port)

    async def stop(self) -> None:
        if self._sessions is not None and self.observe in self._sessions.observers:
            self._sessions.observers.remove(self.observe)
        if self._http is not None:
            self._http.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._http.wait_closed()
            self._http = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the HTTP responder listens (the port actually bound), None if it does not."""
        if self._http is None or not self._http.sockets:
            return None
        name = self._http.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    # -- notices ------------------------------------------------------------------------------------

    def observe(self, notice: SessionNotice) -> None:
        session = notice.session
        if isinstance(notice, SessionStarted):
            assert self._clock is not None
            self.setups.inc()
            self._live[session.id] = _Live(session, self._clock())
        elif isinstance(notice, SessionUp):
            live = self._live.get(session.id)
            if live is not None and live.started_at is not None:
                assert self._clock is not None
                self.setup_seconds.observe(max(0.0, self._clock() - live.started_at))
                live.started_at = None
        elif isinstance(notice, SessionAuthFailed):
            self.auth_failures.labels(notice.method.pppd_name).inc()
        elif isinstance(notice, SessionDown):
            self.ended.labels(notice.cause.text).inc()
            if session.up is None:
                self.setup_failures.labels(notice.cause.text).inc()
            self._fold(session.id)

    def _fold(self, session_id: str) -> None:
        """Move a session's counters from the live set into the ended sessions' sums."""
        live = self._live.pop(session_id, None)
        if live is not None:
            self._ended.add(live.session)

    # -- the collector (called by generate_latest, on the loop) --------------------------------------

    def collect(self) -> Iterable[Metric]:
        sessions, server = self._sessions, self._server
        if sessions is None or server is None:
            return
        for sid in [sid for sid in self._live if sessions.find(sid) is None]:
            self._fold(sid)
        traffic = self._ended.copy()
        up = 0
        for live in self._live.values():
            traffic.add(live.session)
            up += live.session.up is not None
        yield GaugeMetricFamily("pptpkit_sessions_up", "Sessions with IPCP up.", value=up)
        yield GaugeMetricFamily("pptpkit_sessions_authenticating",
                                "Calls that have not authenticated yet.", value=sessions.preauth)
        yield GaugeMetricFamily("pptpkit_control_connections", "Open PPTP control connections.",
                                value=server.connections)
        yield from _pair("pptpkit_session_bytes", "IP octets of the sessions; in: from the clients.",
                         traffic.octets_in, traffic.octets_out)
        yield from _pair("pptpkit_session_packets", "IP packets of the sessions; in: from the clients.",
                         traffic.packets_in, traffic.packets_out)
        for name, text, value in (
                ("pptpkit_gre_lost_packets", "GRE sequence numbers given up on as lost.", traffic.gre_lost),
                ("pptpkit_gre_reordered_packets", "GRE packets that arrived out of order and were "
                                                  "still delivered.", traffic.gre_reordered),
                ("pptpkit_gre_duplicate_packets", "GRE packets received twice.", traffic.gre_duplicates),
                ("pptpkit_auth_timeouts", "Calls closed for not authenticating in time.",
                 sessions.auth_timeouts)):
            yield CounterMetricFamily(name, text, value=value)
        refusals = CounterMetricFamily(
            "pptpkit_refusals", "Calls refused (Busy) and control connections closed at once, by reason.",
            labels=["reason"])
        for reason, value in (("max_sessions", sessions.refused_max_sessions),
                              ("per_source", sessions.refused_per_source),
                              ("preauth", sessions.refused_preauth),
                              ("admission", sessions.refused_by_admission),
                              ("max_connections", server.refused_max_connections),
                              ("connections_per_source", server.refused_per_source)):
            refusals.add_metric([reason], value)
        yield refusals
        yield from self._guard_metrics()
        yield from self._gre_socket_metrics(server)
        yield from self._radius_metrics()

    def _guard_metrics(self) -> Iterable[Metric]:
        guard = self._guard
        if guard is None or not guard.config.limit:
            return
        scopes = [("address", guard.sources)]
        if guard.config.lock_users:
            # Without lock_users a user's failures are counted but lock nothing.
            scopes.append(("user", guard.users))
        locks = CounterMetricFamily("pptpkit_auth_lockouts", "Lockouts started after repeated failed "
                                    "logins, by what was locked.", labels=["scope"])
        refused = CounterMetricFamily("pptpkit_auth_lockout_refusals", "Calls (address) or logins (user) "
                                      "refused while locked out.", labels=["scope"])
        for scope, table in scopes:
            locks.add_metric([scope], table.locks)
            refused.add_metric([scope], table.refused)
        yield locks
        yield refused

    @staticmethod
    def _gre_socket_metrics(server: PptpServer) -> Iterable[Metric]:
        sock = server.gre_socket
        if sock is None:
            return
        st = sock.stats
        yield CounterMetricFamily("pptpkit_gre_socket_received_packets",
                                  "GRE packets read from the raw socket.", value=st.received)
        yield CounterMetricFamily("pptpkit_gre_socket_sent_packets",
                                  "GRE packets written to the raw socket.", value=st.sent)
        dropped = CounterMetricFamily("pptpkit_gre_socket_dropped_packets",
                                      "GRE packets dropped at the raw socket, by reason.", labels=["reason"])
        for reason, value in (("too_short", st.too_short), ("not_ipv4", st.not_ipv4),
                              ("not_gre_v1", st.not_gre_v1), ("unknown_call", st.unknown_call),
                              ("handler_error", st.handler_errors), ("send_dropped", st.send_dropped),
                              ("send_error", st.send_errors), ("receive_error", st.receive_errors)):
            dropped.add_metric([reason], value)
        yield dropped

    def _radius_metrics(self) -> Iterable[Metric]:
        if self._radius is None:
            return
        family = CounterMetricFamily("pptpkit_radius_access_requests", "RADIUS Access-Requests, by "
                                     "outcome (accept, reject, challenge, timeout, busy, error).",
                                     labels=["outcome"])
        for outcome, value in sorted(self._radius.outcomes.items()):
            family.add_metric([outcome], value)
        yield family

    # -- HTTP ----------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= MAX_CLIENTS or task is None:
            writer.close()
            return
        self._clients.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(http_response(head, self.render))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics: answering a scrape failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._clients.discard(task)


def _pair(name: str, text: str, inward: int, outward: int) -> Iterable[Metric]:
    family = CounterMetricFamily(name, text, labels=["direction"])
    family.add_metric(["in"], inward)
    family.add_metric(["out"], outward)
    yield family


def http_response(head: bytes, render: Callable[[], bytes]) -> bytes:
    """The whole HTTP/1.1 answer to a request whose line and headers are ``head``: the metrics
    for ``GET /metrics`` (headers only for ``HEAD``), 404 for another path, 405 for another
    method, 400 for something that is not a request line.  ``render`` is called only for a
    scrape.  Every answer closes the connection: Prometheus scrapes once per interval."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _answer(400, b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _answer(404, b"metrics are at /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return _answer(405, b"GET or HEAD only\n", extra=b"Allow: GET, HEAD\r\n")
    body = render()
    return _answer(200, body, content_type=CONTENT_TYPE_PLAIN_0_0_4.encode(), head_only=method == b"HEAD")


_REASONS: Final = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def _answer(status: int, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8",
            extra: bytes = b"", head_only: bool = False) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (status, _REASONS[status], content_type, len(body), extra)) + (b"" if head_only else body)
