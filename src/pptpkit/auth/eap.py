"""EAP over PPP (RFC 3748, formerly RFC 2284), both roles, with EAP-MS-CHAPv2 and EAP-MD5.

The authenticator asks for the Identity, then offers its methods in ``eap_methods`` order; a
peer that does not want one answers with a (legacy) Nak listing the types it would accept, and
the authenticator moves to the first of its remaining methods that the Nak lists (one Nak per
offer; no acceptable method ends in EAP-Failure).  Requests are retransmitted unchanged every
``restart_interval`` up to ``max_transmits`` times; only a Response with the outstanding
Identifier is looked at.

EAP-MS-CHAPv2 (type 26, draft-kamath-pppext-eap-mschapv2) carries the MS-CHAPv2 exchange in
Type-Data as ``OpCode, MS-CHAPv2-ID, MS-Length (= EAP Length - 5), data``:

* Challenge (1): Value-Size 16, challenge, authenticator name;
* Response (2): Value-Size 49, the MS-CHAPv2 response value, peer name;
* Success-Request (3) with ``S=... M=...``, answered by a Success-Response that is the OpCode
  alone; only then does the authenticator send EAP-Success;
* Failure-Request (4) with ``E=... R=0 C=... V=3 M=...``, answered by a Failure-Response (OpCode
  alone), then EAP-Failure.  We never offer ``R=1`` inside EAP.

EAP-MD5 (type 4) is CHAP-MD5 over the EAP Identifier.

The peer answers a repeated Request (same Identifier) with its previous Response unchanged, and
accepts EAP-Success only after a method finished to its satisfaction (for MS-CHAPv2: the
server's authenticator response checked out) - a server cannot skip authentication.  Responses
are never repeated on a timer (RFC 2284 2.2.1), and the authenticator does not repeat its
Success, so a lost Success would leave the peer discarding the authenticator's NCP packets until
it gave up.  Once the method is satisfied, the session hands the first such packet to
:meth:`~pptpkit.auth.base.AuthEngine.network_packet_seen`, which takes it as the Success (RFC
2284 2.2.2 allows exactly this).
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pptpkit.auth.base import (
    MAX_NAME_LEN,
    AuthEngine,
    AuthenticatorConfig,
    AuthSucceeded,
    FailureKind,
    KeyMaterial,
    MsChapV2Keys,
    PeerConfig,
    Role,
    build_packet,
    lookup_peer_secret,
    read_header,
    text_name,
    wire_name,
)
from pptpkit.auth.chap import PeerFailure, chap_md5_response
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.mschap import (
    MSCHAP_RESPONSE_LEN,
    MSCHAPV2_CHALLENGE_LEN,
    MsChapError,
    MsChapFailureMessage,
    MsChapSuccessMessage,
    V2PeerState,
    describe_error,
    v2_check_response,
    v2_peer_response,
)
from pptpkit.auth.secrets import SecretMatch
from pptpkit.enums import open_enum
from pptpkit.errors import DecodeError
from pptpkit.wire import Reader

__all__ = [
    "EapAuthenticator",
    "EapCode",
    "EapMd5",
    "EapMsChapV2",
    "EapMsChapV2OpCode",
    "EapPacket",
    "EapPeer",
    "EapType",
    "decode_eap",
]


class EapCode(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


class EapType(IntEnum):
    IDENTITY = 1
    NOTIFICATION = 2
    NAK = 3
    MD5_CHALLENGE = 4
    OTP = 5
    GTC = 6
    MSCHAPV2 = 26
    EXPANDED = 254
    EXPERIMENTAL = 255


@dataclass(frozen=True, kw_only=True, slots=True)
class EapPacket:
    """One EAP packet.  ``type`` is None for Success/Failure (they carry no Type field)."""

    code: EapCode | int
    identifier: int
    type: EapType | int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        if self.type is None:
            return build_packet(int(self.code), self.identifier, self.data)
        return build_packet(int(self.code), self.identifier, bytes([int(self.type)]) + self.data)


def decode_eap(data: bytes) -> EapPacket:
    """Decode one EAP packet; only :class:`DecodeError` escapes."""
    code, identifier, r = read_header(data)
    if code in (EapCode.REQUEST, EapCode.RESPONSE):
        if r.at_end():
            raise DecodeError("EAP Request/Response without a Type")
        etype = r.u8()
        return EapPacket(
            code=EapCode(code), identifier=identifier, type=open_enum(EapType, etype), data=r.rest()
        )
    # Success/Failure have no data (RFC 3748 4.2); anything else is an unknown code.  Both keep
    # whatever octets came along rather than refusing the packet.
    return EapPacket(code=open_enum(EapCode, code), identifier=identifier, data=r.rest())


@dataclass(frozen=True, kw_only=True, slots=True)
class EapMd5:
    """Type-Data of EAP-MD5 Challenge (Request and Response): Value-Size, Value, Name."""

    value: bytes
    name: bytes = b""

    def encode(self) -> bytes:
        if not 1 <= len(self.value) <= 255:
            raise ValueError("EAP-MD5 value must be 1..255 bytes")
        return bytes([len(self.value)]) + self.value + self.name

    @classmethod
    def decode(cls, data: bytes) -> EapMd5:
        r = Reader(data)
        size = r.u8()
        if size == 0:
            raise DecodeError("EAP-MD5 Value-Size is zero")
        value = r.take(size)
        return cls(value=value, name=r.rest())


class EapMsChapV2OpCode(IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4
    CHANGE_PASSWORD = 7


_MS_HDR: Final = struct.Struct("!BBH")

#: Requests the peer answers without a verdict before giving up (pppd's eap-max-rreq default):
#: a server cannot keep us busy forever with fresh Requests.
MAX_PEER_REQUESTS: Final = 20


@dataclass(frozen=True, kw_only=True, slots=True)
class EapMsChapV2:
    """Type-Data of EAP-MS-CHAPv2.

    ``short`` marks the peer's Success-/Failure-Response, which is the OpCode alone.  For
    Challenge/Response ``value``/``name`` are set, for Success/Failure-Request ``message``.
    """

    opcode: EapMsChapV2OpCode | int
    ms_id: int = 0
    value: bytes = b""
    name: bytes = b""
    message: bytes = b""
    short: bool = False

    def encode(self) -> bytes:
        if self.short:
            return bytes([int(self.opcode)])
        if self.opcode in (EapMsChapV2OpCode.CHALLENGE, EapMsChapV2OpCode.RESPONSE):
            body = bytes([len(self.value)]) + self.value + self.name
        else:
            body = self.message
        ms_length = _MS_HDR.size + len(body)
        if ms_length > 0xFFFF:
            raise ValueError("EAP-MS-CHAPv2 data too long")
        return _MS_HDR.pack(int(self.opcode), self.ms_id & 0xFF, ms_length) + body

    @classmethod
    def decode(cls, data: bytes) -> EapMsChapV2:
        r = Reader(data)
        opcode = open_enum(EapMsChapV2OpCode, r.u8())
        if r.at_end():
            if opcode in (EapMsChapV2OpCode.SUCCESS, EapMsChapV2OpCode.FAILURE):
                return cls(opcode=opcode, short=True)
            raise DecodeError("EAP-MS-CHAPv2 packet without MS-CHAPv2-ID and MS-Length")
        ms_id = r.u8()
        ms_length = r.u16()
        if ms_length != len(data):
            raise DecodeError(f"EAP-MS-CHAPv2 MS-Length {ms_length} but {len(data)} octets of Type-Data")
        if opcode in (EapMsChapV2OpCode.CHALLENGE, EapMsChapV2OpCode.RESPONSE):
            size = r.u8()
            value = r.take(size)
            return cls(opcode=opcode, ms_id=ms_id, value=value, name=r.rest())
        return cls(opcode=opcode, ms_id=ms_id, message=r.rest())


def _nak_types(data: bytes) -> list[int]:
    # Legacy Nak: one octet per acceptable type; 0 means "none".  Bounded by the packet size.
    return [t for t in data if t != 0]


# --- authenticator --------------------------------------------------------------------------


class _ServerState(enum.Enum):
    INITIAL = "initial"
    IDENTITY = "identity"  # Request/Identity out
    METHOD = "method"  # a method's first Request out (may be Nak'ed)
    MSCHAP_RESULT = "mschap-result"  # Success- or Failure-Request out, waiting for the short reply
    DONE = "done"


@dataclass(slots=True)
class _Outcome:
    """The verdict an MS-CHAPv2 exchange reached while its result is being acknowledged."""

    ok: bool
    name: str
    found: SecretMatch | None
    keys: KeyMaterial | None
    kind: FailureKind | None
    reason: str
    message: str


class EapAuthenticator(AuthEngine):
    """The EAP authenticator for a PPP link (pass-through to a RADIUS server is not offered)."""

    method = AuthMethod.EAP
    role = Role.AUTHENTICATOR

    __slots__ = (
        '_challenge', '_current', '_id', '_identity', '_outcome', '_remaining', '_request', '_state',
        '_transmits', 'config',
    )

    def __init__(self, config: AuthenticatorConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _ServerState.INITIAL
        self._id = config.random(1)[0]
        self._request = b""
        self._transmits = 0
        self._identity = ""
        self._remaining: list[int] = list(config.eap_methods)
        self._current: int | None = None
        self._challenge = b""
        self._outcome: _Outcome | None = None

    @property
    def identity(self) -> str:
        """The identity the peer gave (a hint: the method's name is what gets authenticated)."""
        return self._identity

    def _start(self, now: float) -> None:
        self._state = _ServerState.IDENTITY
        self._send_request(now, EapType.IDENTITY, b"")

    def _send_request(self, now: float, etype: int, data: bytes) -> None:
        self._id = (self._id + 1) & 0xFF
        self._request = EapPacket(code=EapCode.REQUEST, identifier=self._id, type=etype, data=data).encode()
        self._transmits = 0
        self._transmit(now)

    def _transmit(self, now: float) -> None:
        self._send(self._request, retransmission=self._transmits > 0)
        self._transmits += 1
        self._set_timer(now + self.config.restart_interval)

    def _finish_success(self, identifier: int, outcome: _Outcome) -> None:
        self._send(EapPacket(code=EapCode.SUCCESS, identifier=identifier).encode())
        self._state = _ServerState.DONE
        self._set_timer(None)
        found = outcome.found
        self._emit(
            AuthSucceeded(
                method=self.method,
                role=self.role,
                username=outcome.name,
                peer_name=outcome.name,
                message=outcome.message,
                key_material=outcome.keys,
                addresses=found.addresses if found is not None else None,
                secret_source=found.source if found is not None else None,
                eap_type=self._current,
            )
        )

    def _finish_failure(
        self,
        identifier: int,
        name: str,
        kind: FailureKind,
        reason: str,
        *,
        code: int | None = None,
        message: str = "",
    ) -> None:
        self._send(EapPacket(code=EapCode.FAILURE, identifier=identifier).encode())
        self._state = _ServerState.DONE
        self._fail(name, kind, reason, code=code, message=message, eap_type=self._current)

    def _on_timer(self, now: float) -> None:
        if self._state in (_ServerState.INITIAL, _ServerState.DONE):
            return
        if self._transmits < self.config.max_transmits:
            self._transmit(now)
            return
        outcome = self._outcome
        name = outcome.name if outcome is not None else self._identity
        self._finish_failure(
            self._id,
            name,
            FailureKind.TIMEOUT,
            f"peer did not answer {self._transmits} EAP requests",
        )

    def _start_next_method(self, now: float, acceptable: list[int] | None) -> None:
        """Offer our next method (restricted to ``acceptable`` after a Nak) or give up."""
        if self._current is not None and self._current in self._remaining:
            self._remaining.remove(self._current)
        choices = [t for t in self._remaining if acceptable is None or t in acceptable]
        if not choices:
            self._finish_failure(
                self._id,
                self._identity,
                FailureKind.NO_COMMON_METHOD,
                "the peer accepts none of our EAP methods",
            )
            return
        self._current = choices[0]
        self._challenge = self.config.random(MSCHAPV2_CHALLENGE_LEN)
        name = wire_name(self.config.name)
        self._state = _ServerState.METHOD
        if self._current == EapType.MSCHAPV2:
            # The MS-CHAPv2-ID simply follows the EAP Identifier the Request will carry.
            data = EapMsChapV2(
                opcode=EapMsChapV2OpCode.CHALLENGE,
                ms_id=(self._id + 1) & 0xFF,
                value=self._challenge,
                name=name,
            ).encode()
        else:
            data = EapMd5(value=self._challenge, name=name).encode()
        self._send_request(now, self._current, data)

    def _receive(self, packet: bytes, now: float) -> None:
        pkt = decode_eap(packet)
        if (
            pkt.code != EapCode.RESPONSE
            or pkt.identifier != self._id
            or self._state in (_ServerState.INITIAL, _ServerState.DONE)
        ):
            self.counters.ignored += 1
            return
        if self._state is _ServerState.IDENTITY:
            if pkt.type != EapType.IDENTITY:
                self.counters.ignored += 1
                return
            if len(pkt.data) > MAX_NAME_LEN:
                raise DecodeError("EAP identity longer than we accept")
            self._identity = text_name(pkt.data)
            self._start_next_method(now, None)
            return
        if self._state is _ServerState.METHOD and pkt.type == EapType.NAK:
            self._start_next_method(now, _nak_types(pkt.data))
            return
        if pkt.type != self._current:
            self.counters.ignored += 1
            return
        if self._current == EapType.MD5_CHALLENGE:
            self._md5_response(pkt)
        else:
            self._mschap_response(pkt, now)

    def _md5_response(self, pkt: EapPacket) -> None:
        md5 = EapMd5.decode(pkt.data)
        if len(md5.name) > MAX_NAME_LEN:
            raise DecodeError("EAP-MD5 name longer than we accept")
        name = text_name(md5.name)
        found = lookup_peer_secret(self.config, name)
        if found is None:
            self._finish_failure(
                pkt.identifier, name, FailureKind.UNKNOWN_PEER, f"no EAP-MD5 secret for {name!r}"
            )
            return
        expected = chap_md5_response(pkt.identifier, wire_name(found.secret), self._challenge)
        if not hmac.compare_digest(expected, md5.value):
            self._finish_failure(
                pkt.identifier, name, FailureKind.WRONG_SECRET, f"wrong EAP-MD5 response from {name!r}"
            )
            return
        outcome = _Outcome(
            ok=True,
            name=name,
            found=found,
            keys=None,
            kind=None,
            reason="",
            message=self.config.success_message,
        )
        self._finish_success(pkt.identifier, outcome)

    def _mschap_response(self, pkt: EapPacket, now: float) -> None:
        ms = EapMsChapV2.decode(pkt.data)
        if self._state is _ServerState.MSCHAP_RESULT:
            outcome = self._outcome
            assert outcome is not None
            expected = EapMsChapV2OpCode.SUCCESS if outcome.ok else EapMsChapV2OpCode.FAILURE
            if ms.opcode != expected:
                self.counters.ignored += 1
                return
            if outcome.ok:
                self._finish_success(pkt.identifier, outcome)
            else:
                assert outcome.kind is not None
                self._finish_failure(
                    pkt.identifier,
                    outcome.name,
                    outcome.kind,
                    outcome.reason,
                    code=MsChapError.AUTHENTICATION_FAILURE,
                    message=outcome.message,
                )
            return
        if ms.opcode != EapMsChapV2OpCode.RESPONSE:
            self.counters.ignored += 1
            return
        if len(ms.name) > MAX_NAME_LEN:
            raise DecodeError("EAP-MS-CHAPv2 name longer than we accept")
        name = text_name(ms.name)
        found = lookup_peer_secret(self.config, name, ms_name=True)
        kind: FailureKind | None = None
        if found is None:
            kind, reason = FailureKind.UNKNOWN_PEER, f"no EAP-MS-CHAPv2 secret for {name!r}"
        elif len(ms.value) != MSCHAP_RESPONSE_LEN:
            kind, reason = FailureKind.WRONG_SECRET, f"EAP-MS-CHAPv2 response of {len(ms.value)} bytes"
        else:
            check = v2_check_response(self._challenge, ms.name, ms.value, found.secret)
            if check.ok:
                text = MsChapSuccessMessage(
                    authenticator_response=check.authenticator_response, message=self.config.success_message
                ).encode()
                self._outcome = _Outcome(
                    ok=True,
                    name=name,
                    found=found,
                    keys=MsChapV2Keys(nt_password_hash=check.password_hash, nt_response=check.nt_response),
                    kind=None,
                    reason="",
                    message=self.config.success_message,
                )
                self._state = _ServerState.MSCHAP_RESULT
                data = EapMsChapV2(opcode=EapMsChapV2OpCode.SUCCESS, ms_id=ms.ms_id, message=text).encode()
                self._send_request(now, EapType.MSCHAPV2, data)
                return
            kind, reason = FailureKind.WRONG_SECRET, f"wrong EAP-MS-CHAPv2 response from {name!r}"
        text = MsChapFailureMessage(
            error=MsChapError.AUTHENTICATION_FAILURE,
            retry=False,
            challenge=self.config.random(MSCHAPV2_CHALLENGE_LEN),
            version=3,
            message=self.config.failure_message,
        ).encode()
        self._outcome = _Outcome(
            ok=False,
            name=name,
            found=None,
            keys=None,
            kind=kind,
            reason=reason,
            message=self.config.failure_message,
        )
        self._state = _ServerState.MSCHAP_RESULT
        data = EapMsChapV2(opcode=EapMsChapV2OpCode.FAILURE, ms_id=ms.ms_id, message=text).encode()
        self._send_request(now, EapType.MSCHAPV2, data)


# --- peer -----------------------------------------------------------------------------------


class _PeerState(enum.Enum):
    RUNNING = "running"
    OPEN = "open"
    FAILED = "failed"


class EapPeer(AuthEngine):
    """The EAP peer: Identity, Notification, Nak, EAP-MS-CHAPv2 and EAP-MD5."""

    method = AuthMethod.EAP
    role = Role.PEER

    __slots__ = (
        '_ever_succeeded', '_keys', '_last_request_id', '_last_response', '_method_done', '_method_type',
        '_requests', '_server_name', '_state', '_v2', 'config', 'notifications',
    )

    def __init__(self, config: PeerConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _PeerState.RUNNING
        self._last_request_id: int | None = None
        self._last_response: bytes | None = None
        self._server_name = ""
        self._method_done = False  # a method ended to our satisfaction: EAP-Success acceptable
        self._method_type: int | None = None
        self._keys: KeyMaterial | None = None
        self._v2: V2PeerState | None = None
        self._ever_succeeded = False
        self.notifications: list[str] = []  # the last few Notification texts, for logs
        self._requests = 0  # new Requests answered since the last verdict

    def _start(self, now: float) -> None:
        if self.config.timeout:
            self._set_timer(now + self.config.timeout)

    def _on_timer(self, now: float) -> None:
        if self._state is _PeerState.RUNNING and not self._ever_succeeded:
            self._give_up(
                PeerFailure(FailureKind.TIMEOUT, f"no EAP verdict within {self.config.timeout:g} s")
            )

    def _give_up(self, exc: PeerFailure) -> None:
        self._state = _PeerState.FAILED
        self._fail(
            self.config.username,
            exc.kind,
            exc.reason,
            code=exc.code,
            message=exc.message,
            eap_type=self._method_type,
        )

    def _respond(self, identifier: int, etype: int, data: bytes) -> None:
        response = EapPacket(code=EapCode.RESPONSE, identifier=identifier, type=etype, data=data).encode()
        self._last_request_id = identifier
        self._last_response = response
        self._send(response)

    def _receive(self, packet: bytes, now: float) -> None:
        pkt = decode_eap(packet)
        if self._state is _PeerState.FAILED:
            self.counters.ignored += 1
            return
        if pkt.code == EapCode.REQUEST:
            if pkt.identifier == self._last_request_id and self._last_response is not None:
                # RFC 3748 4.1: a retransmitted Request gets the same Response again.
                self._send(self._last_response, retransmission=True)
                return
            self._requests += 1
            if self._requests > MAX_PEER_REQUESTS:
                self._give_up(
                    PeerFailure(
                        FailureKind.PROTOCOL, f"more than {MAX_PEER_REQUESTS} EAP requests without a verdict"
                    )
                )
                return
            try:
                self._on_request(pkt)
            except PeerFailure as exc:
                self._give_up(exc)
        elif pkt.code == EapCode.SUCCESS:
            self._on_success()
        elif pkt.code == EapCode.FAILURE:
            if self._state is _PeerState.OPEN:
                # After success was agreed on, a Failure is to be discarded (RFC 3748 4.2).
                self.counters.ignored += 1
                return
            self._give_up(PeerFailure(FailureKind.REJECTED, "the authenticator sent EAP-Failure"))
        else:
            self.counters.ignored += 1

    def _infer_success(self, now: float) -> bool:
        # RFC 2284 2.2.2: EAP-Success is never retransmitted, and a network-layer packet from the
        # authenticator may stand in for a lost one.  Only once our method is satisfied (for
        # EAP-MS-CHAPv2: the server's proof checked), so this skips nothing a Success would not.
        if self._state is not _PeerState.RUNNING or not self._method_done:
            return False
        self.counters.inferred_success += 1
        self._on_success()
        return True

    def _on_success(self) -> None:
        if self._state is not _PeerState.RUNNING:
            self.counters.ignored += 1
            return
        if not self._method_done:
            self._give_up(
                PeerFailure(FailureKind.PROTOCOL, "EAP-Success before any authentication method completed")
            )
            return
        self._state = _PeerState.OPEN
        self._set_timer(None)
        self._requests = 0
        repeat = self._ever_succeeded
        self._ever_succeeded = True
        eap_type = self._method_type
        self._method_type = None
        self._emit(
            AuthSucceeded(
                method=self.method,
                role=self.role,
                username=self.config.username,
                peer_name=self._server_name,
                key_material=self._keys,
                eap_type=eap_type,
                repeat=repeat,
            )
        )

    def _on_request(self, pkt: EapPacket) -> None:
        etype = pkt.type
        assert etype is not None
        if etype == EapType.IDENTITY:
            identity = (
                self.config.eap_identity if self.config.eap_identity is not None else self.config.username
            )
            self._respond(pkt.identifier, EapType.IDENTITY, wire_name(identity))
            return
        if etype == EapType.NOTIFICATION:
            if len(self.notifications) >= 8:
                del self.notifications[0]
            self.notifications.append(pkt.data[:256].decode("utf-8", "replace"))
            self._respond(pkt.identifier, EapType.NOTIFICATION, b"")
            return
        if etype == EapType.NAK or etype not in self.config.eap_methods:
            # Nak is response-only; anything we do not run gets our list (0 = none acceptable).
            self._respond(pkt.identifier, EapType.NAK, bytes(self.config.eap_methods) or b"\0")
            return
        if etype == EapType.MD5_CHALLENGE:
            self._md5_request(pkt)
        else:
            self._mschap_request(pkt)

    def _password(self) -> str:
        password = self.config.password_for(self._server_name)
        if password is None:
            raise PeerFailure(
                FailureKind.NO_SECRET, f"no secret for {self.config.username!r} towards {self._server_name!r}"
            )
        return password

    def _begin_method(self, etype: int) -> None:
        if self._state is _PeerState.OPEN:
            self._state = _PeerState.RUNNING  # reauthentication
        self._method_type = etype
        self._method_done = False
        self._keys = None

    def _md5_request(self, pkt: EapPacket) -> None:
        md5 = EapMd5.decode(pkt.data)
        if len(md5.name) > MAX_NAME_LEN:
            raise DecodeError("EAP-MD5 name longer than we accept")
        self._begin_method(EapType.MD5_CHALLENGE)
        self._server_name = text_name(md5.name)
        value = chap_md5_response(pkt.identifier, wire_name(self._password()), md5.value)
        self._method_done = True
        self._respond(
            pkt.identifier,
            EapType.MD5_CHALLENGE,
            EapMd5(value=value, name=wire_name(self.config.username)).encode(),
        )

    def _mschap_request(self, pkt: EapPacket) -> None:
        ms = EapMsChapV2.decode(pkt.data)
        if ms.short:
            raise DecodeError("EAP-MS-CHAPv2 request without header")
        if ms.opcode == EapMsChapV2OpCode.CHALLENGE:
            if len(ms.value) != MSCHAPV2_CHALLENGE_LEN:
                raise DecodeError(f"EAP-MS-CHAPv2 challenge of {len(ms.value)} bytes")
            if len(ms.name) > MAX_NAME_LEN:
                raise DecodeError("EAP-MS-CHAPv2 name longer than we accept")
            self._begin_method(EapType.MSCHAPV2)
            self._server_name = text_name(ms.name)
            self._v2 = v2_peer_response(
                ms.value, self.config.random(16), wire_name(self.config.username), self._password()
            )
            data = EapMsChapV2(
                opcode=EapMsChapV2OpCode.RESPONSE,
                ms_id=ms.ms_id,
                value=self._v2.response_value(),
                name=wire_name(self.config.username),
            ).encode()
            self._respond(pkt.identifier, EapType.MSCHAPV2, data)
            return
        if self._v2 is None or self._method_type != EapType.MSCHAPV2:
            self.counters.ignored += 1
            return
        if ms.opcode == EapMsChapV2OpCode.SUCCESS:
            keys, _ = self._v2.check_success(ms.message)  # raises PeerFailure when not proven
            self._keys = keys
            self._method_done = True
            self._respond(
                pkt.identifier, EapType.MSCHAPV2, EapMsChapV2(opcode=ms.opcode, short=True).encode()
            )
            return
        if ms.opcode == EapMsChapV2OpCode.FAILURE:
            self._respond(
                pkt.identifier, EapType.MSCHAPV2, EapMsChapV2(opcode=ms.opcode, short=True).encode()
            )
            try:
                parsed = MsChapFailureMessage.decode(ms.message)
            except DecodeError:
                raise PeerFailure(FailureKind.REJECTED, "EAP-MS-CHAPv2 authentication failed") from None
            reason = f"EAP-MS-CHAPv2 authentication failed: E={parsed.error} ({describe_error(parsed.error)})"
            raise PeerFailure(FailureKind.REJECTED, reason, code=parsed.error, message=parsed.message)
        self.counters.ignored += 1
