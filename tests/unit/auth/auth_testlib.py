"""Helpers for the auth engine tests: deterministic randomness and the two engines' link."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from enginepair import EnginePair, packet_end
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


class Link(EnginePair):
    """An authenticator and a peer engine on the shared :mod:`enginepair`.

    ``filter(direction, packet)`` may drop (return None) or replace a packet in flight;
    ``direction`` is "a>p" (authenticator to peer) or "p>a".  Every packet that crossed is kept
    in ``log`` as (direction, bytes).
    """

    def __init__(self, authenticator: AuthEngine, peer: AuthEngine, now: float = 0.0) -> None:
        super().__init__(packet_end(authenticator, receive="receive"), packet_end(peer, receive="receive"),
                         names=("a", "p"), directions=("a>p", "p>a"), now=now, rounds=100)
        self.a = authenticator
        self.p = peer
        self.filter: Filter | None = None

    @property
    def a_events(self) -> list[AuthEvent]:
        return self.events["a"]

    @property
    def p_events(self) -> list[AuthEvent]:
        return self.events["p"]

    def start(self) -> None:
        self.a.start(self.now)
        self.p.start(self.now)
        self.pump()

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        out = self.filter(direction, unit) if self.filter else unit
        return () if out is None else (out,)

    def run_until(self, end: float) -> None:
        """Fire timers in order up to ``end`` (inclusive), pumping after each."""
        self.advance(end)

    def sent(self, direction: str) -> list[bytes]:
        return [pkt for d, pkt in self.log if d == direction]
