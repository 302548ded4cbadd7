"""The single error root of pptpkit.

Every failure a peer or a config file can cause is a :class:`PptpkitError`.  Protocol errors
carry the result/error code that the wire answer should contain, so an engine that catches one
can answer the peer without a lookup table of its own.
"""

from __future__ import annotations


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
