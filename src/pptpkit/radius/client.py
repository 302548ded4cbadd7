"""The RADIUS client engine (sans-IO): requests out, verified answers in.

What it does, and where the rule comes from:

* Identifiers per server (RFC 2865 3, RFC 5080 2.2): each (server, Identifier) pair names one
  outstanding request; at most ``max_outstanding`` per server, further requests wait in a queue
  of at most ``max_queued`` (beyond that :class:`RadiusBusyError`).
* Retransmission (RFC 5080 2.2.1): the same bytes - same Identifier and Request Authenticator -
  to the same server, after ``timeout``, ``timeout*backoff`` ... capped at ``max_timeout``,
  ``retries`` times; then failover to the next server in configured order, re-encoded there
  with its own secret, a fresh Identifier and authenticator (and, for accounting, an updated
  Acct-Delay-Time, RFC 2866 5.2).  A server that let a request time out is skipped by new
  requests for ``dead_time`` seconds (:class:`ServerDown` says so once); when every server
  is down the first is tried anyway.  After the last server: :class:`RequestTimedOut`.
* Every request carries a Message-Authenticator (RFC 3579 3.2), first, as the Blast-RADIUS
  advisory (CVE-2024-3596) recommends.  Every Access-Accept/Reject/Challenge must carry a valid
  one too (``require_message_authenticator``); Accounting-Responses are checked when they carry
  one, required only with ``require_accounting_message_authenticator`` because servers
  (FreeRADIUS among them) send them without and they grant nothing.
* A response is accepted only from the server's address and port, with a known Identifier, a
  code that answers the request, a valid Response Authenticator (RFC 2865 3) and Message-
  Authenticator.  Anything else is dropped and counted in :class:`RadiusClientStats`, and the
  request keeps waiting: a forged or stray packet cannot end it.

Inputs: :meth:`RadiusClient.send_access_request` / ``send_accounting_request`` /
``send_status_server``, :meth:`receive_datagram` and :meth:`handle_timer`; outputs:
:meth:`datagrams_to_send` (``(bytes, (host, port))`` pairs), :meth:`next_event` and
:meth:`get_timer`.  No socket, no clock: ``now`` comes in.
"""

from __future__ import annotations

import collections
import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from pptpkit.errors import ConfigError, DecodeError, PptpkitError
from pptpkit.radius import crypto
from pptpkit.radius.packet import (
    Attribute,
    AttributeValue,
    Code,
    RawAttribute,
    RawPacket,
    decode_attributes,
    encode_attributes,
)

__all__ = [
    "AccessAccepted",
    "AccessChallenged",
    "AccessRejected",
    "AccountingResponded",
    "RadiusBusyError",
    "RadiusClient",
    "RadiusClientConfig",
    "RadiusClientStats",
    "RadiusEvent",
    "RadiusServer",
    "RequestTimedOut",
    "ServerDown",
    "ServerUp",
    "StatusServerAnswered",
]

AttributeSpec = Attribute | tuple[str, AttributeValue]
Endpoint = tuple[str, int]

_ANSWERS: Final[dict[int, frozenset[int]]] = {
    Code.ACCESS_REQUEST: frozenset({Code.ACCESS_ACCEPT, Code.ACCESS_REJECT, Code.ACCESS_CHALLENGE}),
    Code.ACCOUNTING_REQUEST: frozenset({Code.ACCOUNTING_RESPONSE}),
    # RFC 5997 3: Access-Accept from an authentication port, Accounting-Response from an
    # accounting port.
    Code.STATUS_SERVER: frozenset({Code.ACCESS_ACCEPT, Code.ACCOUNTING_RESPONSE}),
}
_ZERO_AUTH: Final = b"\0" * 16
_MA_PLACEHOLDER: Final = RawAttribute(crypto.MESSAGE_AUTHENTICATOR_TYPE, _ZERO_AUTH)


class RadiusBusyError(PptpkitError):
    """Every identifier is in use and the queue is full: the request was not taken."""


