"""Call-ID partitions for a server of several worker processes, and the classic BPF program that
makes the kernel deliver each GRE packet to the one worker owning its call ID.

Why partitions of the call-ID space: a PPTP client puts *our* call ID in the low half of the GRE
key (RFC 2637 section 4.1: the Key field is Payload Length, 16 bits, then Call ID, 16 bits), so
the kernel can route GRE by that number before any worker sees it.  Every worker opens its own
raw GRE socket and attaches a filter that admits only the call IDs of its own contiguous range;
it hands out call IDs only from that range (at random within it, so IDs stay unpredictable).
Contiguous ranges and not ``call_id % n``: the filter is two compares, and the allocator already
takes a range.

The filter (classic BPF, ``SO_ATTACH_FILTER``) sees what the raw socket would receive: the IPv4
header first, so the GRE header is found through the header length (``ldx 4*([0]&0xf)``, then
loads relative to X).  What it checks, in order: protocol type 0x880B, version 1, the Key bit;
then the call ID against the range.

GRE that is not PPTP's enhanced GRE (no key, another version or protocol type) goes to exactly
one defined worker, the ``catch_all`` one (worker 0): its demultiplexer counts it
(``not_gre_v1``) as a single-process server would, and no packet is ever seen by two workers.  A
packet too short to hold the call ID ends the program with 0 - dropped by every worker (classic
BPF aborts a load beyond the packet with a 0 return); one worker would only have counted it as
too short.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from pptpkit.errors import ConfigError

__all__ = ["MAX_WORKERS", "CallIdRange", "gre_partition_filter", "partition", "partitions"]

#: More workers than this is a typo: each still gets 1024 call IDs.
MAX_WORKERS: Final = 64

_GRE_PROTOCOL_PPP: Final = 0x880B
# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD, _LDX, _ALU, _JMP, _RET = 0x00, 0x01, 0x04, 0x05, 0x06
_H, _B = 0x08, 0x10
_IND, _MSH = 0x40, 0xA0
_K = 0x00
_AND = 0x50
_JEQ, _JGT, _JGE, _JSET = 0x10, 0x20, 0x30, 0x40
# Bytes of the packet to keep: all of it (an IPv4 datagram is never longer).
_ACCEPT: Final = 0xFFFF
_INSN: Final = struct.Struct("=HBBI")


@dataclass(frozen=True, slots=True)
class CallIdRange:
    """Worker ``index`` of ``count`` owns call IDs ``low..high`` (inclusive)."""

    index: int
    count: int
    low: int
    high: int

    @property
    def allocatable_low(self) -> int:
        """Call ID 0 is never handed out (peers treat it as "none")."""
        return max(1, self.low)

    def __contains__(self, call_id: object) -> bool:
        return isinstance(call_id, int) and self.low <= call_id <= self.high


def partition(index: int, count: int) -> CallIdRange:
    """Worker ``index``'s share of 0..65535: ``count`` contiguous ranges that cover every ID."""
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"workers must be 1..{MAX_WORKERS}, not {count}")
    if not 0 <= index < count:
        raise ConfigError(f"worker index {index} is not in 0..{count - 1}")
    return CallIdRange(index, count, index * 0x10000 // count, (index + 1) * 0x10000 // count - 1)


def partitions(count: int) -> list[CallIdRange]:
    return [partition(i, count) for i in range(count)]


def gre_partition_filter(part: CallIdRange, *, catch_all: bool | None = None) -> bytes:
    """The ``struct sock_filter`` array (native byte order) admitting the enhanced GRE of
    ``part``'s call IDs; with ``catch_all`` (default: worker 0) also every GRE packet that is not
    PPTP's.  Attach with :func:`pptpkit.io.gresock.attach_filter`."""
    if catch_all is None:
        catch_all = part.index == 0
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets.
    prog: list[tuple[int, str | None, str | None, int]] = [
        (_LDX | _B | _MSH, None, None, 0),           # X = 4 * (IHL)
        (_LD | _H | _IND, None, None, 2),            # GRE protocol type
        (_JMP | _JEQ | _K, None, "other", _GRE_PROTOCOL_PPP),
        (_LD | _B | _IND, None, None, 1),            # flags and version
        (_ALU | _AND | _K, None, None, 0x07),
        (_JMP | _JEQ | _K, None, "other", 1),
        (_LD | _B | _IND, None, None, 0),            # C R K S s Recur
        (_JMP | _JSET | _K, None, "other", 0x20),     # the Key bit
        (_LD | _H | _IND, None, None, 6),            # the key's call ID
        (_JMP | _JGE | _K, None, "drop", part.low),
        (_JMP | _JGT | _K, "drop", "accept", part.high),
    ]
    labels = {"accept": len(prog), "drop": len(prog) + 1, "other": len(prog) + 2}
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        t = 0 if jt is None else labels[jt] - i - 1
        f = 0 if jf is None else labels[jf] - i - 1
        out += _INSN.pack(code, t, f, k)
    out += _INSN.pack(_RET | _K, 0, 0, _ACCEPT)
    out += _INSN.pack(_RET | _K, 0, 0, 0)
    out += _INSN.pack(_RET | _K, 0, 0, _ACCEPT if catch_all else 0)
    return bytes(out)
