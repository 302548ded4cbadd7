"""What every authentication engine shares: roles, events, configs, the engine skeleton.

An engine runs one method in one role for one link, sans-IO (docs/conventions.md):

* built with a config and ``now``; :meth:`AuthEngine.start` when LCP reaches the
  Authenticate phase;
* :meth:`AuthEngine.receive` takes the PPP payload of the method's protocol (code, identifier,
  length, data) - for PAP 0xC023, CHAP 0xC223 (MD5 and both MS-CHAPs), EAP 0xC227;
* :meth:`AuthEngine.packets_to_send` drains the payloads to send under the same protocol;
* :meth:`AuthEngine.next_event` yields :class:`AuthSucceeded` / :class:`AuthFailed`;
* with :attr:`AuthenticatorConfig.external`, the authenticator does not look the peer's secret
  up: it yields :class:`VerifyRequest` with what the peer sent and waits for
  :meth:`AuthEngine.complete_verification` (RADIUS answers it; the secret never reaches us);
* :meth:`AuthEngine.get_timer` / :meth:`AuthEngine.handle_timer` drive retransmissions and
  give-up timeouts.

Malformed input never raises out of ``receive``: it is counted in :attr:`AuthEngine.counters`
and dropped, exactly as the RFCs ask ("silently discarded").
"""

from __future__ import annotations

import abc
import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import AddressPolicy, SecretMatch, SecretsProvider
from pptpkit.errors import ConfigError, DecodeError, PptpkitError, StateError
from pptpkit.wire import Reader

__all__ = [
    "MAX_NAME_LEN",
    "AuthCounters",
    "AuthEngine",
    "AuthEvent",
    "AuthFailed",
    "AuthSucceeded",
    "AuthenticatorConfig",
    "ChapMd5Credentials",
    "Credentials",
    "ExternalVerdict",
    "FailureKind",
    "KeyMaterial",
    "MppeStartKeys",
    "MsChapV1Credentials",
    "MsChapV1HashKeys",
    "MsChapV1Keys",
    "MsChapV2Credentials",
    "MsChapV2Keys",
    "PapCredentials",
    "PeerConfig",
    "Role",
    "VerifyRequest",
]

#: Longest name (CHAP Name, PAP Peer-ID, EAP identity) we accept or send, in bytes: pppd's
#: MAXNAMELEN buffer is 256 with its terminating NUL, and PAP's Peer-ID Length is one octet.
MAX_NAME_LEN: Final = 255
#: Longest secret we use (pppd's MAXSECRETLEN buffer; PAP's Passwd-Length is one octet).
MAX_SECRET_LEN: Final = 255
#: Caps on what an engine queues for its owner to drain.
MAX_QUEUED_PACKETS: Final = 16
MAX_QUEUED_EVENTS: Final = 16

HEADER: Final = struct.Struct("!BBH")


class Role(enum.Enum):
    """Which end of the exchange an engine plays."""

    AUTHENTICATOR = "authenticator"  # checks the other end (the "server" in pppd's words)
    PEER = "peer"  # proves itself to the other end (the "client")


class FailureKind(enum.Enum):
    """Why authentication failed, coarse enough to map to pppd-like exit codes."""

    WRONG_SECRET = "wrong-secret"  # authenticator: the peer's proof did not match the secret
    UNKNOWN_PEER = "unknown-peer"  # authenticator: no secret for the name the peer gave
    REJECTED = "rejected"  # peer: the authenticator said Failure / Nak
    AUTHENTICATOR_NOT_PROVEN = "authenticator-not-proven"  # peer: MS-CHAPv2 S= missing or wrong
    NO_SECRET = "no-secret"  # peer: we have no password for this authenticator
    TIMEOUT = "timeout"  # retransmissions exhausted or nothing arrived in time
    NO_COMMON_METHOD = "no-common-method"  # EAP: the peer Nak'ed every method we offer
    PROTOCOL = "protocol"  # the other end broke the protocol (e.g. EAP-Success too early)


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapV1Keys:
    """What MPPE needs after MS-CHAPv1 (RFC 3079 section 2.1/2.2)."""

    nt_password_hash: bytes  # 16 octets: NtPasswordHash(password)
    challenge: bytes  # 8 octets: the authenticator's challenge that was answered


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapV2Keys:
    """What MPPE needs after MS-CHAPv2 or EAP-MS-CHAPv2 (RFC 3079 section 3)."""

    nt_password_hash: bytes  # 16 octets: NtPasswordHash(password)
    nt_response: bytes  # 24 octets: the NT-Response that was accepted


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapV1HashKeys:
    """MS-CHAPv1 key material as RADIUS gives it (RFC 2548 2.4.1 MS-CHAP-MPPE-Keys: its NT key
    is NtPasswordHashHash, from which RFC 3079 2.2 derives the start key with the challenge)."""

    nt_password_hash_hash: bytes = field(repr=False)
    challenge: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class MppeStartKeys:
    """Master keys handed to us whole (RADIUS MS-MPPE-Send-Key/Recv-Key, RFC 2548 2.4.2/2.4.3),
    from this end's point of view: ``send`` encrypts what we send.  16 octets each; 40- and
    56-bit MPPE use their first 8 (RFC 3079 3.3 takes the first octets of the same digest)."""

    send: bytes = field(repr=False)
    recv: bytes = field(repr=False)


