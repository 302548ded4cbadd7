"""AuthGuard: failed logins counted per address and per user, growing lockouts, capped tables."""

from __future__ import annotations

from typing import Any, cast

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.vpn.guard import AuthGuard, GuardConfig, GuardedSecrets
from pptpkit.vpn.notices import SessionAuthenticated, SessionAuthFailed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fake:
    def __init__(self, source: str) -> None:
        self.source = source
        self.peer_address = source


def failed(source: str, user: str = "bob") -> SessionAuthFailed:
    return SessionAuthFailed(cast(Any, Fake(source)), user, AuthMethod.MSCHAP_V2, "wrong")


def test_an_address_is_locked_after_the_limit_and_locks_grow() -> None:
    clock = Clock()
    guard = AuthGuard(GuardConfig(limit=3, window=60, lockout=30), clock)
    call = cast(Any, Fake("192.0.2.9"))
    for _ in range(2):
        guard.observe(failed("192.0.2.9"))
    assert guard.admit(call) is None
    guard.observe(failed("192.0.2.9"))
    refusal = guard.admit(call)
    assert refusal is not None and "locked out for 30 s" in refusal
    assert guard.admit(cast(Any, Fake("192.0.2.10"))) is None  # another address is not touched
    clock.now += 31
    assert guard.admit(call) is None
    for _ in range(3):
        guard.observe(failed("192.0.2.9"))
    assert guard.admit(call) is not None and guard.sources.locked("192.0.2.9", clock.now) == 60  # doubled
    assert guard.sources.refused == 2


def test_failures_outside_the_window_do_not_count_and_success_resets() -> None:
    clock = Clock()
    guard = AuthGuard(GuardConfig(limit=3, window=10, lockout=30), clock)
    call = cast(Any, Fake("192.0.2.9"))
    for _ in range(10):
        guard.observe(failed("192.0.2.9"))
        clock.now += 6  # never three within ten seconds
    assert guard.admit(call) is None
    clock.now += 20
    guard.observe(failed("192.0.2.9"))
    guard.observe(failed("192.0.2.9"))
    guard.observe(SessionAuthenticated(cast(Any, Fake("192.0.2.9")), "bob", AuthMethod.MSCHAP_V2))
    guard.observe(failed("192.0.2.9"))
    assert guard.admit(call) is None


def test_users_are_locked_only_when_asked() -> None:
    clock = Clock()
    secrets = StaticSecrets({("bob", "pptpd"): "pw"})
    plain = AuthGuard(GuardConfig(limit=2), clock)
    for i in range(5):
        plain.observe(failed(f"192.0.2.{i + 1}"))
    assert GuardedSecrets(secrets, plain).lookup("bob", "pptpd") is not None
    strict = AuthGuard(GuardConfig(limit=2, lock_users=True), clock)
    for i in range(2):
        strict.observe(failed(f"192.0.2.{i + 1}"))
    assert GuardedSecrets(secrets, strict).lookup("bob", "pptpd") is None
    assert strict.users.refused == 1


def test_tables_are_capped() -> None:
    guard = AuthGuard(GuardConfig(limit=5, max_tracked=100), Clock())
    for i in range(10_000):
        guard.observe(failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"user{i}"))
    assert len(guard.sources.records) == 100 and len(guard.users.records) == 100


def test_limit_zero_turns_it_off() -> None:
    guard = AuthGuard(GuardConfig(limit=0), Clock())
    for _ in range(100):
        guard.observe(failed("192.0.2.9"))
    assert guard.admit(cast(Any, Fake("192.0.2.9"))) is None
