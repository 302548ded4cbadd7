"""Our own fast TCP sender and receiver (no iperf3 needed), with a checksum of the stream.

Each end is a thread placed in its namespace with :func:`~pptpkit.lab.netns.inside`; both
spend their time in ``sendall``/``recv_into`` on 256 KiB buffers, which release the GIL, so
the two threads of one process do not slow each other down measurably.  The sender repeats one
pseudo-random block; both ends fold what they sent/received into Adler-32 and the receiver's
figure is the rate between its first and last byte.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from dataclasses import dataclass

from pptpkit.lab.netns import inside

__all__ = ["FlowResult", "measure_flow"]

_BLOCK = 256 * 1024
_PORT = 5201


@dataclass(frozen=True, slots=True)
class FlowResult:
    """One transfer: octets and checksums at both ends, receiver-side duration and rate."""

    sent: int
    received: int
    sent_checksum: int
    received_checksum: int
    seconds: float

    @property
    def mbit_s(self) -> float:
        return self.received * 8 / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def intact(self) -> bool:
        return self.sent == self.received and self.sent_checksum == self.received_checksum


def _pattern() -> bytes:
    # Incompressible, and the same every run; the exact bytes do not matter.
    return bytes(zlib.crc32(i.to_bytes(4, "big")) & 0xFF for i in range(_BLOCK))


def measure_flow(sender_ns: str, receiver_ns: str, address: str, seconds: float,
                 *, port: int = _PORT, timeout: float = 30.0) -> FlowResult:
    """Send to ``address:port`` for ``seconds`` from ``sender_ns``; receive in ``receiver_ns``."""
    ready = threading.Event()
    out: dict[str, object] = {}

    def receiver() -> None:
        try:
            with inside(receiver_ns):
                lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with lsock:
                lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                lsock.bind(("0.0.0.0", port))
                lsock.listen(1)
                lsock.settimeout(timeout)
                ready.set()
                conn, _ = lsock.accept()
            with conn:
                conn.settimeout(timeout)
                buf = bytearray(_BLOCK)
                view = memoryview(buf)
                total = 0
                csum = 1
                first = last = 0.0
                while True:
                    n = conn.recv_into(buf)
                    if not n:
                        break
                    if not total:
                        first = time.monotonic()
                    total += n
                    csum = zlib.adler32(view[:n], csum)
                    last = time.monotonic()
                out.update(received=total, rsum=csum, seconds=last - first)
        except Exception as exc:  # reported by the caller
            out["error"] = exc
            ready.set()

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    if not ready.wait(timeout) or "error" in out:
        raise RuntimeError(f"receiver did not start: {out.get('error')}")
    block = _pattern()
    with inside(sender_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sent = 0
    ssum = 1
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.sendall(block)
            sent += _BLOCK
            ssum = zlib.adler32(block, ssum)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while sock.recv(4096):
                pass
    finally:
        sock.close()
    thread.join(timeout)
    if "error" in out:
        raise RuntimeError(f"receiver failed: {out['error']}")
    if thread.is_alive():
        raise RuntimeError("receiver did not finish")
    return FlowResult(sent=sent, received=int(out["received"]),  # type: ignore[call-overload]
                      sent_checksum=ssum, received_checksum=int(out["rsum"]),  # type: ignore[call-overload]
                      seconds=float(out["seconds"]))  # type: ignore[arg-type]