KeyMaterial = MsChapV1Keys | MsChapV2Keys | MsChapV1HashKeys | MppeStartKeys


# --- external verification (RADIUS): what the peer sent, and the answer -------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PapCredentials:
    password: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class ChapMd5Credentials:
    identifier: int
    challenge: bytes
    response: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapV1Credentials:
    identifier: int
    challenge: bytes
    lm_response: bytes
    nt_response: bytes
    use_nt: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class MsChapV2Credentials:
    identifier: int
    authenticator_challenge: bytes
    peer_challenge: bytes
    nt_response: bytes
    flags: int


Credentials = PapCredentials | ChapMd5Credentials | MsChapV1Credentials | MsChapV2Credentials


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifyRequest:
    """The authenticator needs a verdict on ``credentials`` (see
    :meth:`AuthEngine.complete_verification`); it answers nothing to the peer until then."""

    method: AuthMethod
    role: Role
    username: str
    credentials: Credentials


@dataclass(frozen=True, kw_only=True, slots=True)
class ExternalVerdict:
    """An outside verifier's answer.  ``authenticator_response``: MS-CHAPv2's ``S=`` + 40 hex
    digits (RFC 2548 MS-CHAP2-Success), required for an MS-CHAPv2 success.
    ``failure_message``: MS-CHAP's failure text (``E=691 R=0 ...``, RFC 2548 MS-CHAP-Error), sent
    as it is.  ``message``: text for PAP/CHAP Success or Failure.  ``reason``: for our log."""

    ok: bool
    reason: str = ""
    message: str = ""
    authenticator_response: bytes | None = None
    failure_message: bytes | None = None
    key_material: KeyMaterial | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthSucceeded:
    """Authentication succeeded (again, with ``repeat``, after a CHAP rechallenge).

    ``username`` is the identity that was authenticated (the peer's name on the authenticator,
    our own user name on the peer); ``peer_name`` is the other end's name (on the peer: the
    authenticator's name from its challenge, "" when it sent none).  ``addresses`` and
    ``secret_source`` are set on the authenticator only (from the matching secrets entry).
    ``eap_type`` is the inner EAP method that ran, for EAP.
    """

    method: AuthMethod
    role: Role
    username: str
    peer_name: str
    message: str = ""
    key_material: KeyMaterial | None = None
    addresses: AddressPolicy | None = None
    secret_source: str | None = None
    eap_type: int | None = None
    repeat: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthFailed:
    """Authentication failed for good; the link should be terminated.

    ``code`` is the MS-CHAP error code (691, 648 ...) where one was sent or received; ``message``
    is the human-readable text from the wire (PAP Nak message, CHAP Failure text, MS-CHAP ``M=``).
    """

    method: AuthMethod
    role: Role
    username: str
    kind: FailureKind
    reason: str
    code: int | None = None
    message: str = ""
    eap_type: int | None = None


AuthEvent = AuthSucceeded | AuthFailed | VerifyRequest


def _default_random(n: int) -> bytes:
    return os.urandom(n)


def _check_name(what: str, value: str) -> None:
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} must be Latin-1 text (it goes on the wire byte for byte)") from None
    if len(raw) > MAX_NAME_LEN:
        raise ConfigError(f"{what} longer than {MAX_NAME_LEN} bytes")


