"""Routing raw GRE datagrams to calls: the parse and the table, without a socket.

A raw ``IPPROTO_GRE`` socket returns every GRE packet with its IPv4 header.  To route one we
need exactly this much of it: the IPv4 header length and source address, and in the enhanced
GRE header (RFC 2637 section 4.1) the version, the K bit, the protocol type and the call-ID half
of the key.  The packet, from the GRE header on, goes to the handler registered for ``(peer
IPv4 address, call ID)``; everything else about GRE is the per-call engine's job
(:mod:`pptpkit.gre.call`).  The constants are the codec's (:mod:`pptpkit.gre.packet`).

Keying on the pair (not the call ID alone) is what lets several clients behind one NAT share a
source address: each has its own call ID at the server.  Lookup is one dict access on an integer
key, so thousands of registered calls cost nothing per packet.  The socket that feeds it is
:class:`pptpkit.io.gresock.GreSocket`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pptpkit.gre.packet import FLAG_K, GRE_PROTOCOL_PPP, GRE_VERSION_ENHANCED, HEADER_MIN, VERSION_MASK

__all__ = [
    "PARSE_NOT_GRE_V1",
    "PARSE_NOT_IPV4",
    "PARSE_TOO_SHORT",
    "DemuxStats",
    "GreBatchHandler",
    "GreDemux",
    "GreHandler",
    "address_key",
    "parse_datagram",
]

log = logging.getLogger(__name__)

# The K bit as it sits in the first octet of the flags word.
_FLAG_K_HIGH: Final = FLAG_K >> 8
_ADDR: Final = struct.Struct("!I")
_U16: Final = struct.Struct("!H")

#: ``handler(gre_packet, now)``: the bytes from the GRE header to the end of the datagram, and
#: the time taken once per receive batch.  A handler registered with ``borrow=True`` gets a
#: memoryview into the reader's buffer instead, valid only during the call.
GreHandler = Callable[[bytes, float], None]
#: ``batch_handler(gre_packets, now)``: a run of packets for one call, in arrival order (see
#: :meth:`GreDemux.route_batch`).
GreBatchHandler = Callable[[list[bytes], float], None]


@dataclass(slots=True)
class DemuxStats:
    """Counters; each only grows.  A dropped packet is counted under exactly one reason."""

    received: int = 0
    delivered: int = 0
    too_short: int = 0
    not_ipv4: int = 0
    not_gre_v1: int = 0
    unknown_call: int = 0
    handler_errors: int = 0


#: Reason codes of :func:`parse_datagram` (negative: never a routing key).
PARSE_TOO_SHORT: Final = -1
PARSE_NOT_IPV4: Final = -2
PARSE_NOT_GRE_V1: Final = -3


def parse_datagram(datagram: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(routing key, IPv4 header length)`` of a raw-socket datagram, or ``(reason code, 0)``.

    The key is ``source address << 16 | call ID`` (what :meth:`GreDemux.register` files a call
    under).  The compiled receive path does the same parse in C (``pptpkit.speedups``); the
    tests hold the two to the same answers.
    """
    n = len(datagram)
    if n < 20:
        return PARSE_TOO_SHORT, 0
    vihl = datagram[0]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        return PARSE_NOT_IPV4, 0
    if n < ihl + HEADER_MIN:
        return PARSE_TOO_SHORT, 0
    if (
        datagram[ihl + 1] & VERSION_MASK != GRE_VERSION_ENHANCED
        or not datagram[ihl] & _FLAG_K_HIGH
        or _U16.unpack_from(datagram, ihl + 2)[0] != GRE_PROTOCOL_PPP
    ):
        return PARSE_NOT_GRE_V1, 0
    return _ADDR.unpack_from(datagram, 12)[0] << 16 | _U16.unpack_from(datagram, ihl + 6)[0], ihl


def address_key(address: str) -> int:
    """An IPv4 address as the integer the table is keyed on (``ValueError`` if not IPv4)."""
    # inet_pton takes exactly the dotted quad that IPv4Address takes (no short forms, no
    # leading zeros) at a tenth of its cost; registering a call looks up its key twice.
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except (OSError, TypeError, ValueError) as exc:
        raise ValueError(f"not an IPv4 address: {address!r}") from exc


