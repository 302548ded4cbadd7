"""A Linux TUN device (IP packets, no packet-information header) on the asyncio loop.

The device belongs to the network namespace that is current when it is opened, and it exists
exactly as long as our file descriptor does: :meth:`TunDevice.close` removes the interface (and
with it every address and route the kernel had on it).
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

__all__ = ["TunDevice", "TunStats"]

log = logging.getLogger(__name__)

_TUNSETIFF: Final = 0x400454CA
_IFF_TUN: Final = 0x0001
_IFF_NO_PI: Final = 0x1000
_IFNAMSIZ: Final = 16
_IFREQ: Final = struct.Struct(f"{_IFNAMSIZ}sH22x")
# A TUN read returns one whole packet; a buffer of the largest IP datagram never truncates one.
_MAX_PACKET: Final = 65535


@dataclass(slots=True)
class TunStats:
    received: int = 0
    sent: int = 0
    write_errors: int = 0
    read_errors: int = 0


class TunDevice:
    """An open TUN interface.  Use :meth:`open`; then :meth:`start` to receive packets."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd: int | None = fd
        self.name = name
        self.stats = TunStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_packet: Callable[[bytes], None] | None = None
        self._max_batch = 64
        self._buf = bytearray(_MAX_PACKET)

    @classmethod
    def open(cls, name: str = "pptp%d") -> TunDevice:
        """Create the interface; ``%d`` in ``name`` lets the kernel pick the first free number."""
        raw = name.encode()
        if not raw or len(raw) >= _IFNAMSIZ:
            raise ValueError(f"bad interface name {name!r}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw, _IFF_TUN | _IFF_NO_PI))
        except BaseException:
            os.close(fd)
            raise
        actual = _IFREQ.unpack(ifr)[0].split(b"\0", 1)[0].decode()
        return cls(fd, actual)

    @property
    def closed(self) -> bool:
        return self.fd is None

    def start(
        self,
        on_packet: Callable[[bytes], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 64,
    ) -> None:
        """Deliver every packet the kernel routes into the interface to ``on_packet``.

        Each wakeup reads until EAGAIN, at most ``max_batch`` packets, so that a flood from
        local applications cannot starve the loop.
        """
        if self.fd is None:
            raise ValueError("TUN device is closed")
        self.stop()
        self._loop = loop or asyncio.get_running_loop()
        self._on_packet = on_packet
        self._max_batch = max_batch
        self._loop.add_reader(self.fd, self._on_readable)

    def stop(self) -> None:
        """Stop reading (the interface stays)."""
        if self._loop is not None and self.fd is not None:
            self._loop.remove_reader(self.fd)
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
                self.stats.read_errors += 1
                if exc.errno == errno.EBADFD:
                    # The interface was torn down under us.
                    self.stop()
                log.debug("TUN %s read failed: %s", self.name, exc)
                return
            self.stats.received += 1
            if self._on_packet is not None:
                self._on_packet(bytes(buf[:n]))

    def close(self) -> None:
        """Close the descriptor; the kernel removes the interface with it."""
        self.stop()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
