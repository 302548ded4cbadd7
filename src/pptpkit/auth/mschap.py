"""MS-CHAPv1 (RFC 2433) and MS-CHAPv2 (RFC 2759) over CHAP, both roles.

Both ride on CHAP's packets (protocol 0xC223, algorithms 0x80 and 0x81) and the CHAP machinery
in :mod:`pptpkit.auth.chap`; what differs is the Response value, the formatted Success/Failure
messages and the retry rule:

* a Failure says ``E=<error> R=<retry> C=<challenge> V=<version> M=<text>``; with ``R=1`` the
  peer may send another Response, Identifier + 1, to challenge ``C`` (MS-CHAPv1 without ``C``:
  the old challenge with 23 added to its first octet).  Our authenticator offers that
  ``mschap_retries`` times (default 0, like pppd); our peer takes the offer ``mschap_retries``
  times (default 0: retrying the same password rarely helps).
* the MS-CHAPv2 Success carries ``S=<authenticator response>``: the peer checks it and fails
  (:attr:`FailureKind.AUTHENTICATOR_NOT_PROVEN`) when it is missing or wrong - the server did
  not prove it knows the password, so the link must not come up.

User names enter the hashes as the exact bytes of the Name field (a ``DOMAIN\\`` prefix is cut
by the crypto layer); secrets are looked up under the full name, as pppd does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Final

from pptpkit.auth.base import (
    Credentials,
    ExternalVerdict,
    FailureKind,
    KeyMaterial,
    MsChapV1Credentials,
    MsChapV1Keys,
    MsChapV2Credentials,
    MsChapV2Keys,
    PeerConfig,
    lookup_peer_secret,
    wire_name,
)
from pptpkit.auth.chap import (
    ChapAuthenticatorBase,
    ChapFailure,
    ChapPeerBase,
    ChapResponse,
    PeerFailure,
    Verdict,
)
from pptpkit.auth.methods import AuthMethod
from pptpkit.crypto.mschap import (
    check_authenticator_response,
    generate_authenticator_response,
    generate_nt_response_from_hash,
    nt_challenge_response_from_hash,
    nt_password_hash,
    verify_mschapv1_nt_response,
    verify_nt_response,
)
from pptpkit.errors import DecodeError

__all__ = [
    "MSCHAPV1_CHALLENGE_LEN",
    "MSCHAPV2_CHALLENGE_LEN",
    "MSCHAP_RESPONSE_LEN",
    "MsChapError",
    "MsChapFailureMessage",
    "MsChapSuccessMessage",
    "MsChapV1Authenticator",
    "MsChapV1Peer",
    "MsChapV2Authenticator",
    "MsChapV2Peer",
    "describe_error",
]

MSCHAPV1_CHALLENGE_LEN: Final = 8
MSCHAPV2_CHALLENGE_LEN: Final = 16
MSCHAP_RESPONSE_LEN: Final = 49
#: Upper bound on an MS-CHAP message we parse (the CHAP message can be up to 64 KiB).
MAX_MESSAGE_LEN: Final = 4096


class MsChapError(IntEnum):
    """Error codes in ``E=`` (RFC 2433 / RFC 2759 section 6; Windows' RAS error numbers)."""

    RESTRICTED_LOGON_HOURS = 646
    ACCT_DISABLED = 647
    PASSWD_EXPIRED = 648
    NO_DIALIN_PERMISSION = 649
    AUTHENTICATION_FAILURE = 691
    CHANGING_PASSWORD = 709


_ERROR_TEXT: Final = {
    MsChapError.RESTRICTED_LOGON_HOURS: "logon not allowed at this time",
    MsChapError.ACCT_DISABLED: "account disabled",
    MsChapError.PASSWD_EXPIRED: "password expired",
    MsChapError.NO_DIALIN_PERMISSION: "no dial-in permission",
    MsChapError.AUTHENTICATION_FAILURE: "authentication failure",
    MsChapError.CHANGING_PASSWORD: "error changing password",
}


def describe_error(code: int) -> str:
    """A readable name for an MS-CHAP error code; unknown codes stay numbers."""
    for member, text in _ERROR_TEXT.items():
        if member == code:
            return text
    return f"error {code}"


def _decimal(token: str, what: str) -> int:
    if not token.isascii() or not token.isdigit() or len(token) > 10:
        raise DecodeError(f"MS-CHAP {what} {token!r} is not a decimal number")
    return int(token)


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapFailureMessage:
    """The text of an MS-CHAP Failure: ``E=... R=... C=... V=... M=...``.

    ``challenge`` None when ``C=`` is absent (allowed in MS-CHAPv1); ``version`` None when
    ``V=`` is absent.  Everything after ``M=`` is the message, spaces included.
    """

    error: int
    retry: bool = False
    challenge: bytes | None = None
    version: int | None = None
    message: str = ""

    def encode(self) -> bytes:
        parts = [f"E={self.error}", f"R={int(self.retry)}"]
        if self.challenge is not None:
            parts.append(f"C={self.challenge.hex().upper()}")
        if self.version is not None:
            parts.append(f"V={self.version}")
        if self.message:
            parts.append(f"M={self.message}")
        return " ".join(parts).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> MsChapFailureMessage:
        if len(raw) > MAX_MESSAGE_LEN:
            raise DecodeError("MS-CHAP failure message too long")
        text = raw.decode("utf-8", "replace")
        message = ""
        head = text
        cut = text.find("M=")
        if cut == 0 or (cut > 0 and text[cut - 1] == " "):
            head, message = text[:cut], text[cut + 2 :]
        error: int | None = None
        retry = False
        challenge: bytes | None = None
        version: int | None = None
        for token in head.split():
            key, sep, value = token.partition("=")
            if not sep:
                continue
            if key == "E":
                error = _decimal(value, "error code")
            elif key == "R":
                if value not in ("0", "1"):
                    raise DecodeError(f"MS-CHAP retry flag {value!r} is not 0 or 1")
                retry = value == "1"
            elif key == "C":
                if len(value) not in (16, 32):
                    raise DecodeError("MS-CHAP failure challenge must be 16 or 32 hex digits")
                try:
                    challenge = bytes.fromhex(value)
                except ValueError:
                    raise DecodeError("MS-CHAP failure challenge is not hex") from None
            elif key == "V":
                version = _decimal(value, "version")
            # Other keys: "accept but ignore additional text" (RFC 2433 section 8).
        if error is None:
            raise DecodeError("MS-CHAP failure message without E=")
        return cls(error=error, retry=retry, challenge=challenge, version=version, message=message)


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapSuccessMessage:
    """The text of an MS-CHAPv2 Success: ``S=<40 hex> M=<message>``.

    ``authenticator_response`` is the 42-character ``S=...`` field or None when the message does
    not start with a well-formed one (which the peer must treat as failure).
    """

    authenticator_response: str | None
    message: str = ""

    def encode(self) -> bytes:
        parts = []
        if self.authenticator_response is not None:
            parts.append(self.authenticator_response)
        if self.message:
            parts.append(f"M={self.message}")
        return " ".join(parts).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> MsChapSuccessMessage:
        text = raw[:MAX_MESSAGE_LEN].decode("utf-8", "replace")
        auth: str | None = None
        rest = text
        candidate = text[2:42]
        if (
            text.startswith("S=")
            and len(candidate) == 40
            and all(c in "0123456789abcdefABCDEF" for c in candidate)
        ):
            auth = text[:42]
            rest = text[42:]
        rest = rest.lstrip(" ")
        if rest.startswith("M="):
            rest = rest[2:]
        return cls(authenticator_response=auth, message=rest)


# --- shared computations (also used by EAP-MS-CHAPv2) ------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class V2PeerState:
    """What the MS-CHAPv2 peer remembers between its Response and the Success."""

    authenticator_challenge: bytes
    peer_challenge: bytes
    nt_response: bytes
    password_hash: bytes
    username: bytes

    def response_value(self) -> bytes:
        return self.peer_challenge + bytes(8) + self.nt_response + b"\0"

    def check_success(self, raw_message: bytes) -> tuple[MsChapV2Keys, str]:
        """Verify the authenticator response in a Success; raise :class:`PeerFailure` if bad."""
        parsed = MsChapSuccessMessage.decode(raw_message)
        if parsed.authenticator_response is None:
            raise PeerFailure(
                FailureKind.AUTHENTICATOR_NOT_PROVEN,
                "MS-CHAPv2 Success without an authenticator response: the server did not prove "
                "that it knows the password",
                message=parsed.message,
            )
        if not check_authenticator_response(
            self.password_hash,
            self.nt_response,
            self.peer_challenge,
            self.authenticator_challenge,
            self.username,
            parsed.authenticator_response,
        ):
            raise PeerFailure(
                FailureKind.AUTHENTICATOR_NOT_PROVEN,
                "MS-CHAPv2 authenticator response is wrong: the server does not know the password",
                message=parsed.message,
            )
        keys = MsChapV2Keys(nt_password_hash=self.password_hash, nt_response=self.nt_response)
        return keys, parsed.message


def v2_peer_response(
    authenticator_challenge: bytes, peer_challenge: bytes, username: bytes, password: str
) -> V2PeerState:
    """Compute the peer's MS-CHAPv2 Response for one challenge."""
    password_hash = nt_password_hash(password)
    nt_response = generate_nt_response_from_hash(
        authenticator_challenge, peer_challenge, username, password_hash
    )
    return V2PeerState(
        authenticator_challenge=authenticator_challenge,
        peer_challenge=peer_challenge,
        nt_response=nt_response,
        password_hash=password_hash,
        username=username,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class V2Check:
    """The authenticator's conclusion about an MS-CHAPv2 Response value."""

    ok: bool
    password_hash: bytes = b""
    nt_response: bytes = b""
    authenticator_response: str = ""


def v2_check_response(authenticator_challenge: bytes, username: bytes, value: bytes, secret: str) -> V2Check:
    """Check a 49-byte MS-CHAPv2 Response value against ``secret``."""
    if len(value) != MSCHAP_RESPONSE_LEN:
        return V2Check(ok=False)
    peer_challenge, nt_response = value[0:16], value[24:48]
    # Reserved and Flags "must be zero"; pppd and Windows do not check them and neither do we.
    password_hash = nt_password_hash(secret)
    if not verify_nt_response(authenticator_challenge, peer_challenge, username, password_hash, nt_response):
        return V2Check(ok=False)
    auth = generate_authenticator_response(
        password_hash, nt_response, peer_challenge, authenticator_challenge, username
    )
    return V2Check(ok=True, password_hash=password_hash, nt_response=nt_response, authenticator_response=auth)


# --- MS-CHAPv2 engines ------------------------------------------------------------------------


def _ms_failure(
    engine: ChapAuthenticatorBase,
    kind: FailureKind,
    reason: str,
    may_retry: bool,
    *,
    version: int,
    always_challenge: bool,
) -> Verdict:
    """The Failure verdict both MS-CHAP versions send: E=691, R=, C= (a fresh challenge when a
    retry is offered), V=, M=."""
    retry = engine._make_challenge() if may_retry else None
    text = MsChapFailureMessage(
        error=MsChapError.AUTHENTICATION_FAILURE,
        retry=may_retry,
        challenge=retry if retry is not None or not always_challenge else engine._challenge,
        version=version,
        message=engine.config.failure_message,
    )
    return Verdict(
        ok=False,
        message=text.encode(),
        kind=kind,
        reason=reason,
        code=MsChapError.AUTHENTICATION_FAILURE,
        retry_challenge=retry,
    )


class MsChapV2Authenticator(ChapAuthenticatorBase):
    method = AuthMethod.MSCHAP_V2
    challenge_length = MSCHAPV2_CHALLENGE_LEN

    __slots__ = ()

    def _failure(self, kind: FailureKind, reason: str, may_retry: bool) -> Verdict:
        # C= is mandatory in MS-CHAPv2; without a retry its value does not matter.
        return _ms_failure(self, kind, reason, may_retry, version=3, always_challenge=True)

    def _verify(self, response: ChapResponse, name: str, may_retry: bool) -> Verdict:
        found = lookup_peer_secret(self.config, name, ms_name=True)
        if found is None:
            return self._failure(FailureKind.UNKNOWN_PEER, f"no MS-CHAPv2 secret for {name!r}", may_retry)
        if len(response.value) != MSCHAP_RESPONSE_LEN:
            return self._failure(
                FailureKind.WRONG_SECRET,
                f"MS-CHAPv2 response of {len(response.value)} bytes from {name!r}",
                may_retry,
            )
        check = v2_check_response(self._challenge, response.name, response.value, found.secret)
        if not check.ok:
            return self._failure(
                FailureKind.WRONG_SECRET, f"wrong MS-CHAPv2 response from {name!r}", may_retry
            )
        text = MsChapSuccessMessage(
            authenticator_response=check.authenticator_response, message=self.config.success_message
        )
        return Verdict(
            ok=True,
            message=text.encode(),
            key_material=MsChapV2Keys(nt_password_hash=check.password_hash, nt_response=check.nt_response),
            addresses=found.addresses,
            secret_source=found.source,
        )

    def _no_verdict(self, kind: FailureKind, reason: str) -> Verdict:
        return self._failure(kind, reason, False)

    def _credentials(self, response: ChapResponse) -> Credentials | Verdict:
        value = response.value
        if len(value) != MSCHAP_RESPONSE_LEN:
            return self._no_verdict(FailureKind.WRONG_SECRET, f"MS-CHAPv2 response of {len(value)} bytes")
        # Peer-Challenge (16), 8 reserved octets, NT-Response (24), Flags (RFC 2759 4).
        return MsChapV2Credentials(identifier=response.identifier, authenticator_challenge=self._challenge,
                                   peer_challenge=value[:16], nt_response=value[24:48], flags=value[48])

    def _from_external(self, verdict: ExternalVerdict) -> Verdict:
        if not verdict.ok:
            return _external_failure(self, verdict)
        response = verdict.authenticator_response
        if response is None or len(response) != 42 or not response.startswith(b"S="):
            # Without the authenticator response the peer would reject us anyway (it proves
            # the server knows the password): fail here, with a reason an operator can act on.
            return self._no_verdict(FailureKind.PROTOCOL, "the verifier's answer has no MS-CHAPv2 "
                                    "authenticator response (S=)")
        text = response + b" M=" + self.config.success_message.encode("utf-8")
        return Verdict(ok=True, message=text, key_material=verdict.key_material, secret_source="external")


def _failure_error(raw: bytes, method: str) -> PeerFailure:
    try:
        parsed = MsChapFailureMessage.decode(raw)
    except DecodeError:
        text = raw[:MAX_MESSAGE_LEN].decode("utf-8", "replace")
        return PeerFailure(FailureKind.REJECTED, f"{method} authentication failed: {text!r}", message=text)
    reason = f"{method} authentication failed: E={parsed.error} ({describe_error(parsed.error)})"
    if parsed.message:
        reason += f": {parsed.message}"
    return PeerFailure(FailureKind.REJECTED, reason, code=parsed.error, message=parsed.message)


class MsChapV2Peer(ChapPeerBase):
    method = AuthMethod.MSCHAP_V2

    __slots__ = ('_v2',)

    def __init__(self, config: PeerConfig, now: float) -> None:
        super().__init__(config, now)
        self._v2: V2PeerState | None = None

    def _check_challenge(self, value: bytes) -> None:
        if len(value) != MSCHAPV2_CHALLENGE_LEN:
            raise DecodeError(f"MS-CHAPv2 challenge of {len(value)} bytes")

    def _make_response(self, identifier: int, challenge: bytes, password: str) -> bytes:
        self._v2 = v2_peer_response(
            challenge, self.config.random(16), wire_name(self.config.username), password
        )
        return self._v2.response_value()

    def _check_success(self, message: bytes) -> KeyMaterial | None:
        assert self._v2 is not None
        keys, _ = self._v2.check_success(message)
        return keys

    def _success_text(self, message: bytes) -> str:
        return MsChapSuccessMessage.decode(message).message

    def _retry_after_failure(self, pkt: ChapFailure) -> bool:
        if self._retries_used >= self.config.mschap_retries:
            return False
        try:
            parsed = MsChapFailureMessage.decode(pkt.message)
        except DecodeError:
            return False
        if not parsed.retry or parsed.challenge is None or len(parsed.challenge) != MSCHAPV2_CHALLENGE_LEN:
            return False
        password = self.config.password_for(self._server_name)
        if password is None:
            return False
        self._retries_used += 1
        value = self._make_response(pkt.identifier + 1, parsed.challenge, password)
        self._respond((pkt.identifier + 1) & 0xFF, parsed.challenge, value)
        return True

    def _failure_error(self, message: bytes) -> PeerFailure:
        return _failure_error(message, "MS-CHAPv2")


# --- MS-CHAPv1 engines ------------------------------------------------------------------------


class MsChapV1Authenticator(ChapAuthenticatorBase):
    method = AuthMethod.MSCHAP_V1
    challenge_length = MSCHAPV1_CHALLENGE_LEN

    __slots__ = ()

    def _failure(self, kind: FailureKind, reason: str, may_retry: bool) -> Verdict:
        return _ms_failure(self, kind, reason, may_retry, version=2, always_challenge=False)

    def _verify(self, response: ChapResponse, name: str, may_retry: bool) -> Verdict:
        found = lookup_peer_secret(self.config, name, ms_name=True)
        if found is None:
            return self._failure(FailureKind.UNKNOWN_PEER, f"no MS-CHAP secret for {name!r}", may_retry)
        value = response.value
        if len(value) != MSCHAP_RESPONSE_LEN:
            return self._failure(
                FailureKind.WRONG_SECRET, f"MS-CHAP response of {len(value)} bytes from {name!r}", may_retry
            )
        if not value[48] & 1:
            # Only the LAN Manager response is offered; it is obsolete and we keep no LM hashes.
            return self._failure(
                FailureKind.WRONG_SECRET, f"{name!r} sent only a LAN Manager response", may_retry
            )
        password_hash = nt_password_hash(found.secret)
        if not verify_mschapv1_nt_response(self._challenge, password_hash, value[24:48]):
            return self._failure(FailureKind.WRONG_SECRET, f"wrong MS-CHAP response from {name!r}", may_retry)
        return Verdict(
            ok=True,
            message=self.config.success_message.encode("utf-8"),
            key_material=MsChapV1Keys(nt_password_hash=password_hash, challenge=self._challenge),
            addresses=found.addresses,
            secret_source=found.source,
        )

    def _no_verdict(self, kind: FailureKind, reason: str) -> Verdict:
        return self._failure(kind, reason, False)

    def _credentials(self, response: ChapResponse) -> Credentials | Verdict:
        value = response.value
        if len(value) != MSCHAP_RESPONSE_LEN:
            return self._no_verdict(FailureKind.WRONG_SECRET, f"MS-CHAP response of {len(value)} bytes")
        if not value[48] & 1:
            return self._no_verdict(FailureKind.WRONG_SECRET, "only a LAN Manager response was sent")
        return MsChapV1Credentials(identifier=response.identifier, challenge=self._challenge,
                                   lm_response=value[:24], nt_response=value[24:48], use_nt=True)

    def _from_external(self, verdict: ExternalVerdict) -> Verdict:
        if not verdict.ok:
            return _external_failure(self, verdict)
        return Verdict(ok=True, message=_text(verdict.message or self.config.success_message),
                       key_material=verdict.key_material, secret_source="external")


def _text(message: str) -> bytes:
    return message.encode("utf-8")


def _external_failure(engine: MsChapV2Authenticator | MsChapV1Authenticator,
                      verdict: ExternalVerdict) -> Verdict:
    """The verifier's MS-CHAP-Error text goes to the peer as it is (its E= code tells the peer's
    user why: 691 bad password, 648 password expired ...); without one, ours."""
    reason = verdict.reason or "rejected by the verifier"
    if verdict.failure_message is None:
        return engine._no_verdict(FailureKind.WRONG_SECRET, reason)
    try:
        parsed = MsChapFailureMessage.decode(verdict.failure_message)
    except DecodeError:
        return engine._no_verdict(FailureKind.WRONG_SECRET, f"{reason} (unreadable MS-CHAP-Error)")
    # R=1 would invite a retry against a challenge the verifier picked and we cannot check
    # against: offer none (pppd's radius plugin does not either).
    message = replace(parsed, retry=False).encode() if parsed.retry else verdict.failure_message
    return Verdict(ok=False, message=message, kind=FailureKind.WRONG_SECRET, reason=reason, code=parsed.error)


class MsChapV1Peer(ChapPeerBase):
    method = AuthMethod.MSCHAP_V1

    __slots__ = ('_keys',)

    def __init__(self, config: PeerConfig, now: float) -> None:
        super().__init__(config, now)
        self._keys: MsChapV1Keys | None = None

    def _check_challenge(self, value: bytes) -> None:
        if len(value) != MSCHAPV1_CHALLENGE_LEN:
            raise DecodeError(f"MS-CHAP challenge of {len(value)} bytes")

    def _make_response(self, identifier: int, challenge: bytes, password: str) -> bytes:
        password_hash = nt_password_hash(password)
        self._keys = MsChapV1Keys(nt_password_hash=password_hash, challenge=challenge)
        # The LAN Manager response is deprecated: zero-filled, flag 1 = "use the NT response".
        return bytes(24) + nt_challenge_response_from_hash(challenge, password_hash) + b"\x01"

    def _check_success(self, message: bytes) -> KeyMaterial | None:
        return self._keys

    def _retry_after_failure(self, pkt: ChapFailure) -> bool:
        if self._retries_used >= self.config.mschap_retries or self._last_challenge is None:
            return False
        try:
            parsed = MsChapFailureMessage.decode(pkt.message)
        except DecodeError:
            return False
        if not parsed.retry:
            return False
        challenge = parsed.challenge
        if challenge is None:
            # RFC 2433 section 8: without C= the new challenge is the old one plus 23 in octet 0.
            old = self._last_challenge
            challenge = bytes([(old[0] + 23) & 0xFF]) + old[1:]
        if len(challenge) != MSCHAPV1_CHALLENGE_LEN:
            return False
        password = self.config.password_for(self._server_name)
        if password is None:
            return False
        self._retries_used += 1
        value = self._make_response(pkt.identifier + 1, challenge, password)
        self._respond((pkt.identifier + 1) & 0xFF, challenge, value)
        return True

    def _failure_error(self, message: bytes) -> PeerFailure:
        return _failure_error(message, "MS-CHAP")
