"""RFC 1662 asynchronous HDLC-like framing: FCS-16, octet stuffing, a streaming decoder.

pptp-linux and pptpd exchange PPP frames with the PPP program in this framing (on a pty or a
socketpair), so this is on the per-packet path in both directions.  Nothing here loops over
bytes in Python: the FCS runs in C (see :func:`fcs16`), escaping and unescaping use
``bytes.translate`` / ``replace`` / ``split``, and frames are found with ``split`` on the flag.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

FLAG: Final = 0x7E
ESCAPE: Final = 0x7D
FCS16_INIT: Final = 0xFFFF
FCS16_GOOD: Final = 0xF0B8
FCS16_POLY: Final = 0x8408  # x^16 + x^12 + x^5 + 1, bit-reversed (LSB-first)
DEFAULT_ACCM: Final = 0xFFFFFFFF
DEFAULT_MAX_FRAME: Final = 8192

_FLAG_B: Final = b"\x7e"
_ESC_B: Final = b"\x7d"


def _reverse_bits(value: int) -> int:
    out = 0
    for _ in range(8):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


# Byte bit-reversal as a translate table.
_REVERSE: Final = bytes(_reverse_bits(b) for b in range(256))


def _reverse16(value: int) -> int:
    return (_REVERSE[value & 0xFF] << 8) | _REVERSE[value >> 8]


def fcs16(data: bytes | bytearray, fcs: int = FCS16_INIT) -> int:
    """Run the PPP FCS-16 register over ``data`` starting from ``fcs`` (no final complement).

    The PPP FCS is the CRC-CCITT polynomial processed least significant bit first.  Python has
    no such CRC in C, but ``binascii.crc_hqx`` is the same polynomial processed most
    significant bit first (table-driven, in C).  Reversing the bits of every input byte and of
    the register on the way in and out turns one into the exact mirror image of the other, and
    is about twenty times faster than a table lookup per byte in Python.  The tests check it
    against a bit-serial implementation of the RFC 1662 definition.
    """
    return _reverse16(binascii.crc_hqx(data.translate(_REVERSE), _reverse16(fcs)))


def fcs16_trailer(frame: bytes | bytearray) -> bytes:
    """The two FCS octets to append to ``frame`` (complemented, least significant first)."""
    value = fcs16(frame) ^ 0xFFFF
    return bytes((value & 0xFF, value >> 8))


def fcs16_check(frame_with_fcs: bytes | bytearray) -> bool:
    """True when the FCS register over frame + FCS ends at the good value 0xF0B8."""
    return fcs16(frame_with_fcs) == FCS16_GOOD


_SINGLE: Final = tuple(bytes((b,)) for b in range(256))
_ESCAPED: Final = tuple(bytes((ESCAPE, b ^ 0x20)) for b in range(256))
_ESCAPED_TO_RAW: Final = {bytes((ESCAPE, b)): bytes((b ^ 0x20,)) for b in range(256)}
_ESCAPE_PAIR_RE: Final = re.compile(rb"\x7d[\x00-\xff]")
_AFTER_ESCAPE: Final = bytes(0x20 if b == ESCAPE else 0 for b in range(256))
_ESCAPE_MARK: Final = bytes(0xFF if b == ESCAPE else 0 for b in range(256))


def _control_chars(accm: int) -> bytes:
    return bytes(c for c in range(32) if accm >> c & 1)


@lru_cache(maxsize=64)
def _not_escaped(accm: int) -> bytes:
    """The octets that ``accm`` leaves alone, as a translate() delete set."""
    escaped = set(_control_chars(accm)) | {ESCAPE, FLAG}
    return bytes(b for b in range(256) if b not in escaped)


def _check_accm(accm: int) -> None:
    if not 0 <= accm <= 0xFFFFFFFF:
        raise ValueError(f"ACCM must be a 32-bit value, got {accm:#x}")


def escape(data: bytes, accm: int = DEFAULT_ACCM) -> bytes:
    """Octet-stuff ``data``: 0x7d, 0x7e and the control characters flagged in ``accm``."""
    _check_accm(accm)
    present = data.translate(None, _not_escaped(accm))
    if not present:
        return data
    # 0x7d first: the later replacements insert 0x7d, which must not be escaped again.
    if ESCAPE in present:
        data = data.replace(_ESC_B, b"\x7d\x5d")
    for b in set(present):
        if b != ESCAPE:
            data = data.replace(_SINGLE[b], _ESCAPED[b])
    return data


def encode_frame(frame: bytes, accm: int = DEFAULT_ACCM) -> bytes:
    """``7e`` + escaped(frame + FCS-16) + ``7e``.

    ``accm`` is the sending ACCM (bit n set: escape octet n, for n < 32); 0x7d and 0x7e are
    always escaped.  The default escapes every control character, which is what a peer may
    assume before LCP negotiated anything.  An opening flag is always sent: RFC 1662 4.4.2
    allows sharing one flag between frames, but a fresh one lets the receiver drop any line
    noise in between as its own invalid frame.
    """
    return _FLAG_B + escape(frame + fcs16_trailer(frame), accm) + _FLAG_B


def unescape(data: bytes) -> bytes:
    """Undo octet stuffing (``7d x`` becomes ``x ^ 0x20``); ``data`` must not end with 0x7d."""
    if ESCAPE not in data:
        return data
    if b"\x7d\x7d" in data:
        # An escaped 0x5d is 7d 7d: the second 0x7d is data, not an escape, which the
        # positional method below cannot tell; the regex pairs escapes up left to right.
        return _ESCAPE_PAIR_RE.sub(_pair_to_raw, data)
    # Every 0x7d is now an escape start, so the whole job is positional: drop the 0x7d octets
    # and flip bit 5 of the octet after each one.  Done on whole buffers (translate, replace
    # and one big-integer XOR) instead of a Python step per escape, which is twice as fast
    # on a typical frame.
    n = len(data)
    follows = int.from_bytes((b"\0" + data[:-1]).translate(_AFTER_ESCAPE), "big")
    starts = int.from_bytes(data.translate(_ESCAPE_MARK), "big")
    # 0xff marks only escape starts (their followers get 0x20, everything else 0), so deleting
    # it removes from the mask exactly the positions the replace() below removes from the data.
    mask = (follows | starts).to_bytes(n, "big").replace(b"\xff", b"")
    kept = data.replace(_ESC_B, b"")
    return (int.from_bytes(kept, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(kept), "big")


def _pair_to_raw(match: re.Match[bytes]) -> bytes:
    return _ESCAPED_TO_RAW[match.group()]


@dataclass(slots=True)
class HdlcStats:
    """Decoder counters.  ``short``: frames under 4 octets (silently dropped per RFC 1662
    4.3); ``aborted``: frames ending in 7d 7e; ``discarded_bytes``: octets thrown away while
    hunting for a flag (before the first one, after an oversized frame)."""

    frames: int = 0
    bad_fcs: int = 0
    short: int = 0
    aborted: int = 0
    oversized: int = 0
    discarded_bytes: int = 0


class HdlcDecoder:
    """Streaming async-HDLC deframer: feed any chunks, get whole frames with the FCS checked.

    Delivered frames have the FCS removed and nothing else changed (address, control and
    protocol fields are the PPP layer's business).  Octets before the first flag are line noise
    and discarded.  ``max_frame`` caps the size of a frame without its FCS; the buffered,
    still-escaped tail of an unfinished frame is capped at twice that (every octet escaped), so
    a peer that never sends a flag cannot grow memory.  ``rx_accm``: control characters whose
    bit is set are deleted on receipt before unescaping (RFC 1662 section 7.1 - they may have
    been inserted by equipment on the line); the default 0 keeps everything.
    """

    __slots__ = ("_buf", "_delete", "_hunting", "_max_raw", "max_frame", "stats")

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME, rx_accm: int = 0) -> None:
        if not 1 <= max_frame <= 0x10000:
            raise ValueError(f"max_frame must be 1..65536, got {max_frame}")
        self.max_frame = max_frame
        self._max_raw = 2 * (max_frame + 2)
        self._buf = b""
        self._hunting = True
        self._delete = b""
        self.set_rx_accm(rx_accm)
        self.stats = HdlcStats()

    def set_rx_accm(self, accm: int) -> None:
        """Change the receive ACCM (after LCP negotiated one)."""
        _check_accm(accm)
        self._delete = _control_chars(accm)

    @property
    def pending(self) -> int:
        """Octets of an unfinished frame held until its closing flag."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received octets; returns every frame they completed, in order."""
        chunk = bytes(data)
        if FLAG not in chunk:
            if self._hunting:
                self.stats.discarded_bytes += len(chunk)
                return []
            buf = self._buf + chunk
            if len(buf) > self._max_raw:
                self._overflow()
            else:
                self._buf = buf
            return []
        parts = (self._buf + chunk).split(_FLAG_B)
        frames: list[bytes] = []
        first = parts[0]
        if self._hunting:
            self.stats.discarded_bytes += len(first)
        elif first:
            frame = self._frame(first)
            if frame is not None:
                frames.append(frame)
        for seg in parts[1:-1]:
            if seg:
                frame = self._frame(seg)
                if frame is not None:
                    frames.append(frame)
        self._hunting = False
        tail = parts[-1]
        if len(tail) > self._max_raw:
            self._overflow()
        else:
            self._buf = tail
        return frames

    def _overflow(self) -> None:
        self.stats.oversized += 1
        self._buf = b""
        self._hunting = True

    def _frame(self, seg: bytes) -> bytes | None:
        stats = self.stats
        if self._delete:
            seg = seg.translate(None, self._delete)
            if not seg:
                return None
        if seg[-1] == ESCAPE:
            stats.aborted += 1
            return None
        if ESCAPE in seg:
            seg = unescape(seg)
        n = len(seg)
        if n < 4:
            stats.short += 1
            return None
        if n - 2 > self.max_frame:
            stats.oversized += 1
            return None
        if _reverse16(binascii.crc_hqx(seg.translate(_REVERSE), 0xFFFF)) != FCS16_GOOD:
            stats.bad_fcs += 1
            return None
        stats.frames += 1
        return seg[:-2]
