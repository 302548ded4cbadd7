"""Which authentication methods we ask for and which we agree to, as pppd's options spell it.

pppd keeps the two directions apart and this policy does too:

* ``require-X`` is about the *authenticator* side: we make the peer authenticate with X (and
  ``auth`` makes it authenticate with any method we know).  Several require options offer several
  methods, in :attr:`AuthPolicy.server_order`.
* ``refuse-X`` is about the *peer* side: we will not authenticate ourselves with X when the other
  end asks for it.

LCP consumes the answers: :meth:`AuthPolicy.offered_methods` (what to put in our
Authentication-Protocol option, first one first, the rest as fallbacks when the peer Naks),
:meth:`AuthPolicy.accepts_as_peer` (whether to Ack the peer's request) and
:meth:`AuthPolicy.peer_preference` (what to suggest in a Nak).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pptpkit.auth.methods import DEFAULT_SERVER_ORDER, AuthMethod
from pptpkit.errors import ConfigError

__all__ = ["PEER_PREFERENCE", "AuthPolicy"]

#: The order in which we, as the authenticated peer, suggest methods in an LCP Nak: the same as
#: pppd (EAP first, then the strongest CHAP digest, PAP last).
PEER_PREFERENCE: Final = (
    AuthMethod.EAP,
    AuthMethod.MSCHAP_V2,
    AuthMethod.MSCHAP_V1,
    AuthMethod.CHAP_MD5,
    AuthMethod.PAP,
)

_BY_PPPD_NAME: Final = {m.pppd_name: m for m in AuthMethod}


@dataclass(frozen=True, kw_only=True, slots=True)
class AuthPolicy:
    """require/refuse per method like pppd, plus the authenticator's preference order.

    ``auth_required`` is pppd's ``auth``: the peer must authenticate even if no ``require-X`` is
    given (with any method in ``server_order``).  Any ``require`` implies it.
    """

    require: frozenset[AuthMethod] = frozenset()
    refuse: frozenset[AuthMethod] = frozenset()
    auth_required: bool = False
    server_order: tuple[AuthMethod, ...] = DEFAULT_SERVER_ORDER

    def __post_init__(self) -> None:
        for name in ("require", "refuse"):
            value = getattr(self, name)
            if not isinstance(value, frozenset) or not all(isinstance(m, AuthMethod) for m in value):
                raise ConfigError(f"AuthPolicy.{name} must be a frozenset of AuthMethod")
        if len(set(self.server_order)) != len(self.server_order):
            raise ConfigError("AuthPolicy.server_order lists a method twice")
        missing = [m.pppd_name for m in self.require if m not in self.server_order]
        if missing:
            raise ConfigError(f"required methods missing from server_order: {', '.join(sorted(missing))}")

    @property
    def authenticates_peer(self) -> bool:
        """Do we, as authenticator, make the peer authenticate at all?"""
        return self.auth_required or bool(self.require)

    def offered_methods(self) -> tuple[AuthMethod, ...]:
        """Methods we ask the peer to use, most preferred first; empty when we do not ask."""
        if self.require:
            return tuple(m for m in self.server_order if m in self.require)
        if self.auth_required:
            return self.server_order
        return ()

    def accepts_as_authenticator(self, method: AuthMethod) -> bool:
        """May the peer authenticate with ``method`` (for example one it suggested in a Nak)?"""
        return method in self.offered_methods()

    def next_offer(self, rejected: AuthMethod, suggestion: AuthMethod | None = None) -> AuthMethod | None:
        """What to ask for after the peer Nak'ed ``rejected`` (suggesting ``suggestion``).

        The peer's suggestion if we offer it, else our next method after ``rejected``; None when
        nothing is left (LCP must then fail: the peer will not authenticate the way we need).
        """
        offered = self.offered_methods()
        if suggestion is not None and suggestion != rejected and suggestion in offered:
            return suggestion
        if rejected in offered:
            later = offered[offered.index(rejected) + 1 :]
            return later[0] if later else None
        return offered[0] if offered else None

    def accepts_as_peer(self, method: AuthMethod) -> bool:
        """Do we agree to authenticate ourselves with ``method``?"""
        return method not in self.refuse

    def peer_preference(self) -> tuple[AuthMethod, ...]:
        """Methods we agree to as the authenticated peer, in the order we suggest them."""
        return tuple(m for m in PEER_PREFERENCE if m not in self.refuse)

    @classmethod
    def from_pppd_options(
        cls, options: Iterable[str], *, server_order: tuple[AuthMethod, ...] = DEFAULT_SERVER_ORDER
    ) -> AuthPolicy:
        """Build a policy from pppd option words (``auth``, ``noauth``, ``require-X``,
        ``refuse-X``); other words are not authentication options and are skipped."""
        require: set[AuthMethod] = set()
        refuse: set[AuthMethod] = set()
        auth = False
        for word in options:
            if word == "auth":
                auth = True
            elif word == "noauth":
                auth = False
                require.clear()
            elif word.startswith("require-") and word[8:] in _BY_PPPD_NAME:
                require.add(_BY_PPPD_NAME[word[8:]])
            elif word.startswith("refuse-") and word[7:] in _BY_PPPD_NAME:
                refuse.add(_BY_PPPD_NAME[word[7:]])
        return cls(
            require=frozenset(require),
            refuse=frozenset(refuse),
            auth_required=auth,
            server_order=server_order,
        )