def _check_timing(restart_interval: float, max_transmits: int) -> None:
    if not restart_interval > 0:
        raise ConfigError("restart_interval must be positive")
    if not 1 <= max_transmits <= 1000:
        raise ConfigError("max_transmits must be between 1 and 1000")


@dataclass(frozen=True, kw_only=True)
class AuthenticatorConfig:
    """Configuration of an authenticator engine (any method).

    Defaults follow pppd: ``restart_interval`` 3 s and ``max_transmits`` 10 are chap-restart /
    chap-max-challenge (and pap/eap equivalents); ``request_timeout`` 30 s is pap-timeout (how
    long PAP waits for the peer's Authenticate-Request; 0 = forever); ``rechallenge_interval`` is
    chap-interval (None = never).  ``mschap_retries`` is how many further Responses a peer may
    send after an MS-CHAP Failure (sent with ``R=1`` and a new challenge while any remain);
    pppd allows none.  ``mschap_retry_timeout`` bounds the wait for such a retry (the RFCs tell
    the authenticator to drop short timeouts while the user types a new password).
    ``mschap_strip_domain`` is pppd's chapms-strip-domain: look MS-CHAP users up without their
    ``DOMAIN\\`` prefix.
    ``eap_methods`` are the EAP types we offer, in order.  ``random`` supplies challenges.
    ``external``: ask for every verdict with :class:`VerifyRequest` instead of reading
    ``secrets`` (PAP, CHAP-MD5 and both MS-CHAPs; EAP cannot); the peer is answered when
    :meth:`AuthEngine.complete_verification` is called, or failed after
    ``verification_timeout`` seconds without one.
    """

    name: str
    secrets: SecretsProvider
    restart_interval: float = 3.0
    max_transmits: int = 10
    request_timeout: float = 30.0
    rechallenge_interval: float | None = None
    mschap_retries: int = 0
    mschap_retry_timeout: float = 60.0
    mschap_strip_domain: bool = False
    eap_methods: tuple[int, ...] = (26, 4)
    success_message: str = "Access granted"
    failure_message: str = "Access denied"
    random: Callable[[int], bytes] = field(default=_default_random, repr=False)
    external: bool = False
    verification_timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if not self.verification_timeout > 0:
            raise ConfigError("verification_timeout must be positive")
        _check_timing(self.restart_interval, self.max_transmits)
        if self.request_timeout < 0:
            raise ConfigError("request_timeout must not be negative (0 = no limit)")
        if self.rechallenge_interval is not None and not self.rechallenge_interval > 0:
            raise ConfigError("rechallenge_interval must be positive or None")
        if not 0 <= self.mschap_retries <= 100:
            raise ConfigError("mschap_retries must be between 0 and 100")
        if not self.mschap_retry_timeout > 0:
            raise ConfigError("mschap_retry_timeout must be positive")
        if not self.eap_methods or any(t not in (4, 26) for t in self.eap_methods):
            raise ConfigError("eap_methods must list EAP types we implement: 26 (MS-CHAPv2), 4 (MD5)")
        if len(set(self.eap_methods)) != len(self.eap_methods):
            raise ConfigError("eap_methods lists a type twice")
        for what in ("success_message", "failure_message"):
            if len(getattr(self, what).encode("utf-8")) > 200:
                raise ConfigError(f"{what} longer than 200 bytes")


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    """Configuration of a peer engine (any method): who we are and how we find our password.

    ``password`` is used as is when given; otherwise ``secrets`` is asked for
    ``(username, authenticator name)`` - ``remote_name`` (pppd's remotename) when it is set, as
    pppd does, else the name from the challenge (PAP carries none).  ``restart_interval``/``max_transmits``
    are pap-restart / pap-max-authreq.  ``timeout`` bounds the wait for the authenticator's
    challenge and verdict (pppd's CHAP client waits 60 s); 0 = forever.  ``mschap_retries``: how
    often we answer an MS-CHAP Failure carrying ``R=1`` by retrying with the same password (0,
    the default, fails at once as pppd does).  ``eap_methods``: EAP types we accept, preferred
    first (the order of our Nak).  ``eap_identity`` overrides the EAP Identity (default
    ``username``).
    """

    username: str
    password: str | None = None
    secrets: SecretsProvider | None = None
    remote_name: str | None = None
    restart_interval: float = 3.0
    max_transmits: int = 10
    timeout: float = 60.0
    mschap_retries: int = 0
    eap_methods: tuple[int, ...] = (26, 4)
    eap_identity: str | None = None
    random: Callable[[int], bytes] = field(default=_default_random, repr=False)

    def __post_init__(self) -> None:
        _check_name("username", self.username)
        if self.remote_name is not None:
            _check_name("remote_name", self.remote_name)
        if self.eap_identity is not None:
            _check_name("eap_identity", self.eap_identity)
        if self.password is None and self.secrets is None:
            raise ConfigError("a peer needs a password or a secrets provider")
        if self.password is not None:
            _check_name("password", self.password)
        _check_timing(self.restart_interval, self.max_transmits)
        if self.timeout < 0:
            raise ConfigError("timeout must not be negative (0 = no limit)")
        if not 0 <= self.mschap_retries <= 100:
            raise ConfigError("mschap_retries must be between 0 and 100")
        if any(t not in (4, 26) for t in self.eap_methods):
            raise ConfigError("eap_methods must list EAP types we implement: 26 (MS-CHAPv2), 4 (MD5)")
        if len(set(self.eap_methods)) != len(self.eap_methods):
            raise ConfigError("eap_methods lists a type twice")

    def password_for(self, server: str | None) -> str | None:
        """Our password towards ``server`` (None: unknown name), or None when we have none."""
        if self.password is not None:
            return self.password
        assert self.secrets is not None
        # pppd: an explicit remotename wins over the name the authenticator sends (pptpsetup
        # profiles rely on it: the secrets line names the profile, not the server's CHAP name).
        towards = self.remote_name if self.remote_name is not None else server
        found = self.secrets.lookup(self.username, towards)
        if found is None or len(found.secret.encode("latin-1", "replace")) > MAX_SECRET_LEN:
            return None
        return found.secret