class GreDemux:
    """The routing table and parser, without a socket (also what the tests fuzz).

    ``max_calls`` caps the table; the registrations come from our own call setup, but the
    call setup is driven by peers, so the cap is the last line of defence.
    """

    def __init__(self, *, max_calls: int = 65536) -> None:
        self.max_calls = max_calls
        self.stats = DemuxStats()
        # key -> (handler, borrow): borrowing handlers get a view, the others a copy.
        self._calls: dict[int, tuple[GreHandler, bool]] = {}
        # key -> batch handler, for the calls that registered one (route_batch).
        self._runs: dict[int, GreBatchHandler] = {}
        #: Optional hook for dropped packets whose call is not registered (for logging or a
        #: "no such call" policy); called with (peer address, call ID).
        self.on_unknown_call: Callable[[str, int], None] | None = None

    def register(self, peer: str, call_id: int, handler: GreHandler, *, borrow: bool = False,
                 batch: GreBatchHandler | None = None) -> None:
        """Route GRE from ``peer`` whose key carries ``call_id`` (our call ID) to ``handler``.

        ``borrow``: hand the packet over as a memoryview into the receive buffer, which the next
        receive overwrites, so the handler must copy whatever it keeps; it saves a copy of every
        packet for a handler that copies (or decodes) anyway.  ``batch``: also take runs of
        packets in one call (:meth:`route_batch`); it must do what ``handler`` would do with
        each packet of the run, in order.
        """
        if not 0 <= call_id <= 0xFFFF:
            raise ValueError(f"call ID out of range: {call_id}")
        key = address_key(peer) << 16 | call_id
        if key in self._calls:
            raise ValueError(f"call {call_id} from {peer} is already registered")
        if len(self._calls) >= self.max_calls:
            raise ValueError(f"GRE call table full ({self.max_calls} calls)")
        self._calls[key] = (handler, borrow)
        if batch is not None:
            self._runs[key] = batch

    def unregister(self, peer: str, call_id: int) -> None:
        """Forget a call; unknown calls are ignored (teardown paths may race)."""
        key = address_key(peer) << 16 | call_id
        self._calls.pop(key, None)
        self._runs.pop(key, None)

    def is_registered(self, peer: str, call_id: int) -> bool:
        return (address_key(peer) << 16 | call_id) in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def dispatch(self, datagram: bytes | bytearray | memoryview, now: float) -> bool:
        """Route one IPv4 datagram as a raw socket returns it; True if a handler got it."""
        key, ihl = parse_datagram(datagram)
        if key < 0:
            return self.route(key, b"", now)
        return self.route(key, datagram[ihl:], now)

    def route(self, key: int, packet: bytes | bytearray | memoryview, now: float) -> bool:
        """Deliver one parsed datagram: ``key`` and ``packet`` (from the GRE header on) as
        :func:`parse_datagram` gives them; a negative ``key`` (a reason code) is counted.  The
        socket's compiled receive path (``pptpkit.speedups``) parses in C and enters here."""
        st = self.stats
        st.received += 1
        if key < 0:
            if key == PARSE_NOT_IPV4:
                st.not_ipv4 += 1
            elif key == PARSE_NOT_GRE_V1:
                st.not_gre_v1 += 1
            else:
                st.too_short += 1
            return False
        route = self._calls.get(key)
        if route is None:
            st.unknown_call += 1
            if self.on_unknown_call is not None:
                self.on_unknown_call(str(ipaddress.IPv4Address(key >> 16)), key & 0xFFFF)
            return False
        handler, borrow = route
        try:
            handler(packet if borrow or type(packet) is bytes else bytes(packet), now)  # type: ignore[arg-type]
        except Exception:
            # One call's bug must not stop the reader that serves every other call.
            st.handler_errors += 1
            log.exception("GRE handler for call %d failed", key & 0xFFFF)
            return False
        st.delivered += 1
        return True

    def route_batch(self, batch: list[tuple[int, bytes]], now: float) -> None:
        """:meth:`route` of each ``(key, packet)`` in order (a receive batch as the compiled
        reader returns it), with runs of consecutive packets for one call that registered a
        batch handler handed to it in one call.  Counters as :meth:`route` keeps them: a run
        counts each packet as received and, when the handler returns, as delivered; a handler
        that raises counts every packet of its run as a handler error (one call's bug must not
        stop the reader, nor make its packets vanish from the books).  Stops early when
        :meth:`_halted` says so (the socket was closed by a handler)."""
        runs = self._runs
        route = self.route
        n = len(batch)
        i = 0
        while i < n:
            key, packet = batch[i]
            j = i + 1
            handler = runs.get(key) if runs else None
            if handler is not None:
                while j < n and batch[j][0] == key:
                    j += 1
            if j - i == 1 or handler is None:
                route(key, packet, now)
            else:
                self._route_run(key, handler, [p for _k, p in batch[i:j]], now)
            if self._halted():
                return
            i = j

    def _route_run(self, key: int, handler: GreBatchHandler, packets: list[bytes], now: float) -> None:
        st = self.stats
        k = len(packets)
        st.received += k
        try:
            handler(packets, now)
        except Exception:
            st.handler_errors += k
            log.exception("GRE batch handler for call %d failed", key & 0xFFFF)
            return
        st.delivered += k

    def _halted(self) -> bool:
        """Whether :meth:`route_batch` must stop (a socket that a handler closed)."""
        return False
