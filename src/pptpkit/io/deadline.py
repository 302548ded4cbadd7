"""The one timer an adapter keeps for its sans-IO engine.

Every adapter (control connection, GRE channel, PPP link) re-arms a single ``loop.call_at`` at
the engine's next deadline after each operation; this keeps that bookkeeping in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """A ``loop.call_at`` handle kept at one absolute time, re-armed only when it changes.

    ``arm(at)`` is called after every engine operation, so the common case (the deadline did not
    move) is a single comparison. When the handle fires, ``callback(now)`` gets
    ``max(loop.time(), at)``: asyncio may run a ``call_at`` callback up to one clock resolution
    early, and reporting the deadline itself avoids a busy loop of "not yet" calls.
    """

    __slots__ = ("_at", "_callback", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def at(self) -> float | None:
        return self._at

    def arm(self, at: float | None) -> None:
        if at == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if at is not None:
            self._handle = self._loop.call_at(at, self._fire, at)

    def cancel(self) -> None:
        self.arm(None)

    def _fire(self, at: float) -> None:
        self._handle = None
        self._at = None
        self._callback(max(self._loop.time(), at))