@dataclass(slots=True)
class AuthCounters:
    """Per-engine counters, for logs and tests."""

    received: int = 0
    malformed: int = 0  # did not decode: silently discarded
    ignored: int = 0  # decoded but not expected now (stale identifier, wrong state, unknown code)
    sent: int = 0
    retransmitted: int = 0
    dropped_output: int = 0  # packets dropped because the owner did not drain the queue
    dropped_events: int = 0
    inferred_success: int = 0  # a lost Success taken as read from the peer's network traffic


def read_header(data: bytes) -> tuple[int, int, Reader]:
    """Split a PAP/CHAP/EAP packet: (code, identifier, reader over the data inside Length).

    Octets after Length are padding (RFC 1661 section 5) and ignored.
    """
    r = Reader(data)
    code, identifier, length = (int(v) for v in r.unpack(HEADER))
    if length < HEADER.size:
        raise DecodeError(f"length field {length} shorter than the header")
    if length > len(data):
        raise DecodeError(f"length field {length} exceeds the {len(data)} bytes received")
    return code, identifier, Reader(data, HEADER.size, length)


def build_packet(code: int, identifier: int, body: bytes) -> bytes:
    length = HEADER.size + len(body)
    if length > 0xFFFF:
        raise ValueError("packet longer than 65535 bytes")
    return HEADER.pack(code, identifier & 0xFF, length) + body


def wire_name(name: str) -> bytes:
    return name.encode("latin-1")


def text_name(raw: bytes) -> str:
    return raw.decode("latin-1")


def text_message(raw: bytes) -> str:
    """Human-readable text from the wire, for events and logs (never parsed for security)."""
    return raw.decode("utf-8", "replace")


