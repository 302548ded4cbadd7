"""What the built-in server tells the rest of the program about its sessions.

The session table (:mod:`pptpkit.vpn.server`) owns the sessions; audit logs, hook scripts,
metrics, accounting and the control socket only watch them.  They subscribe to these notices
instead of reaching into the table, so each of them is a module of its own that can be tested
with a list of notices, and none of them can slow the packet path (notices are sent on session
events only, never per packet).

:class:`TerminateCause` is RADIUS's Acct-Terminate-Cause (RFC 2866 section 5.10), because that
is what accounting has to report and what operators read in their AAA: every session end maps
to exactly one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pptpkit.auth.methods import AuthMethod
from pptpkit.ppp.session_config import LinkDown, LinkUp, Outcome

if TYPE_CHECKING:
    from pptpkit.vpn.server import Session

__all__ = [
    "SessionAuthFailed",
    "SessionAuthenticated",
    "SessionDown",
    "SessionIpv6Down",
    "SessionIpv6Up",
    "SessionNotice",
    "SessionStarted",
    "SessionUp",
    "TerminateCause",
    "terminate_cause",
]


class TerminateCause(enum.IntEnum):
    """RFC 2866 section 5.10 Acct-Terminate-Cause values (the ones a PPTP server can have)."""

    USER_REQUEST = 1
    LOST_CARRIER = 2
    LOST_SERVICE = 3
    IDLE_TIMEOUT = 4
    SESSION_TIMEOUT = 5
    ADMIN_RESET = 6
    ADMIN_REBOOT = 7
    PORT_ERROR = 8
    NAS_ERROR = 9
    NAS_REQUEST = 10
    NAS_REBOOT = 11
    SERVICE_UNAVAILABLE = 15
    USER_ERROR = 17

    @property
    def text(self) -> str:
        """The RADIUS dictionary's spelling: ``User-Request``, ``Admin-Reset``, ..."""
        return "-".join(word.capitalize() for word in self.name.split("_")).replace("Nas", "NAS")


_BY_OUTCOME: dict[Outcome, TerminateCause] = {
    Outcome.PEER_TERMINATED: TerminateCause.USER_REQUEST,
    Outcome.LOWER_LAYER_DOWN: TerminateCause.LOST_CARRIER,
    Outcome.PEER_DEAD: TerminateCause.LOST_CARRIER,
    Outcome.IDLE_TIMEOUT: TerminateCause.IDLE_TIMEOUT,
    Outcome.PEER_AUTH_FAILED: TerminateCause.USER_ERROR,
    Outcome.NEGOTIATION_FAILED: TerminateCause.SERVICE_UNAVAILABLE,
    Outcome.MPPE_REFUSED: TerminateCause.SERVICE_UNAVAILABLE,
    Outcome.LOOPBACK: TerminateCause.PORT_ERROR,
    Outcome.AUTH_TOPEER_FAILED: TerminateCause.SERVICE_UNAVAILABLE,
    Outcome.LOCAL_CLOSE: TerminateCause.NAS_REQUEST,
}


def terminate_cause(down: LinkDown, decided: TerminateCause | None = None) -> TerminateCause:
    """The cause of a session end: ``decided`` when the server ended it for a reason of its own
    (a kill, a shutdown, a timeout), else what the PPP outcome says."""
    if decided is not None:
        return decided
    return _BY_OUTCOME.get(down.outcome, TerminateCause.NAS_ERROR)


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A call was admitted and its PPP session created (nothing negotiated yet)."""

    session: Session


@dataclass(frozen=True, slots=True)
class SessionAuthenticated:
    session: Session
    user: str
    method: AuthMethod


@dataclass(frozen=True, slots=True)
class SessionAuthFailed:
    """``user``: the name the peer tried (it may not exist)."""

    session: Session
    user: str
    method: AuthMethod
    reason: str


@dataclass(frozen=True, slots=True)
class SessionUp:
    """IPCP is up and the data plane configured (``up.peer_address`` is the address given)."""

    session: Session
    up: LinkUp


@dataclass(frozen=True, slots=True)
class SessionDown:
    """The session is over and released.  ``duration``: seconds since it came up (0 if it
    never did); the counters are the IP packets and octets each way."""

    session: Session
    cause: TerminateCause
    reason: str
    duration: float
    octets_in: int
    octets_out: int
    packets_in: int
    packets_out: int


@dataclass(frozen=True, slots=True)
class SessionIpv6Up:
    """IPV6CP is up (it may be before or after :class:`SessionUp`); the interface
    identifiers give the link-local addresses (``fe80::/64``)."""

    session: Session
    local_id: bytes
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class SessionIpv6Down:
    """IPV6CP went down while the session goes on (a session's end is :class:`SessionDown`)."""

    session: Session


SessionNotice = (SessionStarted | SessionAuthenticated | SessionAuthFailed | SessionUp | SessionDown
                 | SessionIpv6Up | SessionIpv6Down)
