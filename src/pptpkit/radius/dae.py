"""Dynamic authorization (RFC 5176): Disconnect-Request and CoA-Request in, ACK or NAK out,
sans-IO.

:meth:`DaeEngine.receive` takes a datagram and its source and returns either a
:class:`DaeRequest` for the owner to act on, the bytes to send back at once (the answer to a
retransmission it already answered), or None (dropped and counted).  :meth:`DaeEngine.answer`
turns the owner's decision into the signed response.

What is checked, and where the rule comes from:

* the source address must be a configured client (RFC 5176 5.1: only trusted servers);
* the Request Authenticator is the MD5 over the packet with a zero Authenticator and the
  secret, as for Accounting-Request (RFC 5176 2.3); a mismatch is dropped silently (RFC 5176
  3.5: "silently discarded"), counted;
* a Message-Authenticator, when present, must verify (RFC 5176 3.3 over the zero
  Authenticator); with ``require_message_authenticator`` it must be present.  The server does
  not require it: unlike an Access-Request's random authenticator, this Request Authenticator
  is already keyed MD5 over the whole packet, so the attribute would add no integrity;
* the same request again (source, Identifier and Authenticator) gets the same answer without
  being acted on twice (RFC 5176 2.3: the server retransmits after a lost answer);
* an ``Event-Timestamp``, when present, must be within ``event_window`` (300 s) of our wall
  clock, else the request is dropped silently (RFC 5176 3.5, replay protection).  A request
  recorded and replayed later is signed correctly, so only the time tells it apart; a server
  that retransmits sets a fresh timestamp, hence a new Authenticator.  The clock comes in as
  ``wall``, like ``now`` everywhere else;
* answers carry the Response Authenticator over the Request Authenticator (RFC 5176 2.3) and a
  Message-Authenticator when the request had one.

Everything a peer can make us remember is capped: the answered-request cache holds at most
``max_cached`` answers (oldest out), and is the only state.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pptpkit.errors import DecodeError, PptpkitError
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

__all__ = ["DaeEngine", "DaeRequest", "DaeStats", "ErrorCause"]

_ZERO: Final = b"\0" * 16
_MA_PLACEHOLDER: Final = RawAttribute(crypto.MESSAGE_AUTHENTICATOR_TYPE, _ZERO)
_ANSWER: Final = {Code.DISCONNECT_REQUEST: (Code.DISCONNECT_ACK, Code.DISCONNECT_NAK),
                  Code.COA_REQUEST: (Code.COA_ACK, Code.COA_NAK)}


class ErrorCause(enum.IntEnum):
    """RFC 5176 3.5 Error-Cause values a NAS sends."""

    UNSUPPORTED_ATTRIBUTE = 401
    MISSING_ATTRIBUTE = 402
    NAS_IDENTIFICATION_MISMATCH = 403
    INVALID_REQUEST = 404
    UNSUPPORTED_SERVICE = 405
    SESSION_CONTEXT_NOT_FOUND = 503
    SESSION_CONTEXT_NOT_REMOVABLE = 504
    RESOURCES_UNAVAILABLE = 506


@dataclass(frozen=True, kw_only=True)
class DaeRequest:
    code: Code
    identifier: int
    authenticator: bytes
    source: tuple[str, int]
    attributes: tuple[Attribute, ...]
    had_message_authenticator: bool

    @property
    def disconnect(self) -> bool:
        return self.code == Code.DISCONNECT_REQUEST

    def values(self, name: str) -> list[AttributeValue]:
        return [a.value for a in self.attributes if a.name == name and not a.malformed]


@dataclass(slots=True)
class DaeStats:
    received: int = 0
    requests: int = 0
    duplicates: int = 0
    dropped_unknown_client: int = 0
    dropped_malformed: int = 0
    dropped_bad_code: int = 0
    dropped_bad_authenticator: int = 0
    dropped_bad_message_authenticator: int = 0
    dropped_missing_message_authenticator: int = 0
    dropped_stale: int = 0  # Event-Timestamp outside the window: a replay, or a clock far off
    acks: int = 0
    naks: int = 0


@dataclass
class DaeEngine:
    """``clients``: address -> shared secret of every server allowed to send requests."""

    clients: Mapping[str, bytes]
    require_message_authenticator: bool = False
    max_cached: int = 256
    event_window: float = 300.0
    stats: DaeStats = field(default_factory=DaeStats)
    _answered: collections.OrderedDict[tuple[str, int, bytes], bytes] = field(
        default_factory=collections.OrderedDict)

    def receive(self, data: bytes, source: tuple[str, int], *, wall: float) -> DaeRequest | bytes | None:
        """``wall``: the time now, in seconds since the epoch (what Event-Timestamp counts)."""
        self.stats.received += 1
        secret = self.clients.get(source[0])
        if secret is None:
            self.stats.dropped_unknown_client += 1
            return None
        try:
            packet = RawPacket.decode(data)
        except DecodeError:
            self.stats.dropped_malformed += 1
            return None
        if packet.code not in _ANSWER:
            self.stats.dropped_bad_code += 1
            return None
        raw = bytes(data[: _length(data)])
        if crypto.accounting_request_authenticator(raw, secret) != packet.authenticator:
            self.stats.dropped_bad_authenticator += 1
            return None
        has_ma = any(a.type == crypto.MESSAGE_AUTHENTICATOR_TYPE for a in packet.attributes)
        if has_ma:
            try:
                ok = crypto.verify_message_authenticator(raw, secret, _ZERO)
            except crypto.RadiusCryptoError:
                ok = False
            if not ok:
                self.stats.dropped_bad_message_authenticator += 1
                return None
        elif self.require_message_authenticator:
            self.stats.dropped_missing_message_authenticator += 1
            return None
        key = (source[0], packet.identifier, packet.authenticator)
        cached = self._answered.get(key)
        if cached is not None:
            self.stats.duplicates += 1
            return cached
        try:
            attributes = decode_attributes(packet.attributes, secret=secret,
                                           request_authenticator=packet.authenticator)
        except PptpkitError:
            self.stats.dropped_malformed += 1
            return None
        for attribute in attributes:
            if attribute.name == "Event-Timestamp":
                stamp = attribute.value
                if attribute.malformed or not isinstance(stamp, int) or abs(stamp - wall) > self.event_window:
                    self.stats.dropped_stale += 1
                    return None
        self.stats.requests += 1
        return DaeRequest(code=Code(packet.code), identifier=packet.identifier,
                          authenticator=packet.authenticator, source=source, attributes=attributes,
                          had_message_authenticator=has_ma)

    def answer(self, request: DaeRequest, *, ack: bool, error: ErrorCause | None = None,
               attributes: Sequence[tuple[str, AttributeValue]] = ()) -> bytes:
        """The signed ACK/NAK for ``request`` (remembered for its retransmissions)."""
        secret = self.clients[request.source[0]]
        code = _ANSWER[request.code][0 if ack else 1]
        specs = list(attributes)
        if error is not None:
            specs.append(("Error-Cause", int(error)))
        raw = encode_attributes(specs, secret=secret, authenticator=request.authenticator,
                                salt=lambda: b"\x80\x00")
        head = (_MA_PLACEHOLDER,) if request.had_message_authenticator else ()
        draft = RawPacket(code=code, identifier=request.identifier, authenticator=request.authenticator,
                          attributes=(*head, *raw)).encode()
        if request.had_message_authenticator:
            ma = crypto.message_authenticator(draft, secret, request.authenticator)
            draft = draft[:22] + ma + draft[38:]
        signed = draft[:4] + crypto.response_authenticator(draft, request.authenticator, secret) + draft[20:]
        if ack:
            self.stats.acks += 1
        else:
            self.stats.naks += 1
        self._answered[(request.source[0], request.identifier, request.authenticator)] = signed
        while len(self._answered) > self.max_cached:
            self._answered.popitem(last=False)
        return signed


def _length(data: bytes) -> int:
    return int.from_bytes(data[2:4], "big")
