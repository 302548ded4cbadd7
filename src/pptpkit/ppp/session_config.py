"""Configuration, outcomes and events of :class:`pptpkit.ppp.session.PppSession`.

Kept apart from the engine so that adapters and the CLI can import the vocabulary (outcomes,
events, policies) without the engine itself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from pptpkit.auth.base import AuthenticatorConfig, Credentials, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import FsmConfig
from pptpkit.ppp.ipcp import PeerAddress
from pptpkit.ppp.lcp import DEFAULT_MRU, MIN_MRU

__all__ = [
    "AccmChanged",
    "Authenticated",
    "AuthenticationFailed",
    "Ipv6Down",
    "Ipv6Up",
    "LinkDown",
    "LinkParameters",
    "LinkUp",
    "MppePolicy",
    "NetworkDown",
    "Outcome",
    "Phase",
    "PhaseChanged",
    "SessionConfig",
    "SessionEvent",
    "SessionRole",
    "VerificationNeeded",
]


class SessionRole(enum.Enum):
    """``SERVER``: the authenticator that assigns addresses (pptpd's pppd).  ``CLIENT``: the
    authenticated peer that takes the address it is given (pptp-linux's pppd)."""

    SERVER = "server"
    CLIENT = "client"


class Phase(enum.Enum):
    """RFC 1661 section 3.2 link phases."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


class Outcome(enum.Enum):
    """Why a session ended, close to pppd's exit statuses (pppd.h ``EXIT_*``).

    :attr:`exit_status` is pppd's number for the same situation.  pppd exits with
    ``EXIT_NEGOTIATION_FAILED`` (10) for every failure before the network phase that has no
    more specific code, MPPE refusal included, and with ``EXIT_OK`` (0) when a link that had
    come up was simply terminated; :class:`LinkDown` carries the status resolved that way.
    """

    LOCAL_CLOSE = "local-close"  # close() was called: EXIT_USER_REQUEST
    PEER_TERMINATED = "peer-terminated"  # the peer sent LCP Terminate-Request
    LOWER_LAYER_DOWN = "lower-layer-down"  # the PPTP call went away: EXIT_HANGUP
    NEGOTIATION_FAILED = "negotiation-failed"  # EXIT_NEGOTIATION_FAILED
    MPPE_REFUSED = "mppe-refused"  # MPPE required but not available/refused (pppd: 10)
    PEER_AUTH_FAILED = "peer-auth-failed"  # the peer failed to authenticate to us
    AUTH_TOPEER_FAILED = "auth-topeer-failed"  # we failed to authenticate to the peer
    IDLE_TIMEOUT = "idle-timeout"  # no data for idle_timeout seconds
    PEER_DEAD = "peer-dead"  # LCP echo keepalive failed
    LOOPBACK = "loopback"  # our magic number came back

    @property
    def exit_status(self) -> int:
        """pppd's exit status (for PEER_TERMINATED: the one before the link came up)."""
        return _EXIT_STATUS[self]


_EXIT_STATUS: Final = {
    Outcome.LOCAL_CLOSE: 5,
    Outcome.PEER_TERMINATED: 10,
    Outcome.LOWER_LAYER_DOWN: 16,
    Outcome.NEGOTIATION_FAILED: 10,
    Outcome.MPPE_REFUSED: 10,
    Outcome.PEER_AUTH_FAILED: 11,
    Outcome.AUTH_TOPEER_FAILED: 19,
    Outcome.IDLE_TIMEOUT: 12,
    Outcome.PEER_DEAD: 15,
    Outcome.LOOPBACK: 17,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MppePolicy:
    """MPPE the way pppd's options say it.

    ``bits_40/56/128``: key lengths we allow (pppd never does 56).  ``stateful``: pppd
    ``mppe-stateful`` (stateless only otherwise).  ``required``: pppd ``require-mppe*``; a
    link without MPPE both ways is then ended with :attr:`Outcome.MPPE_REFUSED`.
    ``flushed_means_rekey``: how a stateful reset works (see :mod:`pptpkit.crypto.mppe`; True
    = Linux, what the real pppd runs on).  ``reset_interval``/``reset_max``: retransmission of
    our CCP Reset-Request while the stateful decryptor discards (RFC 1962 section 2.1).
    """

    bits_40: bool = True
    bits_56: bool = False
    bits_128: bool = True
    stateful: bool = False
    required: bool = False
    flushed_means_rekey: bool = True
    reset_interval: float = 1.0
    reset_max: int = 10

    def __post_init__(self) -> None:
        if self.required and not self.allowed:
            raise ConfigError("MPPE required but every key length refused")
        if not 0 < self.reset_interval <= 60:
            raise ConfigError("reset_interval must be in (0, 60] seconds")
        if not 1 <= self.reset_max <= 100:
            raise ConfigError("reset_max must be between 1 and 100")

    @property
    def allowed(self) -> bool:
        return self.bits_40 or self.bits_56 or self.bits_128

    @classmethod
    def nomppe(cls) -> MppePolicy:
        return cls(bits_40=False, bits_56=False, bits_128=False)

    @classmethod
    def from_pppd_options(cls, options: Iterable[str]) -> MppePolicy:
        """``require-mppe``, ``require-mppe-40``, ``require-mppe-128``, ``nomppe``,
        ``nomppe-40``, ``nomppe-128``, ``mppe-stateful``, ``nomppe-stateful``; other words are
        skipped.  As in pppd, ``require-mppe-40``/``-128`` alone allow only that length."""
        words = list(options)
        bits40 = bits128 = True
        required = stateful = False
        only: set[int] = set()
        for word in words:
            if word == "require-mppe":
                required = True
            elif word in ("require-mppe-40", "require-mppe-128"):
                required = True
                only.add(int(word.rsplit("-", 1)[1]))
            elif word == "nomppe":
                bits40 = bits128 = required = False
                only.clear()
            elif word == "nomppe-40":
                bits40 = False
            elif word == "nomppe-128":
                bits128 = False
            elif word == "mppe-stateful":
                stateful = True
            elif word == "nomppe-stateful":
                stateful = False
        if only:
            bits40 = bits40 and 40 in only
            bits128 = bits128 and 128 in only
        return cls(bits_40=bits40, bits_56=False, bits_128=bits128, stateful=stateful, required=required)

    def describe(self) -> str:
        lengths = [str(n) for n, on in ((40, self.bits_40), (56, self.bits_56), (128, self.bits_128)) if on]
        if not lengths:
            return "no MPPE"
        mode = "stateful allowed" if self.stateful else "stateless"
        need = "required" if self.required else "optional"
        return f"MPPE {'/'.join(lengths)}-bit {mode}, {need}"


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """Everything one PPP session needs.

    Authentication: ``auth_policy`` decides what we ask the peer for and what we agree to;
    ``authenticator`` (our name + secrets) is needed as soon as the policy authenticates the
    peer; ``peer`` (username + password) is needed to authenticate ourselves (without it we
    refuse to).  LCP: ``mru``, ``accm`` (None: not requested), ``pfc``/``acfc``,
    ``echo_interval`` seconds between keepalives (0: off) and ``echo_failure`` unanswered ones
    before the link is dead (pppd's lcp-echo-interval/-failure), ``magic_source`` for tests,
    ``fsm`` (restart timer and counters, used by every control protocol).
    IPCP: ``local_address`` (server: ours; client: None to be told), ``peer_address`` (server:
    a value or a callable asked once per negotiation; a secrets entry naming exactly one
    address overrides it), ``dns_servers``/``nbns_servers`` to push, ``request_dns``/
    ``request_nbns`` (client).  ``ipv6``: run IPV6CP (else it is Protocol-Rejected) with
    ``ipv6_interface_id``/``ipv6_id_source``.  ``ccp``: run CCP at all (False: Protocol-Reject
    it, pppd's noccp; MPPE is then impossible).  ``mppe``: the MPPE policy.
    ``idle_timeout``: seconds without data in either direction before the link is closed (0:
    never).  ``max_queued_frames``/``max_queued_events``: caps on what waits to be drained.
    """

    role: SessionRole
    auth_policy: AuthPolicy = field(default_factory=AuthPolicy)
    authenticator: AuthenticatorConfig | None = None
    peer: PeerConfig | None = None
    mru: int = DEFAULT_MRU
    accm: int | None = 0
    pfc: bool = True
    acfc: bool = True
    echo_interval: float = 10.0
    echo_failure: int = 3
    magic_source: Callable[[], int] | None = None
    fsm: FsmConfig = field(default_factory=FsmConfig)
    local_address: IPv4Address | None = None
    peer_address: PeerAddress = None
    dns_servers: tuple[IPv4Address, ...] = ()
    nbns_servers: tuple[IPv4Address, ...] = ()
    request_dns: bool = False
    request_nbns: bool = False
    ipv6: bool = False
    ipv6_interface_id: bytes | None = None
    ipv6_id_source: Callable[[], bytes] | None = None
    ccp: bool = True
    mppe: MppePolicy = field(default_factory=MppePolicy)
    idle_timeout: float = 0.0
    max_queued_frames: int = 256
    max_queued_events: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.role, SessionRole):
            raise ConfigError("role must be a SessionRole")
        if self.auth_policy.authenticates_peer and self.authenticator is None:
            raise ConfigError("the policy authenticates the peer: an AuthenticatorConfig is needed")
        if not MIN_MRU <= self.mru <= 0xFFFF:
            raise ConfigError(f"mru {self.mru} must be between {MIN_MRU} and 65535")
        if self.mppe.required and not self.ccp:
            raise ConfigError("MPPE required but CCP disabled")
        if not 0 <= self.idle_timeout <= 86400 * 365:
            raise ConfigError("idle_timeout must be between 0 and one year")
        for name in ("max_queued_frames", "max_queued_events"):
            if not 16 <= getattr(self, name) <= 65536:
                raise ConfigError(f"{name} must be between 16 and 65536")


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseChanged:
    phase: Phase
    previous: Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkParameters:
    """LCP opened: what was agreed, for the log and the user.

    ``local_*`` is what we receive with, ``peer_*`` what we send with.  ``auth_peer`` is the
    method the peer authenticates to us with, ``auth_self`` the one we authenticate with.
    """

    local_mru: int
    peer_mru: int
    local_magic: int
    peer_magic: int
    local_pfc: bool
    peer_pfc: bool
    local_acfc: bool
    peer_acfc: bool
    auth_peer: AuthMethod | None
    auth_self: AuthMethod | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccmChanged:
    """The async maps LCP agreed, for PPTP Set-Link-Info: ``send_accm`` is the peer's request
    (what must be escaped towards the peer), ``recv_accm`` ours (what the peer escapes)."""

    send_accm: int
    recv_accm: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """One direction of authentication succeeded.  ``we_authenticated_peer``: True when we
    checked the peer (``username`` is the peer's), False when we proved ourselves."""

    method: AuthMethod
    username: str
    peer_name: str
    we_authenticated_peer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationNeeded:
    """The peer's credentials are waiting for an outside verdict (RADIUS): answer with
    :meth:`~pptpkit.ppp.session.PppSession.complete_verification`."""

    method: AuthMethod
    username: str
    credentials: Credentials


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationFailed:
    """Authentication failed; the session is closing (a :class:`LinkDown` follows)."""

    method: AuthMethod
    username: str
    reason: str
    we_authenticated_peer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkUp:
    """Data can flow: IPCP is open and MPPE is as the policy demands.

    ``mtu``: the largest IP packet to hand to :meth:`PppSession.send_packet` (the smaller of
    the two MRUs, less the MPPE overhead when we encrypt).  ``mppe``: e.g.
    ``"MPPE 128-bit stateless"`` or ``"none"``.  ``username``: the authenticated identity
    (the peer's on a server, ours on a client; "" without authentication).
    """

    local_address: IPv4Address | None
    peer_address: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    nbns_servers: tuple[IPv4Address, ...]
    local_ipv6_id: bytes | None
    peer_ipv6_id: bytes | None
    mtu: int
    mppe: str
    auth_method: AuthMethod | None
    username: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkDown:
    """Data stopped flowing without the session ending (IPCP or MPPE renegotiating, or LCP
    renegotiating, which goes back to the Establish phase); a new :class:`LinkUp` may follow."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ipv6Up:
    local_id: bytes | None
    peer_id: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ipv6Down:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDown:
    """The session is over (always the last event).  ``reason`` is human-readable (for a
    peer termination, the text the peer sent); ``exit_status`` is pppd's for the same end."""

    outcome: Outcome
    reason: str
    exit_status: int


SessionEvent = (
    VerificationNeeded
    | PhaseChanged
    | LinkParameters
    | AccmChanged
    | Authenticated
    | AuthenticationFailed
    | LinkUp
    | NetworkDown
    | Ipv6Up
    | Ipv6Down
    | LinkDown
)
