"""The one timer an adapter keeps for its sans-IO engine.

Every adapter (control connection, GRE channel, PPP link) re-arms a single ``loop.call_at`` at
the engine's next deadline after each operation; this keeps that bookkeeping in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """A ``loop.call_at`` handle kept at or before one absolute time.

    ``arm(at)`` is called after every engine operation, often once per packet, so it must be
    nearly free when the deadline only moved *later* or went away: the GRE ack delay is set by
    every received packet and cleared by every sent one.  Cancelling and re-creating the loop
    handle each time would cost a heap operation per packet, so an earlier handle is kept; when
    it fires and the wanted deadline is later, it is re-armed there without calling back (and
    simply dropped when nothing is wanted any more).  Moving the deadline *earlier* replaces the
    handle at once.  :meth:`cancel` really cancels.

    When the handle fires at the wanted time, ``callback(now)`` gets ``max(loop.time(), at)``:
    asyncio may run a ``call_at`` callback up to one clock resolution early, and reporting the
    deadline itself avoids a busy loop of "not yet" calls.
    """

    __slots__ = ("_armed", "_callback", "_handle", "_loop", "_want")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[float], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        # _want: the deadline the engine asked for; _armed: the time of the loop handle (equal
        # to _want, or earlier after the deadline moved later).
        self._want: float | None = None
        self._armed: float | None = None

    @property
    def at(self) -> float | None:
        """The deadline asked for by the last :meth:`arm` (None: none)."""
        return self._want

    def arm(self, at: float | None) -> None:
        self._want = at
        armed = self._armed
        if at == armed or (armed is not None and (at is None or at > armed)):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed = at
        self._handle = None if at is None else self._loop.call_at(at, self._fire, at)

    def cancel(self) -> None:
        self._want = self._armed = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, at: float) -> None:
        self._handle = None
        self._armed = None
        want = self._want
        if want != at:
            # Armed early for a deadline that has since moved later (or gone).
            if want is not None:
                self._armed = want
                self._handle = self._loop.call_at(want, self._fire, want)
            return
        self._want = None
        self._callback(max(self._loop.time(), at))