@dataclass(frozen=True, kw_only=True)
class RadiusServer:
    """One server: an IP address (v4 or v6 literal), a UDP port and its shared secret."""

    address: str
    port: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        try:
            canonical = str(ipaddress.ip_address(self.address))
        except ValueError:
            raise ConfigError(f"RADIUS server {self.address!r} is not an IP address") from None
        object.__setattr__(self, "address", canonical)
        if not 0 < self.port < 65536:
            raise ConfigError(f"RADIUS server port {self.port} outside 1..65535")
        if not self.secret:
            raise ConfigError(f"RADIUS server {self.address}: empty shared secret")
        if len(self.secret) > 256:
            raise ConfigError(f"RADIUS server {self.address}: shared secret over 256 octets")

    @property
    def endpoint(self) -> Endpoint:
        return (self.address, self.port)

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class RadiusClientConfig:
    servers: tuple[RadiusServer, ...]
    timeout: float = 3.0
    retries: int = 2
    backoff: float = 2.0
    max_timeout: float = 30.0
    dead_time: float = 30.0
    max_outstanding: int = 256
    max_queued: int = 4096
    require_message_authenticator: bool = True
    require_accounting_message_authenticator: bool = False

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("no RADIUS server configured")
        if len({s.endpoint for s in self.servers}) != len(self.servers):
            raise ConfigError("a RADIUS server is listed twice")
        if not 0 < self.timeout <= self.max_timeout:
            raise ConfigError("RADIUS timeout must be > 0 and <= max_timeout")
        if not 0 <= self.retries <= 20:
            raise ConfigError("RADIUS retries must be 0..20")
        if self.backoff < 1:
            raise ConfigError("RADIUS backoff must be >= 1")
        if self.dead_time < 0:
            raise ConfigError("RADIUS dead_time must be >= 0")
        if not 1 <= self.max_outstanding <= 256:
            raise ConfigError("RADIUS max_outstanding must be 1..256 (one octet of Identifier)")
        if not 0 <= self.max_queued <= 1_000_000:
            raise ConfigError("RADIUS max_queued must be 0..1000000")


@dataclass(slots=True)
class RadiusClientStats:
    """Counters; every dropped datagram is in exactly one ``dropped_*``."""

    requests: int = 0
    transmissions: int = 0
    retransmissions: int = 0
    failovers: int = 0
    timeouts: int = 0
    responses: int = 0
    dropped_malformed: int = 0
    dropped_unknown_source: int = 0
    dropped_unknown_identifier: int = 0
    dropped_unexpected_code: int = 0
    dropped_bad_authenticator: int = 0
    dropped_missing_message_authenticator: int = 0
    dropped_bad_message_authenticator: int = 0

    @property
    def dropped(self) -> int:
        return (self.dropped_malformed + self.dropped_unknown_source + self.dropped_unknown_identifier
                + self.dropped_unexpected_code + self.dropped_bad_authenticator
                + self.dropped_missing_message_authenticator + self.dropped_bad_message_authenticator)


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Answer:
    request_id: int
    server: str  # label, host:port
    code: int
    attributes: tuple[Attribute, ...]
    rtt: float


@dataclass(frozen=True, kw_only=True)
class AccessAccepted(_Answer):
    pass


@dataclass(frozen=True, kw_only=True)
class AccessRejected(_Answer):
    pass


@dataclass(frozen=True, kw_only=True)
class AccessChallenged(_Answer):
    pass


@dataclass(frozen=True, kw_only=True)
class AccountingResponded(_Answer):
    pass


@dataclass(frozen=True, kw_only=True)
class StatusServerAnswered(_Answer):
    pass


@dataclass(frozen=True, kw_only=True)
class RequestTimedOut:
    request_id: int
    servers: tuple[str, ...]  # labels of the servers tried, in order


@dataclass(frozen=True, kw_only=True)
class ServerDown:
    """A server let a request time out; new requests skip it for ``dead_time``."""

    server: str
    until: float


@dataclass(frozen=True, kw_only=True)
class ServerUp:
    """A server that was down answered again."""

    server: str


