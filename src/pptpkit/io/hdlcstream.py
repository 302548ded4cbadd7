"""Async-HDLC PPP frames on a byte stream <-> bare PPP frames of a call.

pptp-linux and pptpd hand PPP frames to pppd (or whatever replaces it) as RFC 1662 async HDLC on
a pty or socketpair.  :class:`HdlcStreamBridge` is that edge for us: bytes read from the stream
are deframed (FCS checked, escapes undone) and each good frame goes to ``on_frame``; frames given
to :meth:`HdlcStreamBridge.send_frame` are HDLC-encoded and written.

The transmit ACCM defaults to all ones: before LCP has run nothing else is safe, and the program
on the other end (pppd, or pptp-linux itself) escapes every control character anyway.  The
bridge never interprets PPP, so it does not learn a negotiated ACCM by itself; an owner that does
can call :meth:`HdlcStreamBridge.set_accm` (e.g. on a Set-Link-Info).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pptpkit.io.pty import FdStream
from pptpkit.ppp.hdlc import DEFAULT_ACCM, DEFAULT_MAX_FRAME, HdlcDecoder, HdlcStats, encode_frame

__all__ = ["BridgeStats", "HdlcStreamBridge"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BridgeStats:
    frames_in: int = 0
    """Good frames deframed from the stream (handed to ``on_frame``)."""
    frames_out: int = 0
    """Frames encoded and accepted by the stream's write buffer."""
    frames_dropped_out: int = 0
    """Frames the stream refused (write buffer full or stream ended)."""


class HdlcStreamBridge:
    """HDLC deframer/framer on one :class:`~pptpkit.io.pty.FdStream`.

    ``on_frame(frame)`` gets every frame with a good FCS, FCS removed.  ``on_close(exc)`` runs
    once when the stream ends (EOF, EIO of a pty master, write error); ``exc`` is None for EOF.
    ``max_frame`` caps one frame (and, through the decoder, the bytes buffered for one).
    """

    def __init__(
        self,
        stream: FdStream,
        *,
        on_frame: Callable[[bytes], object],
        on_close: Callable[[BaseException | None], None] | None = None,
        accm: int = DEFAULT_ACCM,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.stream = stream
        self._on_frame = on_frame
        self._on_close = on_close
        self._accm = accm
        self._decoder = HdlcDecoder(max_frame=max_frame)
        self.stats = BridgeStats()
        self._started = False

    @property
    def hdlc_stats(self) -> HdlcStats:
        """The deframer's counters (bad FCS, short, aborted, oversized frames)."""
        return self._decoder.stats

    def set_accm(self, accm: int) -> None:
        """Change the transmit ACCM (bit n set: escape octet n)."""
        if not 0 <= accm <= 0xFFFFFFFF:
            raise ValueError(f"ACCM must be a 32-bit value, got {accm:#x}")
        self._accm = accm

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.stream.start(self._data_received, self._closed)

    def _data_received(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            self.stats.frames_in += 1
            self._on_frame(frame)

    def _closed(self, exc: BaseException | None) -> None:
        if self._on_close is not None:
            self._on_close(exc)

    def send_frame(self, frame: bytes) -> bool:
        """HDLC-encode ``frame`` and write it; False if the stream dropped it."""
        if self.stream.write(encode_frame(frame, self._accm)):
            self.stats.frames_out += 1
            return True
        self.stats.frames_dropped_out += 1
        return False

    def close(self) -> None:
        self.stream.close()
