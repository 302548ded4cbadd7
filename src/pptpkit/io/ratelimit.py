"""A token bucket without I/O: the shaper of sessions that share one TUN.

With ``--tun-mode shared`` every session's packets cross one interface, so tc cannot tell the
sessions apart; the limit is kept in our own per-packet path instead
(:meth:`pptpkit.io.link.PppLink.set_policers`).  It polices: a packet over the rate is dropped
and counted, never queued, because a queue would have to be a buffer per session and a timer
to drain it, on the one path where every instruction counts.  TCP reads the drops as
congestion and settles at the rate; the burst (:func:`default_burst`: 300 ms at the rate, at
least a few full-size packets) keeps that from costing it throughput.

Like the engines it takes ``now`` from the caller and never reads a clock, so it is tested on
a virtual clock.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIN_BURST", "TokenBucket", "default_burst"]

#: The smallest burst: eight packets of 1500 octets.  A bucket smaller than a packet would drop
#: every packet of that size, and one of a few packets drops the back-to-back segments TCP
#: sends after every ACK.
MIN_BURST: Final = 8 * 1500


def default_burst(kbit: int) -> int:
    """Octets a bucket of ``kbit`` kbit/s may hold: 300 ms at the rate, at least :data:`MIN_BURST`.

    Measured through the tunnel (TCP, 4 and 2 Mbit/s): 100 ms gave TCP half the rate, 200 ms
    91 %, 300 ms 96 % - which is the rate less the TCP/IP headers the bucket counts and iperf3
    does not.  A policer needs about a round trip of the flow at the rate, and ours includes
    both ends' queues.
    """
    return max(kbit * 1000 // 8 * 3 // 10, MIN_BURST)


class TokenBucket:
    """``allow(size, now)``: True when ``size`` octets fit the rate (they are taken from the
    bucket), False when they are over it (counted in ``dropped``/``dropped_octets``).

    ``rate``: octets per second; ``burst``: what the bucket holds (it starts full).  A clock
    going backwards (never with the loop's monotonic clock) adds nothing.
    """

    __slots__ = ("_last", "_tokens", "burst", "dropped", "dropped_octets", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a rate and a burst above 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now
        self.dropped = 0
        self.dropped_octets = 0

    @classmethod
    def kbit(cls, kbit: int, now: float, burst: int | None = None) -> TokenBucket:
        """A bucket of ``kbit`` kbit/s (1000 bit/s) with :func:`default_burst` unless ``burst``."""
        return cls(kbit * 1000 / 8, default_burst(kbit) if burst is None else burst, now)

    def allow(self, size: int, now: float) -> bool:
        elapsed = now - self._last
        tokens = self._tokens
        if elapsed > 0:
            self._last = now
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens >= size:
            self._tokens = tokens - size
            return True
        self._tokens = tokens
        self.dropped += 1
        self.dropped_octets += size
        return False
