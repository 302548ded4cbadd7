"""Network namespaces for the benchmarks: built with pyroute2 and ``setns``, always removed.

The benchmarks run from an installed package, so nothing here depends on the test helpers or
on the ``ip`` tool.  :class:`BenchNet` makes two namespaces (``server`` and ``client``) joined by
one veth pair, with TEST-NET-1 addresses (RFC 5737), and removes both on :meth:`BenchNet.close`
(or leaving ``with``), which also destroys the veth, every TUN and every socket left in them.
Processes that must live inside one get ``--netns NAME`` and call :func:`enter` first thing.

:func:`inside` moves only the *calling thread* (``setns`` is per thread), so one process can
hold sockets in both namespaces: the throughput sender and receiver run as two threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from pyroute2 import IPRoute, netns

__all__ = ["CLIENT_ADDRESS", "SERVER_ADDRESS", "BenchNet", "enter", "inside"]

_CLONE_NEWNET: Final = 0x40000000
_NETNS_DIR: Final = "/run/netns"
SERVER_ADDRESS: Final = "192.0.2.1"
CLIENT_ADDRESS: Final = "192.0.2.2"
_PREFIX: Final = 24
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move the calling thread (for a fresh process: the process) into namespace ``name``."""
    fd = os.open(os.path.join(_NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
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


def _pids_in(name: str) -> list[int]:
    try:
        want = os.stat(os.path.join(_NETNS_DIR, name))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                found.append(int(entry))
    return found


@dataclass
class BenchNet:
    """Two namespaces and a veth pair; ``server``/``client`` are the namespace names."""

    server: str
    client: str
    server_if: str = "bench-s"
    client_if: str = "bench-c"
    mtu: int = 1500

    @classmethod
    def create(cls, tag: str = "pkb", *, mtu: int = 1500) -> BenchNet:
        base = f"{tag}{os.getpid()}-{time.monotonic_ns() % 100000}"
        net = cls(server=f"{base}-s", client=f"{base}-c", mtu=mtu)
        try:
            netns.create(net.server)
            netns.create(net.client)
            with inside(net.server), IPRoute() as ipr:
                ipr.link("add", ifname=net.server_if, kind="veth", peer=net.client_if)
                peer_index = ipr.link_lookup(ifname=net.client_if)[0]
                client_fd = os.open(os.path.join(_NETNS_DIR, net.client), os.O_RDONLY)
                try:
                    ipr.link("set", index=peer_index, net_ns_fd=client_fd)
                finally:
                    os.close(client_fd)
                net._configure(ipr, net.server_if, SERVER_ADDRESS)
            with inside(net.client), IPRoute() as ipr:
                net._configure(ipr, net.client_if, CLIENT_ADDRESS)
        except BaseException:
            net.close()
            raise
        return net

    def _configure(self, ipr: IPRoute, ifname: str, address: str) -> None:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=_PREFIX)
        ipr.link("set", index=index, state="up", mtu=self.mtu)

    def close(self) -> None:
        """Kill whatever still runs in the namespaces, then delete them (idempotent)."""
        for name in (self.server, self.client):
            for pid in _pids_in(name):
                if pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError, FileNotFoundError):
                netns.remove(name)

    def __enter__(self) -> BenchNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
