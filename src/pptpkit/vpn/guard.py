"""Slowing password guessers down: failed logins counted per source address and per user.

MS-CHAPv2 answers a wrong password at once, so without a limit one client can try passwords as
fast as calls can be set up.  :class:`AuthGuard` watches the session notices
(:mod:`pptpkit.vpn.notices`): after ``limit`` failures within ``window`` seconds from one
address, calls from that address are refused (Busy) for ``lockout`` seconds, twice as long each
time it happens again (up to ``max_lockout``).  Failures are counted per user name too, and with
``lock_users`` a user that reaches the limit is locked out of authentication wherever the
attempts come from (its secret is not found while locked, so even the right password fails and
tells the guesser nothing).  That is off by default: anyone who knows a user name could then
lock its owner out, which is the worse trade for most operators.  A success resets the user's
and the address's counts.

With ``--workers`` every worker tells the supervisor its failures and successes
(``forward``); the supervisor counts them in a guard of its own, so the limit holds for the
whole server however the kernel spread the guesser's connections, and sends every lock it
starts to every worker (:meth:`AuthGuard.impose`).

Both tables are capped (``max_tracked``): a guesser rotating addresses or names cannot make
them grow without bound; the oldest entries go first.  Every refusal is counted; the log gets
one line when a lock starts and one summary per interval while refusals go on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pptpkit.auth.secrets import SecretMatch, SecretsProvider
from pptpkit.errors import ConfigError
from pptpkit.io.throttle import LogThrottle, left_out_text
from pptpkit.vpn.notices import SessionAuthenticated, SessionAuthFailed, SessionNotice

if TYPE_CHECKING:
    from collections.abc import Callable

    from pptpkit.pptp.server import ServerCall
    from pptpkit.vpn.server import BuiltinSessions

__all__ = ["AuthGuard", "GuardConfig", "GuardedSecrets"]

log = logging.getLogger(__name__)

_MAX_TRACKED: Final = 65536


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardConfig:
    """``limit`` failures within ``window`` seconds lock the address (or user) for ``lockout``
    seconds, doubling on each repeat up to ``max_lockout``.  ``limit`` 0 turns the guard off."""

    limit: int = 5
    window: float = 60.0
    lockout: float = 30.0
    max_lockout: float = 3600.0
    max_tracked: int = _MAX_TRACKED
    lock_users: bool = False

    def __post_init__(self) -> None:
        if self.limit < 0 or not self.window > 0 or not 0 < self.lockout <= self.max_lockout:
            raise ConfigError("auth guard: need limit >= 0, window > 0 and 0 < lockout <= max_lockout")
        if self.max_tracked < 1:
            raise ConfigError("auth guard: max_tracked must be at least 1")


@dataclass(slots=True)
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0


class _Table:
    """Failure records by key, oldest evicted first beyond the cap."""

    def __init__(self, config: GuardConfig, what: str) -> None:
        self.config = config
        self.what = what
        self.records: OrderedDict[str, _Record] = OrderedDict()
        self.refused = 0
        self.locks = 0

    def locked(self, key: str, now: float) -> float:
        """Seconds left of ``key``'s lock (0: not locked)."""
        record = self.records.get(key)
        return max(0.0, record.locked_until - now) if record is not None else 0.0

    def fail(self, key: str, now: float) -> float:
        """Count a failure; the length of the lock it starts (0: none)."""
        cfg = self.config
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = _Record()
            if len(self.records) > cfg.max_tracked:
                self.records.popitem(last=False)
        else:
            self.records.move_to_end(key)
        failures = record.failures
        failures.append(now)
        while failures and failures[0] <= now - cfg.window:
            failures.popleft()
        if len(failures) < cfg.limit or record.locked_until > now:
            return 0.0
        length = min(cfg.max_lockout, cfg.lockout * float(2 ** min(record.lockouts, 32)))
        record.lockouts += 1
        record.locked_until = now + length
        failures.clear()
        self.locks += 1
        return length

    def succeed(self, key: str) -> None:
        record = self.records.get(key)
        if record is not None:
            record.failures.clear()

    def impose(self, key: str, until: float) -> None:
        """A lock decided elsewhere (the supervisor's guard): ``key`` is locked until ``until``."""
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = _Record()
            if len(self.records) > self.config.max_tracked:
                self.records.popitem(last=False)
        record.locked_until = max(record.locked_until, until)


