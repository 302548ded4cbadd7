"""Helpers for the PPP engine tests: a virtual clock and a lossy wire between two engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Engine(Protocol):
    def receive_packet(self, data: bytes, now: float) -> None: ...
    def packets_to_send(self) -> list[bytes]: ...
    def next_event(self) -> object | None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


Filter = Callable[[str, bytes], bool]


class Pair:
    """Two engines joined by a wire; ``keep(direction, packet)`` can drop packets ("ab"/"ba")."""

    def __init__(self, a: Any, b: Any, *, keep: Filter | None = None) -> None:
        self.a = a
        self.b = b
        self.now = 0.0
        self.keep = keep
        self.sent: dict[str, list[bytes]] = {"ab": [], "ba": []}
        self.events: dict[str, list[object]] = {"a": [], "b": []}

    def pump(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            moved = False
            for direction, src, dst in (("ab", self.a, self.b), ("ba", self.b, self.a)):
                for pkt in src.packets_to_send():
                    moved = True
                    self.sent[direction].append(pkt)
                    if self.keep is None or self.keep(direction, pkt):
                        dst.receive_packet(pkt, self.now)
            self._drain()
            if not moved:
                return
        raise AssertionError("engines never went quiet")

    def _drain(self) -> None:
        for name, eng in (("a", self.a), ("b", self.b)):
            while (ev := eng.next_event()) is not None:
                self.events[name].append(ev)

    def run(self, until: float) -> None:
        """Pump and fire timers in time order until ``until`` (virtual seconds)."""
        self.pump()
        while True:
            timers = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            for eng in (self.a, self.b):
                t = eng.get_timer()
                if t is not None and t <= self.now:
                    eng.handle_timer(self.now)
            self.pump()
        self.now = max(self.now, until)

    def of_type(self, side: str, cls: type) -> list[Any]:
        return [e for e in self.events[side] if isinstance(e, cls)]
