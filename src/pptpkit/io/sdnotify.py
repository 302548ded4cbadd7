"""systemd's readiness protocol (sd_notify): one datagram of ``KEY=value`` lines to the unix
socket named by ``$NOTIFY_SOCKET``.

A ``Type=notify`` service is considered started when it says ``READY=1``, so the server says it
once it listens and the client once its tunnel is up, and both say ``STATUS=...`` with what
they are doing.  Without ``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op.  The
protocol is a few lines, so it is written here rather than pulled in as a dependency.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``, ``"STOPPING=1"``, ...); True when a
    service manager was told.  Failures are not errors: readiness is a courtesy."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    message = "\n".join(s.replace("\n", " ") for s in states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError:
        return False
    return True