RadiusEvent = (AccessAccepted | AccessRejected | AccessChallenged | AccountingResponded
               | StatusServerAnswered | RequestTimedOut | ServerDown | ServerUp)


# -- the engine ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Request:
    request_id: int
    code: int
    attributes: tuple[AttributeSpec, ...]
    created: float
    first_server: int
    # One server only (Status-Server probes a given server, failover makes no sense there).
    pinned: bool
    server: int = -1
    tried: list[int] = field(default_factory=list)
    identifier: int = -1
    authenticator: bytes = b""
    packet: bytes = b""
    sent_at: float = 0.0
    transmissions: int = 0
    deadline: float | None = None


@dataclass(slots=True)
class _ServerState:
    server: RadiusServer
    in_use: dict[int, _Request] = field(default_factory=dict)
    next_identifier: int = 0
    down_until: float = 0.0
    down: bool = False


class RadiusClient:
    def __init__(self, config: RadiusClientConfig, *,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.config = config
        self.stats = RadiusClientStats()
        self._random = random_bytes
        self._servers = [_ServerState(s, next_identifier=random_bytes(1)[0]) for s in config.servers]
        self._by_endpoint = {s.endpoint: i for i, s in enumerate(config.servers)}
        self._requests: dict[int, _Request] = {}
        self._queue: collections.deque[_Request] = collections.deque()
        self._next_request_id = 1
        self._out: list[tuple[bytes, Endpoint]] = []
        self._events: collections.deque[RadiusEvent] = collections.deque()

    # -- public API ---------------------------------------------------------------------------

    def send_access_request(self, attributes: Sequence[AttributeSpec], now: float) -> int:
        """Queue an Access-Request; returns its request id (the events carry it)."""
        return self._submit(Code.ACCESS_REQUEST, attributes, now, None)

    def send_accounting_request(self, attributes: Sequence[AttributeSpec], now: float) -> int:
        return self._submit(Code.ACCOUNTING_REQUEST, attributes, now, None)

    def send_status_server(self, server_index: int, now: float,
                           attributes: Sequence[AttributeSpec] = ()) -> int:
        """RFC 5997 Status-Server to one server (no failover)."""
        if not 0 <= server_index < len(self._servers):
            raise ConfigError(f"no RADIUS server number {server_index}")
        return self._submit(Code.STATUS_SERVER, attributes, now, server_index)

    def cancel(self, request_id: int, now: float) -> None:
        """Forget a request (its answer, if one comes, is dropped as unknown)."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return
        if req in self._queue:
            self._queue.remove(req)
        else:
            self._release(req, now)

    def receive_datagram(self, data: bytes, source: Endpoint, now: float) -> None:
        try:
            packet = RawPacket.decode(data)
        except DecodeError:
            self.stats.dropped_malformed += 1
            return
        index = self._by_endpoint.get(_normalise(source))
        if index is None:
            self.stats.dropped_unknown_source += 1
            return
        state = self._servers[index]
        req = state.in_use.get(packet.identifier)
        if req is None:
            self.stats.dropped_unknown_identifier += 1
            return
        if packet.code not in _ANSWERS[req.code]:
            self.stats.dropped_unexpected_code += 1
            return
        # RFC 2865 3: octets past Length are padding, outside both authenticators.
        received = bytes(data[: int.from_bytes(data[2:4], "big")])
        secret = state.server.secret
        try:
            if not crypto.verify_response_authenticator(received, req.authenticator, secret):
                self.stats.dropped_bad_authenticator += 1
                return
            has_ma = any(a.type == crypto.MESSAGE_AUTHENTICATOR_TYPE for a in packet.attributes)
            required = (self.config.require_accounting_message_authenticator
                        if packet.code == Code.ACCOUNTING_RESPONSE and req.code == Code.ACCOUNTING_REQUEST
                        else self.config.require_message_authenticator)
            if not has_ma:
                if required:
                    self.stats.dropped_missing_message_authenticator += 1
                    return
            elif not crypto.verify_message_authenticator(received, secret, req.authenticator):
                self.stats.dropped_bad_message_authenticator += 1
                return
        except crypto.RadiusCryptoError:
            # Two Message-Authenticators or one of the wrong length.
            self.stats.dropped_malformed += 1
            return
        attributes = decode_attributes(packet.attributes, secret=secret,
                                       request_authenticator=req.authenticator)
        self.stats.responses += 1
        self._requests.pop(req.request_id, None)
        self._release(req, now)
        if state.down:
            state.down = False
            state.down_until = 0.0
            self._events.append(ServerUp(server=state.server.label))
        fields = {"request_id": req.request_id, "server": state.server.label, "code": packet.code,
                  "attributes": attributes, "rtt": now - req.sent_at}
        event: RadiusEvent
        if req.code == Code.STATUS_SERVER:
            event = StatusServerAnswered(**fields)  # type: ignore[arg-type]
        elif packet.code == Code.ACCESS_ACCEPT:
            event = AccessAccepted(**fields)  # type: ignore[arg-type]
        elif packet.code == Code.ACCESS_REJECT:
            event = AccessRejected(**fields)  # type: ignore[arg-type]
        elif packet.code == Code.ACCESS_CHALLENGE:
            event = AccessChallenged(**fields)  # type: ignore[arg-type]
        else:
            event = AccountingResponded(**fields)  # type: ignore[arg-type]
        self._events.append(event)

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> RadiusEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [r.deadline for r in self._requests.values() if r.deadline is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        due = [r for r in self._requests.values() if r.deadline is not None and r.deadline <= now]
        for req in sorted(due, key=lambda r: (r.deadline or 0.0, r.request_id)):
            if req.request_id not in self._requests:
                continue
            if req.transmissions <= self.config.retries:
                self._transmit(req, now, retransmission=True)
            else:
                self._give_up_on_server(req, now)

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered or timed out (queued ones excluded)."""
        return len(self._requests) - len(self._queue)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- internals ----------------------------------------------------------------------------

    def _submit(self, code: int, attributes: Sequence[AttributeSpec], now: float,
                pinned: int | None) -> int:
        for spec in attributes:
            name = spec.name if isinstance(spec, Attribute) else spec[0]
            if name == "Message-Authenticator":
                raise PptpkitError("Message-Authenticator is added by the engine")
        first = pinned if pinned is not None else self._pick_server(now)
        req = _Request(request_id=self._next_request_id, code=code, attributes=tuple(attributes),
                       created=now, first_server=first, pinned=pinned is not None)
        if not self._assign(req, first, now):
            if len(self._queue) >= self.config.max_queued:
                raise RadiusBusyError("RADIUS request queue is full")
            req.server = first
            self._queue.append(req)
        self._next_request_id += 1
        self._requests[req.request_id] = req
        self.stats.requests += 1
        return req.request_id

    def _pick_server(self, now: float) -> int:
        for i, state in enumerate(self._servers):
            if state.down_until <= now:
                return i
        # All down: try the one that comes back first rather than refuse.
        return min(range(len(self._servers)), key=lambda i: self._servers[i].down_until)

    def _assign(self, req: _Request, index: int, now: float) -> bool:
        """Give ``req`` an Identifier on server ``index`` and send it; False when none is free."""
        state = self._servers[index]
        if len(state.in_use) >= self.config.max_outstanding:
            return False
        ident = state.next_identifier
        while ident in state.in_use:
            ident = (ident + 1) & 0xFF
        state.next_identifier = (ident + 1) & 0xFF
        state.in_use[ident] = req
        req.server = index
        req.identifier = ident
        req.tried.append(index)
        req.transmissions = 0
        req.packet = self._encode(req, state.server, now)
        self._transmit(req, now, retransmission=False)
        return True

    def _encode(self, req: _Request, server: RadiusServer, now: float) -> bytes:
        attributes = list(req.attributes)
        if req.code == Code.ACCOUNTING_REQUEST:
            attributes = _with_delay(attributes, int(now - req.created))
        if req.code in (Code.ACCESS_REQUEST, Code.STATUS_SERVER):
            authenticator = self._random(16)
        else:
            authenticator = _ZERO_AUTH
        raw = encode_attributes(attributes, secret=server.secret, authenticator=authenticator,
                                salt=self._salt)
        draft = RawPacket(code=req.code, identifier=req.identifier, authenticator=authenticator,
                          attributes=(_MA_PLACEHOLDER, *raw)).encode()
        # RFC 3579 3.2 / RFC 5176 3.3: Accounting-Request's HMAC is over a zero Authenticator.
        ma = crypto.message_authenticator(draft, server.secret)
        signed = draft[:22] + ma + draft[38:]
        if req.code == Code.ACCOUNTING_REQUEST:
            authenticator = crypto.accounting_request_authenticator(signed, server.secret)
            signed = signed[:4] + authenticator + signed[20:]
        req.authenticator = authenticator
        return signed

    def _salt(self) -> bytes:
        salt = self._random(2)
        return bytes([salt[0] | 0x80, salt[1]])

    def _transmit(self, req: _Request, now: float, *, retransmission: bool) -> None:
        state = self._servers[req.server]
        self._out.append((req.packet, state.server.endpoint))
        req.transmissions += 1
        self.stats.transmissions += 1
        if retransmission:
            self.stats.retransmissions += 1
        else:
            req.sent_at = now
        c = self.config
        req.deadline = now + min(c.timeout * c.backoff ** (req.transmissions - 1), c.max_timeout)

    def _release(self, req: _Request, now: float) -> None:
        if req.server < 0:
            return
        state = self._servers[req.server]
        if state.in_use.get(req.identifier) is req:
            del state.in_use[req.identifier]
        req.deadline = None
        self._drain_queue(req.server, now)

    def _drain_queue(self, index: int, now: float) -> None:
        if not self._queue:
            return
        for waiting in list(self._queue):
            if waiting.server != index:
                continue
            if len(self._servers[index].in_use) >= self.config.max_outstanding:
                return
            self._queue.remove(waiting)
            self._assign(waiting, index, now)

    def _give_up_on_server(self, req: _Request, now: float) -> None:
        state = self._servers[req.server]
        if state.in_use.get(req.identifier) is req:
            del state.in_use[req.identifier]
        if not state.down or state.down_until < now:
            state.down_until = now + self.config.dead_time
            if not state.down:
                state.down = True
                self._events.append(ServerDown(server=state.server.label, until=state.down_until))
        old = req.server
        nxt = None if req.pinned else self._next_untried(req)
        if nxt is not None:
            self.stats.failovers += 1
            if not self._assign(req, nxt, now):
                req.server = nxt
                req.deadline = None
                self._queue.append(req)
        else:
            self.stats.timeouts += 1
            self._requests.pop(req.request_id, None)
            req.deadline = None
            self._events.append(RequestTimedOut(
                request_id=req.request_id,
                servers=tuple(self._servers[i].server.label for i in req.tried)))
        self._drain_queue(old, now)

    def _next_untried(self, req: _Request) -> int | None:
        n = len(self._servers)
        for step in range(1, n):
            i = (req.first_server + step) % n
            if i not in req.tried:
                return i
        return None


def _normalise(source: Endpoint) -> Endpoint:
    host, port = source[0], source[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host, port)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), port)


def _with_delay(attributes: list[AttributeSpec], elapsed: int) -> list[AttributeSpec]:
    """Add ``elapsed`` seconds to Acct-Delay-Time (RFC 2866 5.2), adding it when absent and the
    request is late."""
    out: list[AttributeSpec] = []
    found = False
    for spec in attributes:
        name, value = (spec.name, spec.value) if isinstance(spec, Attribute) else spec
        if name == "Acct-Delay-Time" and isinstance(value, int):
            found = True
            spec = ("Acct-Delay-Time", value + max(elapsed, 0))
        out.append(spec)
    if not found and elapsed > 0:
        out.append(("Acct-Delay-Time", elapsed))
    return out
