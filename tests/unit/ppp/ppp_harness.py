"""Two PPP protocol engines (FSM, LCP, IPCP...) on the shared :mod:`enginepair`, lossy wire."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from enginepair import EnginePair, packet_end

Filter = Callable[[str, bytes], bool]


class Pair(EnginePair):
    """Engines ``a`` and ``b``; ``keep(direction, packet)`` can drop packets ("ab"/"ba").

    ``sent[direction]`` is every packet sent, dropped ones included; ``events["a"/"b"]`` what
    each engine reported."""

    def __init__(self, a: Any, b: Any, *, keep: Filter | None = None) -> None:
        super().__init__(packet_end(a), packet_end(b), rounds=200)
        self.a = a
        self.b = b
        self.keep = keep

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        return (unit,) if self.keep is None or self.keep(direction, unit) else ()

    @property
    def sent(self) -> dict[str, list[bytes]]:
        return {d: w.sent for d, w in self.wires.items()}