class AuthEngine(abc.ABC):
    """The skeleton every method engine fills in (``_start``, ``_receive``, ``_on_timer``)."""

    method: ClassVar[AuthMethod]
    role: ClassVar[Role]

    __slots__ = ('_events', '_out', '_result', '_started', '_stopped', '_timer', 'counters')

    def __init__(self, now: float) -> None:
        self.counters = AuthCounters()
        self._out: list[bytes] = []
        self._events: list[AuthEvent] = []
        self._timer: float | None = None
        self._started = False
        self._stopped = False
        self._result: AuthEvent | None = None

    # --- public API -----------------------------------------------------------------------

    @property
    def protocol(self) -> int:
        """The PPP protocol number of this engine's packets."""
        return self.method.protocol

    @property
    def result(self) -> AuthEvent | None:
        """The latest verdict (None while undecided)."""
        return self._result

    @property
    def succeeded(self) -> bool:
        return isinstance(self._result, AuthSucceeded)

    @property
    def failed(self) -> bool:
        return isinstance(self._result, AuthFailed)

    def start(self, now: float) -> None:
        if self._started:
            raise StateError("authentication engine already started")
        self._started = True
        self._start(now)

    def stop(self) -> None:
        """The link left the phase where this exchange runs: no more timers, input ignored."""
        self._stopped = True
        self._timer = None

    def receive(self, packet: bytes, now: float) -> None:
        self.counters.received += 1
        if not self._started or self._stopped:
            self.counters.ignored += 1
            return
        try:
            self._receive(bytes(packet), now)
        except PptpkitError:
            self.counters.malformed += 1

    def packets_to_send(self) -> list[bytes]:
        out = self._out
        self._out = []
        return out

    def next_event(self) -> AuthEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer or self._stopped:
            return
        self._timer = None
        self._on_timer(now)

    def network_packet_seen(self, now: float) -> bool:
        """The authenticator sent a network-phase packet (an NCP's) while we still wait for its
        verdict: it has concluded, and its Success may have been lost.  True when this engine
        takes that as its Success; only a method whose rules allow it does (EAP)."""
        if not self._started or self._stopped:
            return False
        return self._infer_success(now)

    def complete_verification(self, verdict: ExternalVerdict, now: float) -> None:
        """The answer to the last :class:`VerifyRequest`.  Ignored when none is outstanding:
        the engine gave up waiting, or was stopped, and a late answer must change nothing."""
        if self._started and not self._stopped:
            self._complete(verdict, now)

    # --- for subclasses ---------------------------------------------------------------------

    @abc.abstractmethod
    def _start(self, now: float) -> None: ...

    @abc.abstractmethod
    def _receive(self, packet: bytes, now: float) -> None: ...

    @abc.abstractmethod
    def _on_timer(self, now: float) -> None: ...

    def _infer_success(self, now: float) -> bool:
        """CHAP and PAP peers repeat their own packet until the verdict comes instead: an MS-CHAPv2
        Success carries the proof that the authenticator knows the secret, which no NCP packet
        can replace."""
        return False

    def _complete(self, verdict: ExternalVerdict, now: float) -> None:
        """Engines that never ask (peers, EAP) have nothing outstanding to complete."""
        self.counters.ignored += 1

    def _send(self, packet: bytes, *, retransmission: bool = False) -> None:
        if len(self._out) >= MAX_QUEUED_PACKETS:
            del self._out[0]
            self.counters.dropped_output += 1
        self._out.append(packet)
        self.counters.sent += 1
        if retransmission:
            self.counters.retransmitted += 1

    def _emit(self, event: AuthEvent) -> None:
        if len(self._events) >= MAX_QUEUED_EVENTS:
            del self._events[0]
            self.counters.dropped_events += 1
        self._events.append(event)
        if not isinstance(event, VerifyRequest):
            self._result = event

    def _set_timer(self, at: float | None) -> None:
        self._timer = at

    def _fail(
        self,
        username: str,
        kind: FailureKind,
        reason: str,
        *,
        code: int | None = None,
        message: str = "",
        eap_type: int | None = None,
    ) -> None:
        self._timer = None
        self._emit(
            AuthFailed(
                method=self.method,
                role=self.role,
                username=username,
                kind=kind,
                reason=reason,
                code=code,
                message=message,
                eap_type=eap_type,
            )
        )


def lookup_peer_secret(
    config: AuthenticatorConfig, peer_name: str, *, ms_name: bool = False
) -> SecretMatch | None:
    """The authenticator's view of the secrets: the peer's name as client, ours as server.

    ``ms_name``: the name came from MS-CHAP, where ``mschap_strip_domain`` may apply.
    """
    if ms_name and config.mschap_strip_domain:
        peer_name = peer_name.rsplit("\\", 1)[-1]
    found = config.secrets.lookup(peer_name, config.name)
    if found is None:
        return None
    if len(found.secret.encode("latin-1", "replace")) > MAX_SECRET_LEN:
        return None
    return found
