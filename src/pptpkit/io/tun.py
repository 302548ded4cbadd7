"""A Linux TUN device (IP packets, no packet-information header) on the asyncio loop.

The device belongs to the network namespace that is current when it is opened, and it exists
exactly as long as our file descriptor does: :meth:`TunDevice.close` removes the interface (and
with it every address and route the kernel had on it).

With ``offload=True`` the device carries a virtio-net header on every packet and lets the
kernel batch both directions (:mod:`pptpkit.io.offload`): reads may be TCP super-segments of up to
64 KiB, which we cut into MSS-sized packets before ``on_packet`` sees them (or ``on_packets``
sees them as one list: the data planes hand a whole read to the link's batch path); writes are queued and
flushed once per loop iteration, consecutive segments of one TCP flow merged into one write, so
the kernel runs its receive path once per batch instead of once per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pptpkit.errors import DecodeError
from pptpkit.io.offload import (
    MAX_QUEUE,
    VNET_HDR_SIZE,
    ZERO_VNET_HDR,
    Coalescer,
    OffloadStats,
    VnetHeader,
    segment,
)

__all__ = ["TunDevice", "TunStats"]

log = logging.getLogger(__name__)

_TUNSETIFF: Final = 0x400454CA
_IFF_TUN: Final = 0x0001
_IFF_NO_PI: Final = 0x1000
_IFF_VNET_HDR: Final = 0x4000
_TUNSETOFFLOAD: Final = 0x400454D0
_TUN_F_CSUM: Final = 0x01
_TUN_F_TSO4: Final = 0x02
_TUN_F_TSO6: Final = 0x04
_TUN_F_TSO_ECN: Final = 0x08
_OFFLOADS: Final = _TUN_F_CSUM | _TUN_F_TSO4 | _TUN_F_TSO6 | _TUN_F_TSO_ECN
_IFNAMSIZ: Final = 16
_IFREQ: Final = struct.Struct(f"{_IFNAMSIZ}sH22x")
# A TUN read returns one whole packet; a buffer of the largest IP datagram never truncates one.
_MAX_PACKET: Final = 65535
# With offload a read is a virtio-net header and a super-segment; 64 KiB of IP plus the header
# is the most TSO hands over, and a read that fills this whole buffer is counted as truncated.
_MAX_OFFLOAD_READ: Final = 2 * 65536


@dataclass(slots=True)
class TunStats:
    received: int = 0  # IP packets delivered to on_packet (after segmentation)
    sent: int = 0  # IP packets the kernel accepted (segments inside a merged write included)
    write_errors: int = 0  # IP packets the kernel refused (or written to a closed device)
    read_errors: int = 0
    # Offload only:
    reads: int = 0  # read() calls that returned a packet
    writes: int = 0  # write() system calls (a merged write counts once)
    read_dropped: int = 0  # reads dropped: malformed or truncated super-segments, unknown GSO
    gso_write_fallbacks: int = 0  # merged writes the kernel refused, then sent segment by segment


class TunDevice:
    """An open TUN interface.  Use :meth:`open`; then :meth:`start` to receive packets.

    With ``offload`` (see :meth:`open`), :meth:`write` queues and returns True; the queue is
    written by :meth:`flush`, scheduled with ``call_soon`` on the first queued packet (or at
    once when there is no running loop, or when :data:`pptpkit.io.offload.MAX_QUEUE` packets are
    queued).  What the kernel then refuses is counted in ``stats.write_errors``.  Counters of
    the segmenter and coalescer are in ``offload_stats``.
    """

    def __init__(self, fd: int, name: str, *, offload: bool = False) -> None:
        self.fd: int | None = fd
        self.name = name
        self.offload = offload
        self.stats = TunStats()
        self.offload_stats = OffloadStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_packets: Callable[[list[bytes]], object] | None = None
        self._max_batch = 64
        self._buf = bytearray(_MAX_OFFLOAD_READ if offload else _MAX_PACKET)
        self._coalescer = Coalescer(self.offload_stats)
        self._flush_handle: asyncio.Handle | None = None
        #: Called once, with the error, when the interface disappears under the open
        #: descriptor (``ip link del``: reads fail with EBADFD and the device is dead for good).
        self.on_lost: Callable[[OSError], None] | None = None
        if offload:
            # Instance attributes shadow the plain methods, so the plain device pays nothing.
            self.write = self._write_offload  # type: ignore[method-assign]
            self._on_readable = self._on_readable_offload  # type: ignore[method-assign]

    @classmethod
    def open(cls, name: str = "pptp%d", *, offload: bool = False) -> TunDevice:
        """Create the interface; ``%d`` in ``name`` lets the kernel pick the first free number.

        ``offload``: ask for the virtio-net header and checksum/TSO offloads; a kernel that
        refuses either gives a plain device (``device.offload`` tells which one this is).
        """
        raw = name.encode()
        if not raw or len(raw) >= _IFNAMSIZ:
            raise ValueError(f"bad interface name {name!r}")
        if offload:
            try:
                return cls._open(raw, True)
            except OSError as exc:
                log.debug("TUN offloads unavailable (%s); using a plain TUN", exc)
        return cls._open(raw, False)

    @classmethod
    def _open(cls, raw: bytes, offload: bool) -> TunDevice:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = _IFF_TUN | _IFF_NO_PI | (_IFF_VNET_HDR if offload else 0)
            ifr = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw, flags))
            if offload:
                fcntl.ioctl(fd, _TUNSETOFFLOAD, _OFFLOADS)
        except BaseException:
            os.close(fd)
            raise
        actual = _IFREQ.unpack(ifr)[0].split(b"\0", 1)[0].decode()
        return cls(fd, actual, offload=offload)

    @property
    def closed(self) -> bool:
        return self.fd is None

    def start(
        self,
        on_packet: Callable[[bytes], object],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 64,
        on_packets: Callable[[list[bytes]], object] | None = None,
    ) -> None:
        """Deliver every packet the kernel routes into the interface to ``on_packet``.

        Each wakeup reads until EAGAIN, at most ``max_batch`` packets, so that a flood from
        local applications cannot starve the loop.  With ``on_packets``, each read goes to it
        instead, as one list (the segments of a super-segment, or the one packet read), so the
        layers below can take a whole batch per call; ``on_packet`` is then not called.
        """
        if self.fd is None:
            raise ValueError("TUN device is closed")
        self.stop()
        self._loop = loop or asyncio.get_running_loop()
        self._max_batch = max_batch
        # The readers hand over one list per read; a caller of single packets gets them in turn.
        self._on_packets = on_packets if on_packets is not None else _one_by_one(on_packet)
        self._loop.add_reader(self.fd, self._on_readable)

    def stop(self) -> None:
        """Stop reading (the interface stays)."""
        if self._loop is not None and self.fd is not None:
            self._loop.remove_reader(self.fd)
        # A flush already scheduled stays valid: it only needs the descriptor.
        self._loop = None

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Hand one IP packet to the kernel as if it arrived on the interface.

        The kernel drops rather than blocks when it cannot take a packet; errors (a malformed
        packet, an interface that is down) are counted, never raised.
        """
        if self.fd is None:
            self.stats.write_errors += 1
            return False
        try:
            os.write(self.fd, packet)
        except OSError as exc:
            self.stats.write_errors += 1
            log.debug("TUN %s write failed: %s", self.name, exc)
            return False
        self.stats.sent += 1
        return True

    def write_many(self, packets: list[bytes]) -> None:
        """:meth:`write` of each packet, in order, as one call (the receive path's batch sink).

        With offload the run joins the coalescer's queue in one step (the flush is scheduled
        once, as for a single packet); a run that would overfill the queue goes packet by
        packet, so the queue's cap and its flush-when-full hold exactly as for :meth:`write`.
        """
        if not self.offload:
            write = self.write
            for packet in packets:
                write(packet)
            return
        coalescer = self._coalescer
        if self.fd is None or len(coalescer) + len(packets) >= MAX_QUEUE:
            write = self._write_offload
            for packet in packets:
                write(packet)
            return
        coalescer.feed_many(packets)
        if self._flush_handle is None:
            self._schedule_flush()

    # -- offload path ------------------------------------------------------------------------------

    def _write_offload(self, packet: bytes | bytearray | memoryview) -> bool:
        """Queue one IP packet; the queue is flushed (merged) once per loop iteration."""
        if self.fd is None:
            self.stats.write_errors += 1
            return False
        if self._coalescer.feed(bytes(packet) if not isinstance(packet, bytes) else packet):
            self.flush()
        elif self._flush_handle is None:
            self._schedule_flush()
        return True

    def _schedule_flush(self) -> None:
        """Flush once this loop iteration is done (the first packet queued since the last)."""
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # No loop to defer to (a synchronous caller): write now.
                self.flush()
                return
        self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued (merging TCP runs); a no-op without offload or queue."""
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        fd = self.fd
        if fd is None or not len(self._coalescer):
            self._coalescer.clear()
            return
        stats = self.stats
        writev = os.writev
        for vnet, parts, segments in self._coalescer.flush():
            try:
                writev(fd, [vnet, *parts])
            except OSError as exc:
                if vnet is ZERO_VNET_HDR:
                    stats.write_errors += 1
                    log.debug("TUN %s write failed: %s", self.name, exc)
                    continue
                # The kernel refused the super-segment: hand it its segments one by one.
                stats.gso_write_fallbacks += 1
                log.debug("TUN %s merged write of %d segments failed: %s", self.name, len(segments), exc)
                for seg in segments:
                    try:
                        writev(fd, [ZERO_VNET_HDR, seg])
                    except OSError:
                        stats.write_errors += 1
                    else:
                        stats.writes += 1
                        stats.sent += 1
                continue
            stats.writes += 1
            stats.sent += len(segments)

    def _on_readable_offload(self) -> None:
        buf = self._buf
        view = memoryview(buf)
        stats = self.stats
        ostats = self.offload_stats
        for _ in range(self._max_batch):
            fd = self.fd
            if fd is None:
                return
            try:
                n = os.readv(fd, [buf])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._read_failed(exc)
                return
            stats.reads += 1
            if n <= VNET_HDR_SIZE or n >= len(buf):
                stats.read_dropped += 1
                continue
            if buf[1] == 0 and not buf[0] & 1:
                # Neither GSO nor a checksum to finish: the common case for forwarded packets.
                packets = [bytes(view[VNET_HDR_SIZE:n])]
            else:
                try:
                    packets = segment(VnetHeader.decode(buf), bytes(view[VNET_HDR_SIZE:n]), ostats)
                except DecodeError as exc:
                    ostats.malformed_dropped += 1
                    stats.read_dropped += 1
                    log.debug("TUN %s: dropped a malformed offload packet: %s", self.name, exc)
                    continue
                if not packets:
                    stats.read_dropped += 1
                    continue
            stats.received += len(packets)
            on_packets = self._on_packets
            if on_packets is not None:
                on_packets(packets)

    def _on_readable(self) -> None:
        buf = self._buf
        for _ in range(self._max_batch):
            fd = self.fd
            if fd is None:
                return
            try:
                n = os.readv(fd, [buf])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._read_failed(exc)
                return
            self.stats.received += 1
            if self._on_packets is not None:
                self._on_packets([bytes(buf[:n])])

    def _read_failed(self, exc: OSError) -> None:
        self.stats.read_errors += 1
        log.debug("TUN %s read failed: %s", self.name, exc)
        if exc.errno == errno.EBADFD:
            # The interface was torn down under us.
            self.stop()
            on_lost, self.on_lost = self.on_lost, None
            if on_lost is not None:
                on_lost(exc)

    def close(self) -> None:
        """Close the descriptor; the kernel removes the interface with it.  Queued writes are
        dropped."""
        self.stop()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._coalescer.clear()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_by_one(on_packet: Callable[[bytes], object]) -> Callable[[list[bytes]], None]:
    """A reader's lists handed to a receiver of single packets, in order."""

    def each(packets: list[bytes]) -> None:
        for packet in packets:
            on_packet(packet)

    return each
