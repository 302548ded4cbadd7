"""Named network namespaces (``ip netns``'s ``/run/netns/NAME``) without the ``ip`` tool.

``setns`` moves only the calling thread, so :func:`inside` lets one process hold sockets in
several namespaces; :func:`enter` is also what a child calls before ``exec`` (``preexec_fn``).
The demo, the benchmarks and the tests share these.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["NETNS_DIR", "enter", "inside", "listening", "pids_in"]

NETNS_DIR: Final = Path("/run/netns")
_CLONE_NEWNET: Final = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move the calling thread (for a fresh process: the process) into namespace ``name``."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with the calling thread in namespace ``name``; sockets opened stay there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def pids_in(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (the same test as ``ip netns pids``)."""
    try:
        want = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            found.append(int(entry))
    return found


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the network namespace of process ``pid``."""
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    for line in table.splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False
