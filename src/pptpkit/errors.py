"""The single error root of pptpkit.

Every failure a peer or a config file can cause is a :class:`PptpkitError`.  Protocol errors
carry the result/error code that the wire answer should contain, so an engine that catches one
can answer the peer without a lookup table of its own.
"""

from __future__ import annotations

import enum
import errno
from typing import Final


class PptpkitError(Exception):
    """Root of every error pptpkit raises on purpose."""


class ProtocolError(PptpkitError):
    """Malformed or unexpected input from a peer.

    ``code`` is the wire code to answer with where the protocol has one (for example a
    Stop-Control-Connection reason or a PPTP General Error Code); ``None`` where the answer is
    simply to count and drop.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DecodeError(ProtocolError):
    """Bytes that do not parse: truncated, overlong, wrong magic, bad length or checksum."""


class ConfigError(PptpkitError):
    """A bad configuration value; ``path`` and ``line`` point at it when it came from a file."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        if path is not None and line is not None:
            message = f"{path}:{line}: {message}"
        elif path is not None:
            message = f"{path}: {message}"
        super().__init__(message)


class AuthenticationError(PptpkitError):
    """Authentication failed (wrong password, peer could not prove the password ...)."""


class StateError(PptpkitError):
    """An API call that the engine's current state does not allow (a programming error of the
    caller, never caused by a peer)."""


class ExitStatus(enum.IntEnum):
    """The exit statuses of every ``pptpkit`` command, one table for all of them.

    pppd's numbers (pppd.h ``EXIT_*``) wherever pppd has the same situation, because scripts
    written for pppd and pptp-linux test them and ``pptpkit ppp`` stands in for pppd; 30 and up
    for what only a PPTP client can run into, 40 and up for ``pptpkit ctl``.  A command uses
    the subset that can happen to it (docs/cli.md lists which); the same failure has the same
    number in every command.
    """

    OK = 0
    FATAL = 1  # a local run-time error: cannot listen, TUN, netlink, resolv.conf ...
    USAGE = 2  # bad command line, config file, options file or password source (pppd: option error)
    NOT_PERMITTED = 3  # raw GRE socket, TUN or routes refused: needs root (pppd: not root)
    USER_REQUEST = 5  # ended by a signal; only ``pptpkit ppp``, like pppd (the others exit 0)
    CONNECT_FAILED = 8  # the server answered but refused the control connection or the call
    NEGOTIATION_FAILED = 10  # PPP negotiation failed, MPPE refused included
    PEER_AUTH_FAILED = 11  # the peer failed to authenticate to us
    IDLE_TIMEOUT = 12
    PEER_DEAD = 15  # the peer stopped answering LCP echo requests
    HANGUP = 16  # the call or the control connection was ended by the other side
    LOOPBACK = 17
    AUTH_FAILED = 19  # we failed to authenticate to the peer
    CONTROL_UNREACHABLE = 30  # the control connection could not be opened (TCP)
    GRE_BLOCKED = 31  # TCP 1723 works, no GRE packet came back
    ROUTE_LOOP = 32  # a route through the tunnel would carry the tunnel itself
    # 40 and up: ``pptpkit ctl``.
    CTL_UNREACHABLE = 40  # no server answers on the control socket
    NO_SUCH_SESSION = 41  # the session named (id, user, address) does not exist


#: The one line every command prints for :attr:`ExitStatus.NOT_PERMITTED`, followed by ": " and
#: what was refused.  One wording, so a script or a user sees the same failure the same way.
NOT_PERMITTED_MESSAGE: Final = "not permitted: needs root (CAP_NET_ADMIN and CAP_NET_RAW)"


def is_not_permitted(exc: BaseException) -> bool:
    """Is ``exc``, or the error it was raised from, the kernel refusing us a privileged
    operation (EPERM/EACCES)?  Only the explicit ``raise ... from`` chain counts: an EPERM
    that was merely being handled when something else failed is not the reason."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.EPERM, errno.EACCES):
            return True
        seen = seen.__cause__
    return False


#: What a failed connect means, in words a user can act on (not Python's "[Errno 111] ...").
_CONNECT_ERRORS: Final[dict[int, str]] = {
    errno.ECONNREFUSED: "connection refused: nothing listens there (is the server running, on this port?)",
    errno.ETIMEDOUT: "no answer (a firewall dropping the packets?)",
    errno.EHOSTUNREACH: "host unreachable (no route to it, or the host is down)",
    errno.ENETUNREACH: "network unreachable (no route to it)",
    errno.ECONNRESET: "the connection was reset by the other end",
    errno.EADDRNOTAVAIL: "the local address is not ours (check --local-address)",
    errno.EPIPE: "the other end closed the connection",
}


def os_error_text(exc: OSError) -> str:
    """``exc`` as one short phrase: our words for the usual connect failures, else the
    system's message without Python's ``[Errno N]`` decoration."""
    if exc.errno is not None and exc.errno in _CONNECT_ERRORS:
        return _CONNECT_ERRORS[exc.errno]
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".").lower()
