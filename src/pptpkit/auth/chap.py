"""CHAP (RFC 1994): packets, the exchange machinery shared with MS-CHAP, and CHAP-MD5.

The authenticator side (:class:`ChapAuthenticatorBase`):

* sends a Challenge with a fresh Identifier and random value, retransmits the *same* Challenge
  every ``restart_interval`` and gives up after ``max_transmits``;
* only a Response carrying the current Identifier is looked at; a repeated Response to a
  Challenge already decided gets the same Success/Failure again (the peer may have lost it),
  as pppd does;
* :meth:`ChapAuthenticatorBase.rechallenge` (or ``rechallenge_interval``) starts a new
  Challenge after success; the peer must answer it under the same name;
* a method may ask for a retry after a failure (MS-CHAP ``R=1``): the next Response must then
  carry Identifier + 1 and answer the new challenge.

The peer side (:class:`ChapPeerBase`) answers every Challenge, rechallenges included; a repeated
Challenge (same Identifier and value) gets the identical Response again, so the authenticator's
Success always matches what it verified.  Success/Failure are only taken for the Identifier of
our last Response.

The peer also repeats its last Response every ``restart_interval`` (at most ``max_transmits``
times) until the verdict arrives.  The authenticator retransmits only its Challenge, so a lost
Success would otherwise leave the peer waiting while the authenticator, already in the network
phase, sends NCP packets that the peer must discard: on a lossy path that stalled one setup in
twenty until the whole wait ran out.  RFC 1994 section 4.1 has the authenticator answer repeated
Responses with the same code for exactly this case.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from pptpkit.auth.base import (
    MAX_NAME_LEN,
    AuthEngine,
    AuthenticatorConfig,
    AuthSucceeded,
    ChapMd5Credentials,
    Credentials,
    ExternalVerdict,
    FailureKind,
    KeyMaterial,
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
    "ChapAuthenticatorBase",
    "ChapChallenge",
    "ChapCode",
    "ChapFailure",
    "ChapMd5Authenticator",
    "ChapMd5Peer",
    "ChapPacket",
    "ChapPeerBase",
    "ChapResponse",
    "ChapSuccess",
    "ChapUnknown",
    "chap_md5_response",
    "decode_chap",
]


class ChapCode(IntEnum):
    CHALLENGE = 1
    RESPONSE = 2
    SUCCESS = 3
    FAILURE = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class _ValueAndName:
    """Challenge and Response share one layout: Value-Size, Value, Name (rest of the packet)."""

    identifier: int
    value: bytes
    name: bytes = b""

    code: ClassVar[int]

    def encode(self) -> bytes:
        if not 1 <= len(self.value) <= 255:
            raise ValueError("CHAP Value must be 1..255 bytes")
        return build_packet(self.code, self.identifier, bytes([len(self.value)]) + self.value + self.name)

    @classmethod
    def decode_body(cls, identifier: int, r: Reader) -> _ValueAndName:
        size = r.u8()
        if size == 0:
            raise DecodeError("CHAP Value-Size is zero")
        value = r.take(size)
        return cls(identifier=identifier, value=value, name=r.rest())


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapChallenge(_ValueAndName):
    code: ClassVar[int] = ChapCode.CHALLENGE


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapResponse(_ValueAndName):
    code: ClassVar[int] = ChapCode.RESPONSE


@dataclass(frozen=True, kw_only=True, slots=True)
class _Status:
    identifier: int
    message: bytes = b""

    code: ClassVar[int]

    def encode(self) -> bytes:
        return build_packet(self.code, self.identifier, self.message)

    @classmethod
    def decode_body(cls, identifier: int, r: Reader) -> _Status:
        return cls(identifier=identifier, message=r.rest())


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapSuccess(_Status):
    code: ClassVar[int] = ChapCode.SUCCESS


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapFailure(_Status):
    code: ClassVar[int] = ChapCode.FAILURE


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapUnknown:
    """A code CHAP does not define (MS-CHAP Change-Password among them); kept raw."""

    code: int
    identifier: int
    data: bytes

    def encode(self) -> bytes:
        return build_packet(self.code, self.identifier, self.data)


ChapPacket = ChapChallenge | ChapResponse | ChapSuccess | ChapFailure | ChapUnknown

_DECODERS: dict[int, type[_ValueAndName] | type[_Status]] = {
    ChapCode.CHALLENGE: ChapChallenge,
    ChapCode.RESPONSE: ChapResponse,
    ChapCode.SUCCESS: ChapSuccess,
    ChapCode.FAILURE: ChapFailure,
}


def decode_chap(data: bytes) -> ChapPacket:
    """Decode one CHAP packet; only :class:`DecodeError` escapes."""
    code, identifier, r = read_header(data)
    cls = _DECODERS.get(code)
    if cls is None:
        return ChapUnknown(code=code, identifier=identifier, data=r.rest())
    pkt = cls.decode_body(identifier, r)
    assert isinstance(pkt, ChapChallenge | ChapResponse | ChapSuccess | ChapFailure)
    return pkt


def chap_md5_response(identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 section 4.1: MD5 over Identifier, secret and challenge value."""
    return hashlib.md5(bytes([identifier & 0xFF]) + secret + challenge).digest()


