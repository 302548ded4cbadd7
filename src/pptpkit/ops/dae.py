"""Disconnect and CoA from the AAA (RFC 5176): the listener of the built-in server.

A request names its session(s) by ``Acct-Session-Id``, ``User-Name`` and/or
``Framed-IP-Address`` (every one given must match); ``NAS-Identifier``/``NAS-IP-Address``, when
present, must be ours (else NAK 403).  A Disconnect ends each session it names with cause
Admin-Reset - a clean LCP Terminate and Call-Clear, as ``pptpkit ctl kill`` does.  A CoA may
change ``Session-Timeout``, ``Idle-Timeout`` and the rate limit (``Filter-Id`` ``DOWN[/UP]``,
accel-ppp's convention, applied by the shaper); any attribute we cannot honour makes it a NAK
with Error-Cause 401 that changes nothing (RFC 5176 3.4: a CoA is applied whole or not at all).
``Proxy-State`` is echoed as RFC 5176 3.1 asks.  No session: NAK 503.

The protocol checks (clients, authenticators, retransmissions) are the engine's
(:mod:`pptpkit.radius.dae`); the UDP socket is a thin adapter; wrong-secret floods are counted
and logged at most once per interval.

With ``--workers`` the supervisor listens (:class:`DaeForwarder`): it checks the request with
its own engine, hands the datagram to every worker, whose :class:`DynamicAuthorization` (with
``forwarded`` set, no socket of its own) decides for its own sessions
(:meth:`DynamicAuthorization.decide_datagram`), and answers once: ACK if any worker had a session
the request names, else the most telling NAK (another cause before "session not found").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from pptpkit.io.throttle import LogThrottle, left_out_text
from pptpkit.ops.shaper import radius_rate
from pptpkit.radius.dae import DaeEngine, DaeRequest, ErrorCause
from pptpkit.radius.packet import MAX_PACKET_SIZE, AttributeValue
from pptpkit.radius.settings import RadiusSetup
from pptpkit.vpn.notices import TerminateCause

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = ["DaeForwarder", "DynamicAuthorization", "merge_verdicts"]

log = logging.getLogger(__name__)

_IDENTIFY: Final = ("Acct-Session-Id", "User-Name", "Framed-IP-Address")
#: Attributes that may come along and need nothing from us.
_HARMLESS: Final = frozenset({"Message-Authenticator", "Event-Timestamp", "Proxy-State", "NAS-Identifier",
                              "NAS-IP-Address", "NAS-Port", "Calling-Station-Id", "Called-Station-Id",
                              "NAS-Port-Type", "Acct-Terminate-Cause", "Reply-Message"})
_COA_CHANGES: Final = frozenset({"Session-Timeout", "Idle-Timeout", "Filter-Id"})


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.receive(data, (str(addr[0]), int(addr[1])))


class DynamicAuthorization:
    """The :class:`~pptpkit.ops.ServerExtension` listening for Disconnect/CoA requests."""

    def __init__(self, setup: RadiusSetup) -> None:
        assert setup.dae_listen is not None
        self.setup = setup
        self.engine = DaeEngine({c: setup.dae_secret for c in setup.dae_clients})
        self._sessions: BuiltinSessions | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._drop_log = LogThrottle()
        self._tasks: set[asyncio.Future[bool]] = set()
        self._dropped_seen = 0
        #: A worker's: the supervisor listens and forwards (:meth:`decide_datagram`).
        self.forwarded = False

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        assert self.setup.dae_listen is not None
        self._sessions = sessions
        if self.forwarded:
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.datagram_received),
                                                           local_addr=self.setup.dae_listen)
        self._transport = transport
        host, port = self.setup.dae_listen
        log.info("RADIUS Disconnect/CoA requests accepted on %s:%d from %s", host, port,
                 ", ".join(self.setup.dae_clients))

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        if len(data) > MAX_PACKET_SIZE:
            data = data[:MAX_PACKET_SIZE]
        result = self.engine.receive(data, source, wall=time.time())
        if result is None:
            self._log_drops()
            return
        if isinstance(result, bytes):
            self._send(result, source)
            return
        self._send(self.handle(result), source)

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, target)

    def _log_drops(self) -> None:
        s = self.engine.stats
        dropped = (s.dropped_unknown_client + s.dropped_malformed + s.dropped_bad_code
                   + s.dropped_bad_authenticator + s.dropped_bad_message_authenticator
                   + s.dropped_missing_message_authenticator + s.dropped_stale)
        left_out = self._drop_log(asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("RADIUS Disconnect/CoA: %d requests dropped so far (unknown client %d, wrong "
                        "secret %d, malformed %d, Event-Timestamp not within %g s of our clock %d)%s",
                        dropped, s.dropped_unknown_client,
                        s.dropped_bad_authenticator + s.dropped_bad_message_authenticator,
                        s.dropped_malformed, self.engine.event_window, s.dropped_stale,
                        left_out_text(left_out))

    # -- the decision ----------------------------------------------------------------------

    def handle(self, request: DaeRequest) -> bytes:
        echo: list[tuple[str, AttributeValue]] = [("Proxy-State", v) for v in request.values("Proxy-State")]
        ack, error = self.decide(request)
        return self.engine.answer(request, ack=ack, error=error, attributes=echo)

    def decide_datagram(self, data: bytes, source: tuple[str, int]) -> dict[str, Any]:
        """A worker's part of a forwarded request: applied to its own sessions; the verdict for
        the supervisor to merge (it answers the AAA)."""
        request = self.engine.receive(data, source, wall=time.time())
        if not isinstance(request, DaeRequest):
            return {"ok": False, "why": "not a valid request here"}
        ack, error = self.decide(request, quiet_not_found=True)
        return {"ok": True, "ack": ack, "error": None if error is None else int(error)}

    def decide(self, request: DaeRequest, *, quiet_not_found: bool = False) -> tuple[bool, ErrorCause | None]:
        """(ACK?, the NAK's Error-Cause), with the request applied when ACK.  ``quiet_not_found``:
        a worker without the session says so without a warning (another worker may have it)."""
        kind = "Disconnect" if request.disconnect else "CoA"

        def nak(error: ErrorCause, why: str) -> tuple[bool, ErrorCause | None]:
            if not (quiet_not_found and error is ErrorCause.SESSION_CONTEXT_NOT_FOUND):
                log.warning("RADIUS %s-Request from %s refused (%d): %s", kind, request.source[0],
                            int(error), why)
            return False, error

        nas = self.setup.nas
        for ident in request.values("NAS-Identifier"):
            if nas.nas_identifier is not None and ident != nas.nas_identifier:
                return nak(ErrorCause.NAS_IDENTIFICATION_MISMATCH, f"NAS-Identifier {ident!r} is not ours")
        for address in request.values("NAS-IP-Address"):
            if nas.nas_ip_address is not None and address != nas.nas_ip_address:
                return nak(ErrorCause.NAS_IDENTIFICATION_MISMATCH, f"NAS-IP-Address {address!s} is not ours")
        allowed = _HARMLESS | set(_IDENTIFY) | (set() if request.disconnect else _COA_CHANGES)
        unknown = sorted({a.name for a in request.attributes if a.name not in allowed or a.malformed})
        if unknown:
            return nak(ErrorCause.UNSUPPORTED_ATTRIBUTE, f"cannot honour {', '.join(unknown)}")
        filters = [str(v) for v in request.values("Filter-Id")]
        if filters and (self._sessions is None or self._sessions.rate_setter is None
                        or any(radius_rate((f,)) is None for f in filters)):
            return nak(ErrorCause.UNSUPPORTED_ATTRIBUTE, f"Filter-Id {filters}: only a DOWN[/UP] rate "
                       "is applied, and only while shaping runs")
        if not any(request.values(name) for name in _IDENTIFY):
            return nak(ErrorCause.MISSING_ATTRIBUTE, "no Acct-Session-Id, User-Name or Framed-IP-Address")
        found = self._match(request)
        if not found:
            return nak(ErrorCause.SESSION_CONTEXT_NOT_FOUND, "no such session")
        sessions = self._sessions
        assert sessions is not None
        for session in found:
            if request.disconnect:
                log.info("[%s] RADIUS Disconnect-Request from %s: ending the session of %r", session.id,
                         request.source[0], session.user)
                sessions.kill(session, "disconnected by the RADIUS server", TerminateCause.ADMIN_RESET)
            else:
                self._change(sessions, session, request)
        return True, None

    def _match(self, request: DaeRequest) -> list[Session]:
        sessions = self._sessions
        if sessions is None:
            return []
        ids = {str(v) for v in request.values("Acct-Session-Id")}
        users = {str(v) for v in request.values("User-Name")}
        addresses = {v for v in request.values("Framed-IP-Address") if isinstance(v, ipaddress.IPv4Address)}
        return [s for s in sessions.all()
                if (not ids or s.id in ids) and (not users or s.user in users)
                and (not addresses or s.address in addresses) and not s.link.finished]

    def _change(self, sessions: BuiltinSessions, session: Session, request: DaeRequest) -> None:
        for value in request.values("Session-Timeout"):
            if isinstance(value, int):
                sessions.set_session_timeout(session, float(value) if value else None)
                log.info("[%s] RADIUS CoA: session timeout %s", session.id, f"{value} s" if value else "off")
        for value in request.values("Idle-Timeout"):
            if isinstance(value, int):
                session.link.set_idle_timeout(float(value))
                log.info("[%s] RADIUS CoA: idle timeout %s", session.id, f"{value} s" if value else "off")
        rate = radius_rate(tuple(str(v) for v in request.values("Filter-Id")))
        if rate is not None and sessions.rate_setter is not None:
            log.info("[%s] RADIUS CoA: rate %d/%d kbit/s", session.id, rate.down, rate.up)
            task: asyncio.Future[bool] = asyncio.ensure_future(sessions.rate_setter(session, rate.down,
                                                                                     rate.up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


#: Asks every worker to decide on a forwarded request: their verdicts (None: no answer).
AskWorkers = Callable[[bytes, tuple[str, int]], Awaitable[list[dict[str, Any] | None]]]


class DaeForwarder:
    """The supervisor's Disconnect/CoA listener (``--workers``): checked here, decided by every
    worker for its own sessions, answered once."""

    def __init__(self, setup: RadiusSetup, ask: AskWorkers) -> None:
        assert setup.dae_listen is not None
        self.setup = setup
        self.ask = ask
        self.engine = DaeEngine({c: setup.dae_secret for c in setup.dae_clients})
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._drops = DynamicAuthorization(setup)  # its drop log only
        self._drops.engine = self.engine

    async def start(self) -> None:
        assert self.setup.dae_listen is not None
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self.datagram_received),
                                                           local_addr=self.setup.dae_listen)
        self._transport = transport
        host, port = self.setup.dae_listen
        log.info("RADIUS Disconnect/CoA requests accepted on %s:%d from %s, for every worker", host, port,
                 ", ".join(self.setup.dae_clients))

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for task in list(self._tasks):
            task.cancel()

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        data = data[:MAX_PACKET_SIZE]
        result = self.engine.receive(data, source, wall=time.time())
        if result is None:
            self._drops._log_drops()
            return
        if isinstance(result, bytes):
            self._send(result, source)
            return
        task = asyncio.get_running_loop().create_task(self._decide(result, data, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, request: DaeRequest, data: bytes, source: tuple[str, int]) -> None:
        verdicts = [v for v in await self.ask(data, source) if v is not None and v.get("ok")]
        ack, error = merge_verdicts(verdicts)
        if not ack:
            log.warning("RADIUS %s-Request from %s refused (%d) by every worker",
                        "Disconnect" if request.disconnect else "CoA", source[0], int(error or 0))
        echo: list[tuple[str, AttributeValue]] = [("Proxy-State", v) for v in request.values("Proxy-State")]
        self._send(self.engine.answer(request, ack=ack, error=error, attributes=echo), source)

    def _send(self, data: bytes, target: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, target)


def merge_verdicts(verdicts: list[dict[str, Any]]) -> tuple[bool, ErrorCause | None]:
    """ACK if any worker acked; else the first cause that is not "session not found" (a
    request the workers cannot honour says why), else "session not found"; no worker at all:
    resources unavailable."""
    if not verdicts:
        return False, ErrorCause.RESOURCES_UNAVAILABLE
    if any(v.get("ack") for v in verdicts):
        return True, None
    causes = [ErrorCause(int(v["error"])) for v in verdicts if v.get("error") is not None]
    telling = [c for c in causes if c is not ErrorCause.SESSION_CONTEXT_NOT_FOUND]
    if telling:
        return False, telling[0]
    return False, ErrorCause.SESSION_CONTEXT_NOT_FOUND
