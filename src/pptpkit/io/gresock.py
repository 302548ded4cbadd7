"""One raw GRE socket per process (per network namespace), demultiplexed to calls.

The kernel hands a ``SOCK_RAW``/``IPPROTO_GRE`` socket every GRE packet with its IPv4 header.
We parse exactly what is needed to route it: the IPv4 header length and source address, and in
the enhanced GRE header (RFC 2637 section 4.1) the version, the K bit, the protocol type and the
call-ID half of the key.  The packet, from the GRE header on, goes to the handler registered for
``(peer IPv4 address, call ID)``; everything else about GRE is the sans-IO GRE engine's job.

Keying on the pair (not the call ID alone) is what lets several clients behind one NAT share a
source address: each has its own call ID at the server.  Lookup is one dict access, so thousands
of registered calls cost nothing per packet.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GRE_PROTOCOL_PPP",
    "Ancillary",
    "GreDemux",
    "GreHandler",
    "GreSocket",
    "GreStats",
    "source_ancillary",
]

log = logging.getLogger(__name__)

GRE_PROTOCOL_PPP: Final = 0x880B
_GRE_FLAG_K: Final = 0x20
_GRE_VERSION_MASK: Final = 0x07
_ENHANCED_GRE_VERSION: Final = 1
_MIN_GRE: Final = 8  # flags/version, protocol, payload length, call ID
_ADDR: Final = struct.Struct("!I")
_U16: Final = struct.Struct("!H")
# An IPv4 datagram cannot exceed this, so one receive buffer of this size never truncates.
_MAX_DATAGRAM: Final = 65535
# Linux values; the socket module only exports them from Python 3.12 on.
_IP_MTU_DISCOVER: Final = 10
_IP_PMTUDISC_DONT: Final = 0
_IP_PKTINFO: Final = 8
# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_PKTINFO: Final = struct.Struct("=i4s4s")

#: Ancillary data for :meth:`GreSocket.send_from`, built once per call by :func:`source_ancillary`.
Ancillary = list[tuple[int, int, bytes]]

#: ``handler(gre_packet, now)``: the bytes from the GRE header to the end of the datagram, and
#: ``loop.time()`` taken once per receive batch.  A handler registered with ``borrow=True`` gets
#: a memoryview into the socket's receive buffer instead, valid only during the call.
GreHandler = Callable[[bytes, float], None]


@dataclass(slots=True)
class GreStats:
    """Counters; each only grows.  Dropped packets are counted under exactly one reason."""

    received: int = 0
    delivered: int = 0
    too_short: int = 0
    not_ipv4: int = 0
    not_gre_v1: int = 0
    unknown_call: int = 0
    handler_errors: int = 0
    sent: int = 0
    send_dropped: int = 0
    send_errors: int = 0
    receive_errors: int = 0


@functools.lru_cache(maxsize=256)
def source_ancillary(source: str) -> Ancillary:
    """``IP_PKTINFO`` that makes the kernel send from ``source`` (which must be ours).

    One raw socket serves every call, so it cannot be bound to one address; a multi-homed host
    still has to answer each call from the address the peer called, because a peer like
    pptp-linux filters GRE on the address it connected to.  Cached: every call to one local
    address shares one (never modified) list.
    """
    try:
        packed = socket.inet_aton(source)
    except OSError as exc:
        raise ValueError(f"not an IPv4 address: {source!r}") from exc
    return [(socket.IPPROTO_IP, _IP_PKTINFO, _PKTINFO.pack(0, packed, bytes(4)))]


def _addr_key(address: str) -> int:
    try:
        return int(_ADDR.unpack(socket.inet_aton(address))[0])
    except OSError as exc:
        raise ValueError(f"not an IPv4 address: {address!r}") from exc


class GreDemux:
    """The routing table and parser, without a socket (also what the tests fuzz).

    ``max_calls`` caps the table; the registrations come from our own call setup, but the
    call setup is driven by peers, so the cap is the last line of defence.
    """

    def __init__(self, *, max_calls: int = 65536) -> None:
        self.max_calls = max_calls
        self.stats = GreStats()
        # key -> (handler, borrow): borrowing handlers get a view, the others a copy.
        self._calls: dict[int, tuple[GreHandler, bool]] = {}
        #: Optional hook for dropped packets whose call is not registered (for logging or a
        #: "no such call" policy); called with (peer address, call ID).
        self.on_unknown_call: Callable[[str, int], None] | None = None

    def register(self, peer: str, call_id: int, handler: GreHandler, *, borrow: bool = False) -> None:
        """Route GRE from ``peer`` whose key carries ``call_id`` (our call ID) to ``handler``.

        ``borrow``: hand the packet over as a memoryview into the receive buffer, which the next
        receive overwrites, so the handler must copy whatever it keeps; it saves a copy of every
        packet for a handler that copies (or decodes) anyway.
        """
        if not 0 <= call_id <= 0xFFFF:
            raise ValueError(f"call ID out of range: {call_id}")
        key = _addr_key(peer) << 16 | call_id
        if key in self._calls:
            raise ValueError(f"call {call_id} from {peer} is already registered")
        if len(self._calls) >= self.max_calls:
            raise ValueError(f"GRE call table full ({self.max_calls} calls)")
        self._calls[key] = (handler, borrow)

    def unregister(self, peer: str, call_id: int) -> None:
        """Forget a call; unknown calls are ignored (teardown paths may race)."""
        self._calls.pop(_addr_key(peer) << 16 | call_id, None)

    def is_registered(self, peer: str, call_id: int) -> bool:
        return (_addr_key(peer) << 16 | call_id) in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def dispatch(self, datagram: bytes | bytearray | memoryview, now: float) -> bool:
        """Route one IPv4 datagram as a raw socket returns it; True if a handler got it."""
        st = self.stats
        st.received += 1
        n = len(datagram)
        if n < 20:
            st.too_short += 1
            return False
        vihl = datagram[0]
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            st.not_ipv4 += 1
            return False
        if n < ihl + _MIN_GRE:
            st.too_short += 1
            return False
        flags = datagram[ihl]
        if (
            datagram[ihl + 1] & _GRE_VERSION_MASK != _ENHANCED_GRE_VERSION
            or not flags & _GRE_FLAG_K
            or _U16.unpack_from(datagram, ihl + 2)[0] != GRE_PROTOCOL_PPP
        ):
            st.not_gre_v1 += 1
            return False
        src = _ADDR.unpack_from(datagram, 12)[0]
        call_id = _U16.unpack_from(datagram, ihl + 6)[0]
        route = self._calls.get(src << 16 | call_id)
        if route is None:
            st.unknown_call += 1
            if self.on_unknown_call is not None:
                self.on_unknown_call(socket.inet_ntoa(_ADDR.pack(src)), call_id)
            return False
        handler, borrow = route
        try:
            handler(datagram[ihl:] if borrow else bytes(datagram[ihl:]), now)  # type: ignore[arg-type]
        except Exception:
            # One call's bug must not stop the reader that serves every other call.
            st.handler_errors += 1
            log.exception("GRE handler for call %d failed", call_id)
            return False
        st.delivered += 1
        return True


class GreSocket(GreDemux):
    """The raw GRE socket of this network namespace, registered with the running loop.

    Create it inside the namespace it should serve (the socket belongs to the namespace that is
    current when it is opened).  ``local_address`` binds it: only GRE to that address is received
    and it is the source of what we send.  On each wakeup it reads until EAGAIN, but at most
    ``max_batch`` datagrams so one busy peer cannot starve the loop (the reader stays ready and
    is called again on the next iteration).
    """

    def __init__(
        self,
        *,
        local_address: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        receive_buffer: int | None = 4 * 1024 * 1024,
        max_batch: int = 512,
        max_calls: int = 65536,
    ) -> None:
        super().__init__(max_calls=max_calls)
        self._loop = loop or asyncio.get_running_loop()
        self.max_batch = max_batch
        self.local_address = local_address
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
        try:
            sock.setblocking(False)
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            # PPP frames up to the link MTU plus GRE and IP headers exceed a 1500-byte path;
            # letting the kernel fragment (as the kernel pptp path does) keeps them flowing.
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DONT)
            if local_address is not None:
                sock.bind((local_address, 0))
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._buf = bytearray(_MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def fileno(self) -> int:
        return -1 if self._sock is None else self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        """Send one GRE packet (GRE header on) to ``peer``; the kernel adds the IPv4 header.

        GRE is a datagram service: when the socket buffer is full the packet is dropped and
        counted (``send_dropped``) rather than queued; routing errors count as ``send_errors``.
        """
        if self._sock is None:
            self.stats.send_errors += 1
            return False
        try:
            self._sock.sendto(packet, (peer, 0))
        except OSError as exc:
            return self._send_failed(peer, exc)
        self.stats.sent += 1
        return True

    def send_from(self, peer: str, packet: bytes | bytearray | memoryview, ancillary: Ancillary) -> bool:
        """:meth:`send` with the source address fixed by ``ancillary`` (:func:`source_ancillary`)."""
        if self._sock is None:
            self.stats.send_errors += 1
            return False
        try:
            self._sock.sendmsg([packet], ancillary, 0, (peer, 0))
        except OSError as exc:
            return self._send_failed(peer, exc)
        self.stats.sent += 1
        return True

    def _send_failed(self, peer: str, exc: OSError) -> bool:
        # A full socket buffer is a drop, as on any datagram path; anything else is an error.
        if isinstance(exc, (BlockingIOError, InterruptedError)) or exc.errno == errno.ENOBUFS:
            self.stats.send_dropped += 1
        else:
            self.stats.send_errors += 1
            log.debug("GRE send to %s failed: %s", peer, exc)
        return False

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        now = self._loop.time()
        view = self._view
        for _ in range(self.max_batch):
            try:
                n = sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Raw sockets can report queued ICMP errors; they are not fatal to the socket.
                self.stats.receive_errors += 1
                log.debug("GRE receive error: %s", exc)
                return
            self.dispatch(view[:n], now)
            if self._sock is None:  # a handler closed us
                return

    def close(self) -> None:
        if self._sock is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._calls.clear()
