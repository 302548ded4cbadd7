"""PAP (RFC 1334 section 2): the peer sends its name and password, the authenticator Acks or Naks.

Behaviour follows pppd where the RFC leaves room:

* the peer changes the Identifier on every (re)transmission, retransmits every
  ``restart_interval`` and gives up after ``max_transmits`` requests; an Ack/Nak answering any of
  the requests of this exchange counts (a late answer to an earlier copy is still the answer);
* the authenticator answers a repeated Authenticate-Request after its verdict with the same
  verdict (the peer may have lost our Ack), and gives up when no request comes within
  ``request_timeout``;
* an Ack/Nak without the Msg-Length octet is accepted (some peers omit it).

The password is compared as is; pppd's crypt() and ``login`` fallbacks are not supported.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from pptpkit.auth.base import (
    MAX_NAME_LEN,
    AuthEngine,
    AuthenticatorConfig,
    AuthSucceeded,
    ExternalVerdict,
    FailureKind,
    KeyMaterial,
    PapCredentials,
    PeerConfig,
    Role,
    VerifyRequest,
    build_packet,
    lookup_peer_secret,
    read_header,
    text_message,
    text_name,
    wire_name,
)
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import AddressPolicy
from pptpkit.errors import DecodeError
from pptpkit.wire import Reader

__all__ = [
    "PapAck",
    "PapAuthenticator",
    "PapCode",
    "PapNak",
    "PapPacket",
    "PapPeer",
    "PapRequest",
    "PapUnknown",
    "decode_pap",
]


class PapCode(IntEnum):
    AUTHENTICATE_REQUEST = 1
    AUTHENTICATE_ACK = 2
    AUTHENTICATE_NAK = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class PapRequest:
    code: ClassVar[int] = PapCode.AUTHENTICATE_REQUEST
    identifier: int
    peer_id: bytes
    password: bytes

    def encode(self) -> bytes:
        if len(self.peer_id) > 255 or len(self.password) > 255:
            raise ValueError("PAP Peer-ID and Password are limited to 255 bytes")
        body = bytes([len(self.peer_id)]) + self.peer_id + bytes([len(self.password)]) + self.password
        return build_packet(self.code, self.identifier, body)

    @classmethod
    def decode_body(cls, identifier: int, r: Reader) -> PapRequest:
        peer_id = r.take(r.u8())
        password = r.take(r.u8())
        # Octets after the password inside Length carry nothing; pppd ignores them and so do we.
        return cls(identifier=identifier, peer_id=peer_id, password=password)


@dataclass(frozen=True, kw_only=True, slots=True)
class _PapReply:
    identifier: int
    message: bytes = b""

    code: ClassVar[int]

    def encode(self) -> bytes:
        if len(self.message) > 255:
            raise ValueError("PAP message limited to 255 bytes")
        return build_packet(self.code, self.identifier, bytes([len(self.message)]) + self.message)

    @classmethod
    def decode_body(cls, identifier: int, r: Reader) -> _PapReply:
        if r.at_end():
            return cls(identifier=identifier)  # Msg-Length omitted
        return cls(identifier=identifier, message=r.take(r.u8()))


@dataclass(frozen=True, kw_only=True, slots=True)
class PapAck(_PapReply):
    code: ClassVar[int] = PapCode.AUTHENTICATE_ACK


@dataclass(frozen=True, kw_only=True, slots=True)
class PapNak(_PapReply):
    code: ClassVar[int] = PapCode.AUTHENTICATE_NAK


@dataclass(frozen=True, kw_only=True, slots=True)
class PapUnknown:
    """A code PAP does not define; kept raw."""

    code: int
    identifier: int
    data: bytes

    def encode(self) -> bytes:
        return build_packet(self.code, self.identifier, self.data)


PapPacket = PapRequest | PapAck | PapNak | PapUnknown

_DECODERS: dict[int, type[PapRequest] | type[PapAck] | type[PapNak]] = {
    PapCode.AUTHENTICATE_REQUEST: PapRequest,
    PapCode.AUTHENTICATE_ACK: PapAck,
    PapCode.AUTHENTICATE_NAK: PapNak,
}


def decode_pap(data: bytes) -> PapPacket:
    """Decode one PAP packet; only :class:`DecodeError` escapes."""
    code, identifier, r = read_header(data)
    cls = _DECODERS.get(code)
    if cls is None:
        return PapUnknown(code=code, identifier=identifier, data=r.rest())
    result = cls.decode_body(identifier, r)
    assert isinstance(result, PapRequest | PapAck | PapNak)
    return result


def _message_bytes(text: str) -> bytes:
    return text.encode("utf-8")[:255]


class _ServerState(enum.Enum):
    WAITING = "waiting"
    VERIFYING = "verifying"  # the request is with the external verifier (RADIUS)
    OPEN = "open"
    FAILED = "failed"


class PapAuthenticator(AuthEngine):
    """The PAP authenticator: waits for the peer's request and checks it against the secrets."""

    method = AuthMethod.PAP
    role = Role.AUTHENTICATOR

    __slots__ = ('_pending_id', '_state', '_username', '_verdict', 'config')

    def __init__(self, config: AuthenticatorConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _ServerState.WAITING
        self._verdict: PapAck | PapNak | None = None
        self._username = ""
        self._pending_id = 0

    def _start(self, now: float) -> None:
        if self.config.request_timeout:
            self._set_timer(now + self.config.request_timeout)

    def _on_timer(self, now: float) -> None:
        if self._state is _ServerState.WAITING:
            self._state = _ServerState.FAILED
            self._fail(
                "",
                FailureKind.TIMEOUT,
                f"no PAP Authenticate-Request within {self.config.request_timeout:g} s",
            )
        elif self._state is _ServerState.VERIFYING:
            self._refuse(self._pending_id, self.config.failure_message, FailureKind.TIMEOUT,
                         f"no verdict from the verifier in {self.config.verification_timeout:g} s")

    def _receive(self, packet: bytes, now: float) -> None:
        pkt = decode_pap(packet)
        if not isinstance(pkt, PapRequest):
            self.counters.ignored += 1
            return
        if self._verdict is not None:
            # The peer did not hear our verdict: repeat it, with its new identifier.
            self._send(type(self._verdict)(identifier=pkt.identifier, message=self._verdict.message).encode())
            return
        if self._state is _ServerState.VERIFYING:
            # A retransmission while the verifier decides: answer it, not the first one (the
            # peer may have moved its identifier on), and do not ask twice.
            self._pending_id = pkt.identifier
            self.counters.ignored += 1
            return
        if self._state is not _ServerState.WAITING:
            self.counters.ignored += 1  # we already gave up waiting
            return
        if len(pkt.peer_id) > MAX_NAME_LEN:
            raise DecodeError("PAP Peer-ID longer than we accept")
        name = text_name(pkt.peer_id)
        self._username = name
        if self.config.external:
            self._pending_id = pkt.identifier
            self._state = _ServerState.VERIFYING
            self._set_timer(now + self.config.verification_timeout)
            self._emit(VerifyRequest(method=self.method, role=self.role, username=name,
                                     credentials=PapCredentials(password=pkt.password)))
            return
        found = lookup_peer_secret(self.config, name)
        ok = found is not None and hmac.compare_digest(wire_name(found.secret), pkt.password)
        if ok:
            assert found is not None
            self._succeed(pkt.identifier, self.config.success_message, found.addresses, found.source, None)
            return
        if found is None:
            self._refuse(pkt.identifier, self.config.failure_message, FailureKind.UNKNOWN_PEER,
                         f"no PAP secret for {name!r}")
        else:
            self._refuse(pkt.identifier, self.config.failure_message, FailureKind.WRONG_SECRET,
                         f"wrong PAP password for {name!r}")

    def _complete(self, verdict: ExternalVerdict, now: float) -> None:
        if self._state is not _ServerState.VERIFYING:
            self.counters.ignored += 1
            return
        if verdict.ok:
            self._succeed(self._pending_id, verdict.message or self.config.success_message, None, "external",
                          verdict.key_material)
        else:
            reason = verdict.reason or f"PAP password for {self._username!r} rejected by the verifier"
            self._refuse(self._pending_id, verdict.message or self.config.failure_message,
                         FailureKind.WRONG_SECRET, reason)

    def _succeed(self, identifier: int, message: str, addresses: AddressPolicy | None, source: str | None,
                 keys: KeyMaterial | None) -> None:
        verdict = PapAck(identifier=identifier, message=_message_bytes(message))
        self._verdict = verdict
        self._send(verdict.encode())
        self._state = _ServerState.OPEN
        self._set_timer(None)
        self._emit(
            AuthSucceeded(
                method=self.method,
                role=self.role,
                username=self._username,
                peer_name=self._username,
                message=message,
                key_material=keys,
                addresses=addresses,
                secret_source=source,
            )
        )

    def _refuse(self, identifier: int, message: str, kind: FailureKind, reason: str) -> None:
        verdict = PapNak(identifier=identifier, message=_message_bytes(message))
        self._verdict = verdict
        self._send(verdict.encode())
        self._state = _ServerState.FAILED
        self._fail(self._username, kind, reason)


class _PeerState(enum.Enum):
    REQUESTING = "requesting"
    OPEN = "open"
    FAILED = "failed"


class PapPeer(AuthEngine):
    """The PAP peer: sends name and password until Ack'ed or Nak'ed."""

    method = AuthMethod.PAP
    role = Role.PEER

    __slots__ = ('_id', '_password', '_sent_ids', '_state', '_transmits', 'config')

    def __init__(self, config: PeerConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _PeerState.REQUESTING
        self._id = config.random(1)[0]
        self._sent_ids: set[int] = set()
        self._transmits = 0
        self._password: bytes = b""

    def _start(self, now: float) -> None:
        password = self.config.password_for(None)
        if password is None:
            self._state = _PeerState.FAILED
            self._fail(
                self.config.username,
                FailureKind.NO_SECRET,
                f"no PAP secret for {self.config.username!r} towards {self.config.remote_name or '*'!r}",
            )
            return
        self._password = wire_name(password)
        self._transmit(now)

    def _transmit(self, now: float) -> None:
        # RFC 1334: the Identifier changes with every Authenticate-Request sent.
        self._id = (self._id + 1) & 0xFF
        self._sent_ids.add(self._id)  # identifiers are one octet: at most 256 entries
        request = PapRequest(
            identifier=self._id, peer_id=wire_name(self.config.username), password=self._password
        )
        self._send(request.encode(), retransmission=self._transmits > 0)
        self._transmits += 1
        self._set_timer(now + self.config.restart_interval)

    def _on_timer(self, now: float) -> None:
        if self._state is not _PeerState.REQUESTING:
            return
        if self._transmits >= self.config.max_transmits:
            self._state = _PeerState.FAILED
            self._fail(
                self.config.username,
                FailureKind.TIMEOUT,
                f"no answer to {self._transmits} PAP Authenticate-Requests",
            )
            return
        self._transmit(now)

    def _receive(self, packet: bytes, now: float) -> None:
        pkt = decode_pap(packet)
        if not isinstance(pkt, PapAck | PapNak) or self._state is not _PeerState.REQUESTING:
            self.counters.ignored += 1
            return
        if pkt.identifier not in self._sent_ids:
            self.counters.ignored += 1
            return
        message = text_message(pkt.message)
        if isinstance(pkt, PapAck):
            self._state = _PeerState.OPEN
            self._set_timer(None)
            self._emit(
                AuthSucceeded(
                    method=self.method,
                    role=self.role,
                    username=self.config.username,
                    peer_name=self.config.remote_name or "",
                    message=message,
                )
            )
        else:
            self._state = _PeerState.FAILED
            self._fail(
                self.config.username,
                FailureKind.REJECTED,
                "the authenticator rejected our PAP password" + (f": {message}" if message else ""),
                message=message,
            )
