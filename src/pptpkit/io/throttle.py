"""One log line per interval for events a peer can repeat at will.

A peer decides how often a refusal, a malformed message or an unknown call happens, so logging
each one lets it fill the disk and spend our CPU on formatting (26 MiB of log in 8 s from one
connection was seen).  A :class:`LogThrottle` per kind of event lets the first line through,
then counts silently until ``interval`` has passed; the next line that is let through says how
many were left out, so the log still shows the rate.  It takes ``now`` from the caller, like
the engines, and never reads a clock itself.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_LOG_INTERVAL", "LogThrottle", "left_out_text"]

#: Seconds between two lines of one kind.
DEFAULT_LOG_INTERVAL: Final = 10.0


class LogThrottle:
    """``throttle(now)`` is None while quiet (the event is counted), else the number of events
    left out since the last line that was let through."""

    __slots__ = ("_next", "interval", "suppressed", "total")

    def __init__(self, interval: float = DEFAULT_LOG_INTERVAL) -> None:
        self.interval = interval
        self._next: float | None = None
        self.suppressed = 0
        self.total = 0

    def __call__(self, now: float) -> int | None:
        self.total += 1
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return None
        self._next = now + self.interval
        left_out, self.suppressed = self.suppressed, 0
        return left_out


def left_out_text(count: int) -> str:
    """`` (and N more like it)`` for a line that stands for several events, else ``""``."""
    return f" (and {count} more since the last such line)" if count else ""