class AuthGuard:
    """Attach with :meth:`attach` to a :class:`~pptpkit.vpn.server.BuiltinSessions`; wrap its
    secrets with :class:`GuardedSecrets`.  ``clock`` gives the time (the server's loop time)."""

    def __init__(self, config: GuardConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.sources = _Table(config, "address")
        self.users = _Table(config, "user")
        self._refusal_log = LogThrottle()
        #: A worker's: every outcome told on, (authenticated?, source, user), to the supervisor.
        self.forward: Callable[[bool, str, str], None] | None = None

    def admit(self, call: ServerCall) -> str | None:
        """An admission check: a reason to refuse a call from a locked address."""
        if not self.config.limit:
            return None
        left = self.sources.locked(call.peer_address, self._clock())
        if not left:
            return None
        self.sources.refused += 1
        left_out = self._refusal_log(self._clock())
        if left_out is not None:
            log.warning("refusing calls from %s for another %.0f s: too many failed logins%s",
                        call.peer_address, left, left_out_text(left_out))
        return f"{call.peer_address} is locked out for {left:.0f} s after failed logins"

    def user_locked(self, user: str) -> bool:
        cfg = self.config
        return cfg.lock_users and bool(cfg.limit) and self.users.locked(user, self._clock()) > 0

    def observe(self, notice: SessionNotice) -> None:
        if not self.config.limit:
            return
        if isinstance(notice, SessionAuthFailed):
            if self.forward is not None:
                self.forward(False, notice.session.source, notice.user)
            self.failed(notice.session.source, notice.user)
        elif isinstance(notice, SessionAuthenticated):
            if self.forward is not None:
                self.forward(True, notice.session.source, notice.user)
            self.succeeded(notice.session.source, notice.user)

    def failed(self, source: str, user: str) -> list[tuple[str, str, float]]:
        """Count a failed login; the locks it starts: (``address``/``user``, key, seconds)."""
        now = self._clock()
        started = []
        for table, key in ((self.sources, source), (self.users, user)):
            length = table.fail(key, now)
            if length and (table is self.sources or self.config.lock_users):
                log.warning("%s %r locked out for %.0f s: %d failed logins within %g s", table.what, key,
                            length, self.config.limit, self.config.window)
                started.append((table.what, key, length))
        return started

    def succeeded(self, source: str, user: str) -> None:
        self.sources.succeed(source)
        self.users.succeed(user)

    def impose(self, what: str, key: str, seconds: float) -> None:
        """Lock ``key`` of table ``what`` (``address``/``user``) for ``seconds`` from now."""
        table = self.sources if what == "address" else self.users
        table.impose(key, self._clock() + seconds)

    def attach(self, sessions: BuiltinSessions) -> None:
        sessions.admission.append(self.admit)
        sessions.observers.append(self.observe)


class GuardedSecrets:
    """A secrets provider that finds nothing for a locked-out user (see :class:`AuthGuard`)."""

    def __init__(self, inner: SecretsProvider, guard: AuthGuard) -> None:
        self.inner = inner
        self.guard = guard

    def lookup(self, client: str, server: str | None) -> SecretMatch | None:
        if self.guard.user_locked(client):
            self.guard.users.refused += 1
            return None
        return self.inner.lookup(client, server)

    def reload(self) -> None:
        reload = getattr(self.inner, "reload", None)
        if reload is not None:
            reload()
