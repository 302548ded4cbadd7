"""Helpers for the auth engine tests: deterministic randomness and a two-engine virtual link."""

from __future__ import annotations

import random
from collections.abc import Callable

from pptpkit.auth.base import AuthEngine, AuthEvent
from pptpkit.auth.secrets import SecretMatch, StaticSecrets


class ScriptedRandom:
    """A ``random`` for configs: scripted values per size first, then a seeded PRNG."""

    def __init__(self, seed: int = 1, scripted: dict[int, list[bytes]] | None = None) -> None:
        self._rng = random.Random(seed)
        self._scripted = {k: list(v) for k, v in (scripted or {}).items()}

    def __call__(self, n: int) -> bytes:
        queue = self._scripted.get(n)
        if queue:
            return queue.pop(0)
        return self._rng.randbytes(n)


class MutableSecrets:
    """A provider whose table the test can change between exchanges."""

    def __init__(self, table: dict[tuple[str, str], str]) -> None:
        self.table = dict(table)

    def lookup(self, client: str, server: str | None) -> SecretMatch | None:
        return StaticSecrets(self.table).lookup(client, server)


Filter = Callable[[str, bytes], bytes | None]


class Link:
    """Two engines back to back on a virtual clock.

    ``filter(direction, packet)`` may drop (return None) or replace a packet in flight;
    ``direction`` is "a>p" (authenticator to peer) or "p>a".  Every packet that crossed is kept
    in ``log`` as (direction, bytes).
    """

    def __init__(self, authenticator: AuthEngine, peer: AuthEngine, now: float = 0.0) -> None:
        self.a = authenticator
        self.p = peer
        self.now = now
        self.filter: Filter | None = None
        self.log: list[tuple[str, bytes]] = []
        self.a_events: list[AuthEvent] = []
        self.p_events: list[AuthEvent] = []

    def start(self) -> None:
        self.a.start(self.now)
        self.p.start(self.now)
        self.pump()

    def _collect(self) -> None:
        while (e := self.a.next_event()) is not None:
            self.a_events.append(e)
        while (e := self.p.next_event()) is not None:
            self.p_events.append(e)

    def pump(self, max_rounds: int = 100) -> None:
        for _ in range(max_rounds):
            moved = False
            for src, dst, direction in ((self.a, self.p, "a>p"), (self.p, self.a, "p>a")):
                for pkt in src.packets_to_send():
                    moved = True
                    out = self.filter(direction, pkt) if self.filter else pkt
                    if out is None:
                        continue
                    self.log.append((direction, out))
                    dst.receive(out, self.now)
            self._collect()
            if not moved:
                return
        raise AssertionError("engines did not go quiet")

    def next_deadline(self) -> float | None:
        timers = [t for t in (self.a.get_timer(), self.p.get_timer()) if t is not None]
        return min(timers) if timers else None

    def run_until(self, end: float) -> None:
        """Fire timers in order up to ``end`` (inclusive), pumping after each."""
        while (t := self.next_deadline()) is not None and t <= end:
            self.now = max(self.now, t)
            self.a.handle_timer(self.now)
            self.p.handle_timer(self.now)
            self.pump()
        self.now = max(self.now, end)

    def sent(self, direction: str) -> list[bytes]:
        return [pkt for d, pkt in self.log if d == direction]
