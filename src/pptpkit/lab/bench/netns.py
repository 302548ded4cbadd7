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
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

from pyroute2 import IPRoute, netns

from pptpkit.lab.netns import NETNS_DIR, enter, inside, pids_in

__all__ = ["CLIENT_ADDRESS", "SERVER_ADDRESS", "BenchNet", "enter", "inside"]

SERVER_ADDRESS: Final = "192.0.2.1"
CLIENT_ADDRESS: Final = "192.0.2.2"
_PREFIX: Final = 24


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
                client_fd = os.open(NETNS_DIR / net.client, os.O_RDONLY)
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
            for pid in pids_in(name):
                if pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError, FileNotFoundError):
                netns.remove(name)

    def __enter__(self) -> BenchNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
