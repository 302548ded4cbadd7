"""Our call IDs (RFC 2637 section 2.7 Call ID, section 4.1 Key): who hands them out, and how.

A server shares one :class:`CallIdAllocator` between all its connections, because the GRE
demultiplexer keys on (peer address, *our* call ID) and clients behind one NAT arrive from one
address, so our IDs must be unique per process rather than per tunnel.

The IDs are drawn at random from the free ones, never in order: GRE is not authenticated, and a
peer that could predict the IDs of other calls (opening one call reveals its neighbours' when
they are sequential) would know where to inject packets.  A released ID waits behind the
:data:`REUSE_DELAY` most recently released before it can come back, so late GRE packets of an
old call do not land in a new one.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Final

from pptpkit.errors import ConfigError, PptpkitError

__all__ = ["REUSE_DELAY", "CallIdAllocator", "CallIdExhausted"]

_U16_MAX: Final = 0xFFFF
#: Released IDs that are kept out of use, oldest first (at most this many, and never so many
#: that the pool of free IDs would run dry).
REUSE_DELAY: Final = 4096
# Random draws before falling back to a scan: with at most half the range in use a draw finds
# a free ID with probability >= 1/2, so falling back is practically never needed.
_DRAWS: Final = 64


class CallIdExhausted(PptpkitError):
    """No call ID is free (the allocator's ``max_in_use`` cap is reached)."""


class CallIdAllocator:
    """Hands out our call IDs; share one instance between every connection of a process.

    IDs are drawn at random (``rng``, default the system's CSPRNG) among those neither in use
    nor recently released.  At most ``max_in_use`` IDs are held at once (default: half the
    range, at least one).  Single-threaded use only (one event loop).
    """

    __slots__ = ("_cooling", "_cooling_set", "_high", "_in_use", "_low", "_rng", "max_in_use")

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        max_in_use: int | None = None,
        low: int = 1,
        high: int = _U16_MAX,
    ) -> None:
        if not 0 <= low <= high <= _U16_MAX:
            raise ConfigError(f"call ID range {low}..{high} is not within 0..65535")
        span = high - low + 1
        if max_in_use is None:
            max_in_use = max(1, span // 2)
        if not 1 <= max_in_use <= span:
            raise ConfigError(f"max_in_use {max_in_use} must be between 1 and the size of the ID range")
        self._low = low
        self._high = high
        self.max_in_use = max_in_use
        self._rng = rng if rng is not None else random.SystemRandom()
        self._in_use: set[int] = set()
        self._cooling: deque[int] = deque()
        self._cooling_set: set[int] = set()

    def allocate(self) -> int:
        if len(self._in_use) >= self.max_in_use:
            raise CallIdExhausted(f"all {self.max_in_use} call IDs are in use")
        span = self._high - self._low + 1
        # Keep enough IDs free that a random draw stays cheap: cooling IDs come back early when
        # the range is small or busy.
        while self._cooling and len(self._in_use) + len(self._cooling) >= span:
            self._cooling_set.discard(self._cooling.popleft())
        taken = self._in_use
        cooling = self._cooling_set
        randint = self._rng.randint
        for _ in range(_DRAWS):
            call_id = randint(self._low, self._high)
            if call_id not in taken and call_id not in cooling:
                taken.add(call_id)
                return call_id
        free = [i for i in range(self._low, self._high + 1) if i not in taken and i not in cooling]
        if not free:  # everything free is cooling: take the one released longest ago
            call_id = self._cooling.popleft()
            cooling.discard(call_id)
        else:
            call_id = free[self._rng.randrange(len(free))]
        taken.add(call_id)
        return call_id

    def release(self, call_id: int) -> None:
        if call_id not in self._in_use:
            return
        self._in_use.discard(call_id)
        self._cooling.append(call_id)
        self._cooling_set.add(call_id)
        if len(self._cooling) > REUSE_DELAY:
            self._cooling_set.discard(self._cooling.popleft())

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._in_use

    def __len__(self) -> int:
        return len(self._in_use)