def _message_bytes(text: str) -> bytes:
    return text.encode("utf-8")


# --- authenticator ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """What a method concluded about a Response.

    On success ``message`` is the Success text (MS-CHAPv2 puts ``S=...`` in it).  On failure
    ``retry_challenge`` (MS-CHAP ``R=1``) lets the peer answer that challenge once more.
    """

    ok: bool
    message: bytes
    kind: FailureKind | None = None
    reason: str = ""
    code: int | None = None
    key_material: KeyMaterial | None = None
    addresses: AddressPolicy | None = None
    secret_source: str | None = None
    retry_challenge: bytes | None = None


class _AuthState(enum.Enum):
    INITIAL = "initial"
    CHALLENGING = "challenging"  # a Challenge is out, waiting for its Response
    RETRY_WAIT = "retry-wait"  # MS-CHAP Failure with R=1 sent, waiting for Identifier + 1
    OPEN = "open"
    FAILED = "failed"
    VERIFYING = "verifying"  # a Response is with the external verifier (RADIUS)


class ChapAuthenticatorBase(AuthEngine):
    """The authenticator's half of any CHAP variant; subclasses supply challenge and check."""

    role = Role.AUTHENTICATOR
    challenge_length: ClassVar[int]

    __slots__ = (
        '_authenticated_name', '_challenge', '_id', '_last_name', '_last_status', '_pending_id',
        '_retries_used', '_state', '_transmits', 'config',
    )

    def __init__(self, config: AuthenticatorConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _AuthState.INITIAL
        self._id = config.random(1)[0]
        self._challenge = b""
        self._transmits = 0
        self._retries_used = 0
        self._authenticated_name: str | None = None
        self._last_status: ChapSuccess | ChapFailure | None = None
        self._last_name = ""
        self._pending_id = 0

    @property
    def challenge(self) -> bytes:
        """The challenge value currently outstanding (for tests and logging)."""
        return self._challenge

    def _start(self, now: float) -> None:
        self._new_challenge(now)

    def rechallenge(self, now: float) -> None:
        """Challenge the already authenticated peer again (RFC 1994 allows it at any time)."""
        if self._state is _AuthState.OPEN and not self._stopped:
            self._new_challenge(now)

    def _make_challenge(self) -> bytes:
        value = self.config.random(self.challenge_length)
        if len(value) != self.challenge_length:
            raise ValueError("random source returned the wrong number of bytes")
        return value

    def _new_challenge(self, now: float) -> None:
        self._id = (self._id + 1) & 0xFF
        self._challenge = self._make_challenge()
        self._transmits = 0
        self._state = _AuthState.CHALLENGING
        self._transmit_challenge(now)

    def _transmit_challenge(self, now: float) -> None:
        pkt = ChapChallenge(identifier=self._id, value=self._challenge, name=wire_name(self.config.name))
        self._send(pkt.encode(), retransmission=self._transmits > 0)
        self._transmits += 1
        self._set_timer(now + self.config.restart_interval)

    def _on_timer(self, now: float) -> None:
        if self._state is _AuthState.CHALLENGING:
            if self._transmits >= self.config.max_transmits:
                self._state = _AuthState.FAILED
                self._fail(
                    self._authenticated_name or "",
                    FailureKind.TIMEOUT,
                    f"peer did not respond to {self._transmits} {self.method.pppd_name} challenges",
                )
                return
            self._transmit_challenge(now)
        elif self._state is _AuthState.RETRY_WAIT:
            self._state = _AuthState.FAILED
            self._fail(
                self._last_name,
                FailureKind.TIMEOUT,
                "peer did not retry after the MS-CHAP failure",
            )
        elif self._state is _AuthState.OPEN and self.config.rechallenge_interval is not None:
            self._new_challenge(now)
        elif self._state is _AuthState.VERIFYING:
            waited = self.config.verification_timeout
            verdict = self._no_verdict(FailureKind.TIMEOUT, f"no verdict from the verifier in {waited:g} s")
            self._conclude(self._pending_id, self._last_name, verdict, now)

    def _receive(self, packet: bytes, now: float) -> None:
        pkt = decode_chap(packet)
        if not isinstance(pkt, ChapResponse):
            self.counters.ignored += 1
            return
        last = self._last_status
        if (
            last is not None
            and pkt.identifier == last.identifier
            and self._state is not _AuthState.CHALLENGING
        ):
            self._send(last.encode(), retransmission=True)
            return
        if pkt.identifier != self._id or self._state not in (_AuthState.CHALLENGING, _AuthState.RETRY_WAIT):
            self.counters.ignored += 1
            return
        if len(pkt.name) > MAX_NAME_LEN:
            raise DecodeError("CHAP Name longer than we accept")
        name = text_name(pkt.name)
        self._last_name = name
        if self._authenticated_name is not None and name != self._authenticated_name:
            verdict = Verdict(
                ok=False,
                message=_message_bytes(self.config.failure_message),
                kind=FailureKind.WRONG_SECRET,
                reason=f"peer answered the rechallenge as {name!r}, not {self._authenticated_name!r}",
            )
        elif self.config.external:
            asked = self._credentials(pkt)
            if isinstance(asked, Verdict):
                verdict = asked  # refused before asking: the Response cannot be verified at all
            else:
                # Nothing goes to the peer until the verdict: a retransmitted Response has our
                # identifier but we are not CHALLENGING, so it is ignored, not verified twice.
                self._pending_id = pkt.identifier
                self._state = _AuthState.VERIFYING
                self._set_timer(now + self.config.verification_timeout)
                self._emit(VerifyRequest(method=self.method, role=self.role, username=name,
                                         credentials=asked))
                return
        else:
            verdict = self._verify(pkt, name, self._retries_used < self.config.mschap_retries)
        self._conclude(pkt.identifier, name, verdict, now)

    def _complete(self, verdict: ExternalVerdict, now: float) -> None:
        if self._state is not _AuthState.VERIFYING:
            self.counters.ignored += 1
            return
        self._conclude(self._pending_id, self._last_name, self._from_external(verdict), now)

    def _no_verdict(self, kind: FailureKind, reason: str) -> Verdict:
        """A failure with this method's Failure text (MS-CHAP's carries E=, R=, C=, V=)."""
        return Verdict(ok=False, message=_message_bytes(self.config.failure_message), kind=kind,
                       reason=reason)

    def _credentials(self, response: ChapResponse) -> Credentials | Verdict:
        """What the external verifier needs from ``response``, or the failure when it is unusable."""
        raise NotImplementedError

    def _from_external(self, verdict: ExternalVerdict) -> Verdict:
        if not verdict.ok:
            return self._no_verdict(FailureKind.WRONG_SECRET, verdict.reason or "rejected by the verifier")
        return Verdict(ok=True, message=_message_bytes(verdict.message or self.config.success_message),
                       key_material=verdict.key_material, secret_source="external")

    def _conclude(self, identifier: int, name: str, verdict: Verdict, now: float) -> None:
        if verdict.ok:
            status: ChapSuccess | ChapFailure = ChapSuccess(identifier=identifier, message=verdict.message)
            self._last_status = status
            self._send(status.encode())
            repeat = self._authenticated_name is not None
            self._authenticated_name = name
            self._state = _AuthState.OPEN
            interval = self.config.rechallenge_interval
            self._set_timer(now + interval if interval is not None else None)
            self._emit(
                AuthSucceeded(
                    method=self.method,
                    role=self.role,
                    username=name,
                    peer_name=name,
                    message=text_message(verdict.message),
                    key_material=verdict.key_material,
                    addresses=verdict.addresses,
                    secret_source=verdict.secret_source,
                    repeat=repeat,
                )
            )
            return
        status = ChapFailure(identifier=identifier, message=verdict.message)
        self._last_status = status
        self._send(status.encode())
        if verdict.retry_challenge is not None:
            self._retries_used += 1
            self._id = (identifier + 1) & 0xFF
            self._challenge = verdict.retry_challenge
            self._state = _AuthState.RETRY_WAIT
            self._set_timer(now + self.config.mschap_retry_timeout)
            return
        self._state = _AuthState.FAILED
        self._fail(
            name,
            verdict.kind or FailureKind.WRONG_SECRET,
            verdict.reason or "authentication failed",
            code=verdict.code,
            message=text_message(verdict.message),
        )

    def _verify(self, response: ChapResponse, name: str, may_retry: bool) -> Verdict:
        raise NotImplementedError


# --- peer ---------------------------------------------------------------------------------


class PeerFailure(Exception):
    """Raised by a peer hook to end the exchange with an :class:`AuthFailed`."""

    def __init__(self, kind: FailureKind, reason: str, *, code: int | None = None, message: str = "") -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code
        self.message = message


class _PeerState(enum.Enum):
    WAITING = "waiting"  # no Challenge yet
    RESPONDED = "responded"  # Response sent, waiting for Success/Failure
    OPEN = "open"
    FAILED = "failed"


class ChapPeerBase(AuthEngine):
    """The peer's half of any CHAP variant; subclasses compute responses and check results."""

    role = Role.PEER

    __slots__ = (
        '_ever_succeeded', '_give_up_at', '_last_challenge', '_last_response', '_now', '_repeat_at',
        '_repeats', '_resp_id', '_retries_used', '_server_name', '_state', 'config',
    )

    def __init__(self, config: PeerConfig, now: float) -> None:
        super().__init__(now)
        self.config = config
        self._state = _PeerState.WAITING
        self._resp_id: int | None = None
        self._last_challenge: bytes | None = None
        self._last_response: bytes | None = None
        self._server_name = ""
        self._ever_succeeded = False
        self._retries_used = 0
        self._now = now
        self._give_up_at: float | None = None
        # When the last Response is repeated next (None: not waiting for a verdict), and how
        # many times it has gone out.
        self._repeat_at: float | None = None
        self._repeats = 0

    def _start(self, now: float) -> None:
        self._now = now
        if self.config.timeout:
            self._give_up_at = now + self.config.timeout
        self._arm()

    def _arm(self) -> None:
        times = [t for t in (self._give_up_at, self._repeat_at) if t is not None]
        self._set_timer(min(times) if times else None)

    def _on_timer(self, now: float) -> None:
        self._now = now
        if self._give_up_at is not None and now >= self._give_up_at:
            self._give_up_at = None
            if self._state in (_PeerState.WAITING, _PeerState.RESPONDED) and not self._ever_succeeded:
                self._state = _PeerState.FAILED
                self._repeat_at = None
                self._fail(
                    self.config.username,
                    FailureKind.TIMEOUT,
                    f"no {self.method.pppd_name} verdict within {self.config.timeout:g} s",
                )
                return
        if self._repeat_at is not None and now >= self._repeat_at:
            if self._state is _PeerState.RESPONDED and self._last_response is not None:
                self._send(self._last_response, retransmission=True)
                self._repeats += 1
            self._repeat_at = (now + self.config.restart_interval
                               if self._state is _PeerState.RESPONDED
                               and self._repeats < self.config.max_transmits else None)
        self._arm()

    def _receive(self, packet: bytes, now: float) -> None:
        self._now = now
        pkt = decode_chap(packet)
        if self._state is _PeerState.FAILED:
            self.counters.ignored += 1
            return
        if isinstance(pkt, ChapChallenge):
            self._on_challenge(pkt)
        elif isinstance(pkt, ChapSuccess | ChapFailure):
            if self._state is not _PeerState.RESPONDED or pkt.identifier != self._resp_id:
                self.counters.ignored += 1
                return
            try:
                if isinstance(pkt, ChapSuccess):
                    self._on_success(pkt)
                else:
                    self._on_failure(pkt)
            except PeerFailure as exc:
                self._peer_failed(exc)
        else:
            self.counters.ignored += 1

    def _on_challenge(self, pkt: ChapChallenge) -> None:
        self._check_challenge(pkt.value)
        if len(pkt.name) > MAX_NAME_LEN:
            raise DecodeError("CHAP Name longer than we accept")
        if (
            self._state is _PeerState.RESPONDED
            and pkt.identifier == self._resp_id
            and pkt.value != self._last_challenge
        ):
            # A retransmitted Challenge carries the same value; another value under the
            # Identifier we are answering is forged or corrupt.  Answering it would leave a
            # Success for this Identifier ambiguous (we repeat the first Response too), so the
            # keys we derive could differ from the authenticator's.
            self.counters.ignored += 1
            return
        if (
            pkt.identifier == self._resp_id
            and pkt.value == self._last_challenge
            and self._last_response is not None
        ):
            # Always answered (the authenticator is waiting), and it counts as one of our own
            # repeats, which stop after max_transmits transmissions.
            self._send(self._last_response, retransmission=True)
            if self._state is _PeerState.RESPONDED:
                self._repeats += 1
                self._repeat_at = (self._now + self.config.restart_interval
                                   if self._repeats < self.config.max_transmits else None)
                self._arm()
            return
        self._server_name = text_name(pkt.name)
        password = self.config.password_for(self._server_name)
        if password is None:
            self._peer_failed(
                PeerFailure(
                    FailureKind.NO_SECRET,
                    f"no secret for {self.config.username!r} towards {self._server_name!r}",
                )
            )
            return
        value = self._make_response(pkt.identifier, pkt.value, password)
        self._respond(pkt.identifier, pkt.value, value)

    def _respond(self, identifier: int, challenge: bytes, value: bytes) -> None:
        response = ChapResponse(
            identifier=identifier, value=value, name=wire_name(self.config.username)
        ).encode()
        self._resp_id = identifier
        self._last_challenge = challenge
        self._last_response = response
        self._state = _PeerState.RESPONDED
        self._send(response)
        self._repeats = 1
        self._repeat_at = self._now + self.config.restart_interval
        self._arm()

    def _on_success(self, pkt: ChapSuccess) -> None:
        key_material = self._check_success(pkt.message)
        self._state = _PeerState.OPEN
        self._repeat_at = None
        self._give_up_at = None
        self._set_timer(None)
        repeat = self._ever_succeeded
        self._ever_succeeded = True
        self._emit(
            AuthSucceeded(
                method=self.method,
                role=self.role,
                username=self.config.username,
                peer_name=self._server_name,
                message=self._success_text(pkt.message),
                key_material=key_material,
                repeat=repeat,
            )
        )

    def _on_failure(self, pkt: ChapFailure) -> None:
        if self._retry_after_failure(pkt):
            return
        raise self._failure_error(pkt.message)

    def _peer_failed(self, exc: PeerFailure) -> None:
        self._state = _PeerState.FAILED
        self._repeat_at = self._give_up_at = None
        self._set_timer(None)
        self._fail(self.config.username, exc.kind, exc.reason, code=exc.code, message=exc.message)

    # hooks

    def _check_challenge(self, value: bytes) -> None:
        """Raise DecodeError when the challenge value cannot be valid for this method."""

    def _make_response(self, identifier: int, challenge: bytes, password: str) -> bytes:
        raise NotImplementedError

    def _check_success(self, message: bytes) -> KeyMaterial | None:
        """Raise PeerFailure when the Success does not satisfy us; return the key material."""
        return None

    def _success_text(self, message: bytes) -> str:
        return text_message(message)

    def _retry_after_failure(self, pkt: ChapFailure) -> bool:
        """Answer a Failure with a new Response (MS-CHAP R=1); True when we did."""
        return False

    def _failure_error(self, message: bytes) -> PeerFailure:
        text = text_message(message)
        return PeerFailure(
            FailureKind.REJECTED,
            "the authenticator rejected our response" + (f": {text}" if text else ""),
            message=text,
        )


# --- CHAP-MD5 -----------------------------------------------------------------------------


class ChapMd5Authenticator(ChapAuthenticatorBase):
    """CHAP with MD5 (algorithm 5): 16-byte random challenges, as pppd sends."""

    method = AuthMethod.CHAP_MD5
    challenge_length = 16

    __slots__ = ()

    def _verify(self, response: ChapResponse, name: str, may_retry: bool) -> Verdict:
        fail_msg = _message_bytes(self.config.failure_message)
        found = lookup_peer_secret(self.config, name)
        if found is None:
            return Verdict(
                ok=False,
                message=fail_msg,
                kind=FailureKind.UNKNOWN_PEER,
                reason=f"no CHAP secret for {name!r}",
            )
        expected = chap_md5_response(response.identifier, wire_name(found.secret), self._challenge)
        if not hmac.compare_digest(expected, response.value):
            return Verdict(
                ok=False,
                message=fail_msg,
                kind=FailureKind.WRONG_SECRET,
                reason=f"wrong CHAP response from {name!r}",
            )
        return Verdict(
            ok=True,
            message=_message_bytes(self.config.success_message),
            addresses=found.addresses,
            secret_source=found.source,
        )

    def _credentials(self, response: ChapResponse) -> Credentials | Verdict:
        if len(response.value) != 16:
            return self._no_verdict(FailureKind.WRONG_SECRET,
                                    f"CHAP-MD5 response of {len(response.value)} bytes")
        return ChapMd5Credentials(identifier=response.identifier, challenge=self._challenge,
                                  response=response.value)


class ChapMd5Peer(ChapPeerBase):
    method = AuthMethod.CHAP_MD5

    __slots__ = ()

    def _make_response(self, identifier: int, challenge: bytes, password: str) -> bytes:
        return chap_md5_response(identifier, wire_name(password), challenge)
