"""One raw GRE socket per process (per network namespace), demultiplexed to calls.

The kernel hands a ``SOCK_RAW``/``IPPROTO_GRE`` socket every GRE packet with its IPv4 header.
:class:`GreSocket` reads them in batches and hands each to the sans-IO demultiplexer it extends,
:class:`pptpkit.gre.demux.GreDemux`, which parses just enough to route the packet to the call
registered for ``(peer IPv4 address, call ID)``.  Sending goes out the same socket, from the
address the peer called when one host has several (``IP_PKTINFO``).

With the compiled primitives (:mod:`pptpkit.speedups`) the reader takes up to 64 datagrams per
``recvmmsg`` and the demultiplexer's parse runs in C (:meth:`GreDemux.route_batch` takes it from
there: consecutive datagrams of one call go to its batch handler as one run), and
:meth:`GreSocket.send_to` sends with the destination and source prepared once per call instead
of parsed from Python objects per packet.  Without them, one ``recv_into`` per
datagram and :meth:`GreSocket.send` / :meth:`GreSocket.send_from`.

:meth:`GreSocket.send_many` sends a batch of data frames of one call (the segments of one TUN
read, numbered by the GRE engine's ``send_run``) with one ``sendmmsg``: the compiled
``send_gre_many`` builds each GRE header (consecutive sequence numbers, one ack) in C and hands
header and frame to the kernel as two parts, so Python runs once per batch, not per datagram;
building the headers in Python instead (``struct.pack`` per packet) would cost a few hundred
nanoseconds per packet of the ~1 us budget.  Its pure twin, :func:`send_gre_many`, loops
``sendmsg``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pptpkit.gre.demux import DemuxStats, GreDemux, GreHandler
from pptpkit.gre.packet import IPPROTO_GRE, Buffer, data_header
from pptpkit.speedups import EXT

__all__ = [
    "Ancillary",
    "GreDemux",
    "GreHandler",
    "GreSocket",
    "SocketStats",
    "attach_filter",
    "send_gre_many",
    "source_ancillary",
]

log = logging.getLogger(__name__)

# Datagrams per recvmmsg (the compiled reader's most): a batch is grouped into runs per call
# (GreDemux.route_batch), so what runs per run instead of per packet is spread over more.
_RECV_BATCH: Final = 64
# An IPv4 datagram cannot exceed this, so one receive buffer of this size never truncates.
_MAX_DATAGRAM: Final = 65535
# Linux values; the socket module only exports them from Python 3.12 on.
_IP_MTU_DISCOVER: Final = 10
_IP_PMTUDISC_DONT: Final = 0
_IP_PKTINFO: Final = 8
# struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst; struct in_addr ipi_addr; }
_PKTINFO: Final = struct.Struct("=i4s4s")

_SO_ATTACH_FILTER: Final = 26
# struct sock_filter is 8 bytes: u16 code, u8 jt, u8 jf, u32 k.
_SOCK_FILTER_SIZE: Final = 8

#: Ancillary data for :meth:`GreSocket.send_from`, built once per call by :func:`source_ancillary`.
Ancillary = list[tuple[int, int, bytes]]


@dataclass(slots=True)
class SocketStats(DemuxStats):
    """The demultiplexer's counters and the socket's own."""

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


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """``SO_ATTACH_FILTER`` with a classic BPF ``program`` (``struct sock_filter`` array, e.g.
    :func:`pptpkit.gre.partition.gre_partition_filter`), then drop what was queued before it
    took effect: until then the socket received every GRE packet, including other workers'."""
    if not program or len(program) % _SOCK_FILTER_SIZE:
        raise ValueError("a BPF program is a non-empty array of 8-byte instructions")
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (native alignment);
    # the kernel copies the program during the call, so buf only has to outlive it.
    fprog = struct.pack("@HP", len(program) // _SOCK_FILTER_SIZE, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    while True:
        try:
            sock.recv(_MAX_DATAGRAM, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue  # a queued ICMP error: keep draining


class GreSocket(GreDemux):
    """The raw GRE socket of this network namespace, registered with the running loop.

    Create it inside the namespace it should serve (the socket belongs to the namespace that is
    current when it is opened).  ``local_address`` binds it: only GRE to that address is received
    and it is the source of what we send.  On each wakeup it reads until EAGAIN, but at most
    ``max_batch`` datagrams so one busy peer cannot starve the loop (the reader stays ready and
    is called again on the next iteration).
    """

    stats: SocketStats

    def __init__(
        self,
        *,
        local_address: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        receive_buffer: int | None = 4 * 1024 * 1024,
        max_batch: int = 512,
        max_calls: int = 65536,
        bpf: bytes | None = None,
    ) -> None:
        super().__init__(max_calls=max_calls)
        self.stats = SocketStats()
        self._loop = loop or asyncio.get_running_loop()
        self.max_batch = max_batch
        self.local_address = local_address
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_GRE)
        try:
            sock.setblocking(False)
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            # PPP frames up to the link MTU plus GRE and IP headers exceed a 1500-byte path;
            # letting the kernel fragment (as the kernel pptp path does) keeps them flowing.
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DONT)
            if local_address is not None:
                sock.bind((local_address, 0))
            if bpf is not None:
                attach_filter(sock, bpf)
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

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        """:meth:`send_from` (or :meth:`send` when ``pktinfo`` is None) with ``peer`` as an
        integer IPv4 address and the packed ``in_pktinfo`` of :func:`source_ancillary`; the
        compiled path when it is in use."""
        sock = self._sock
        if sock is None:
            self.stats.send_errors += 1
            return False
        try:
            if EXT is not None:
                EXT.send_gre(sock.fileno(), packet, peer, pktinfo)
            elif pktinfo is None:
                sock.sendto(packet, (str(ipaddress.IPv4Address(peer)), 0))
            else:
                sock.sendmsg([packet], [(socket.IPPROTO_IP, _IP_PKTINFO, pktinfo)], 0,
                             (str(ipaddress.IPv4Address(peer)), 0))
        except OSError as exc:
            return self._send_failed(str(ipaddress.IPv4Address(peer)), exc)
        self.stats.sent += 1
        return True

    def send_parts(self, peer: int, header: bytes, payload: bytes | bytearray | memoryview,
                   pktinfo: bytes | None) -> bool:
        """:meth:`send_to` of the datagram ``header + payload``, gathered by the kernel from the
        two parts (one ``sendmsg`` with two buffers): the GRE header and the PPP frame are never
        joined in memory."""
        sock = self._sock
        if sock is None:
            self.stats.send_errors += 1
            return False
        try:
            if EXT is not None:
                EXT.send_gre(sock.fileno(), header, peer, pktinfo, payload)
            else:
                sock.sendmsg([header, payload],
                             [] if pktinfo is None else [(socket.IPPROTO_IP, _IP_PKTINFO, pktinfo)], 0,
                             (socket.inet_ntoa(peer.to_bytes(4, "big")), 0))
        except OSError as exc:
            return self._send_failed(str(ipaddress.IPv4Address(peer)), exc)
        self.stats.sent += 1
        return True

    def send_many(self, peer: int, call_id: int, seq: int, ack: int, frames: Sequence[Buffer],
                  pktinfo: bytes | None) -> int:
        """:meth:`send_parts` of each frame, frame ``k`` behind the data header numbered
        ``seq + k`` acknowledging ``ack`` (-1: none) of call ``call_id`` (:func:`data_header`),
        in as few system calls as the kernel allows (compiled: ``sendmmsg``).  Every frame is
        tried once and what the kernel refuses is counted as :meth:`send_parts` counts it;
        returns how many went out."""
        stats = self.stats
        sock = self._sock
        if sock is None:
            stats.send_errors += len(frames)
            return 0
        if EXT is not None:
            sent, dropped, errors, err = EXT.send_gre_many(sock.fileno(), peer, pktinfo, call_id, seq, ack,
                                                           frames)
        else:
            sent, dropped, errors, err = send_gre_many(sock, peer, pktinfo, call_id, seq, ack, frames)
        stats.sent += sent
        if dropped:
            stats.send_dropped += dropped
        if errors:
            stats.send_errors += errors
            log.debug("GRE send to %s failed %d times: %s", ipaddress.IPv4Address(peer), errors,
                      os.strerror(err))
        return int(sent)

    def _send_failed(self, peer: str, exc: OSError) -> bool:
        if _is_drop(exc):
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
        if EXT is not None:
            self._read_batches(sock, now)
            return
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

    def _read_batches(self, sock: socket.socket, now: float) -> None:
        fd = sock.fileno()
        recv_gre = EXT.recv_gre  # type: ignore[union-attr]
        route_batch = self.route_batch
        budget = self.max_batch
        while budget > 0:
            want = _RECV_BATCH if budget > _RECV_BATCH else budget
            try:
                batch: list[tuple[int, bytes]] = recv_gre(fd, want)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.stats.receive_errors += 1
                log.debug("GRE receive error: %s", exc)
                return
            route_batch(batch, now)
            if self._sock is None:  # a handler closed us
                return
            if len(batch) < want:
                return
            budget -= want

    def _halted(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        if self._sock is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self._calls.clear()
        self._runs.clear()


def _is_drop(exc: OSError) -> bool:
    # A full socket buffer (or an interrupted call) is a drop, as on any datagram path;
    # anything else is an error.
    return isinstance(exc, (BlockingIOError, InterruptedError)) or exc.errno == errno.ENOBUFS


def send_gre_many(sock: socket.socket, peer: int, pktinfo: bytes | None, call_id: int, seq: int, ack: int,
                  frames: Sequence[Buffer]) -> tuple[int, int, int, int]:
    """The pure twin of the compiled ``send_gre_many``: one ``sendmsg`` per frame, header
    (:func:`data_header`) and frame as two parts; ``(sent, dropped, errors, last errno)``, a
    refusal counted as dropped for a full buffer (EAGAIN, ENOBUFS, EINTR), else as an error."""
    address = (socket.inet_ntoa(peer.to_bytes(4, "big")), 0)
    ancillary = [] if pktinfo is None else [(socket.IPPROTO_IP, _IP_PKTINFO, pktinfo)]
    sent = dropped = errors = last = 0
    for k, frame in enumerate(frames):
        try:
            sock.sendmsg([data_header(call_id, len(frame), seq + k, ack), frame], ancillary, 0, address)
        except OSError as exc:
            if _is_drop(exc):
                dropped += 1
            else:
                errors += 1
                last = exc.errno or 0
            continue
        sent += 1
    return sent, dropped, errors, last
