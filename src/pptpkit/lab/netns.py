"""The one network-namespace lab of the demo, the benchmarks and the tests.

Two layers:

* Primitives on named namespaces (``ip netns``'s ``/run/netns/NAME``): :func:`enter`,
  :func:`inside`, :func:`pids_in`, :func:`listening`.  ``setns`` moves only the calling thread, so
  :func:`inside` lets one process hold sockets in several namespaces (the benchmark's sender and
  receiver are two threads); :func:`enter` is also what a child calls before ``exec``
  (``preexec_fn``) or a process first thing (``--netns NAME``).
* :class:`NetnsLab`: namespaces with names unique to this process, veth pairs between them and
  the processes started inside, torn down as a whole by :meth:`NetnsLab.close` (or leaving
  ``with``, also after a failure): every process it started or that lives in one of its
  namespaces is killed, then the namespaces are deleted, which takes their veths, TUNs and
  sockets with them.  :meth:`NetnsLab.add_two_hosts` is the topology all three users need: a
  server and a client namespace joined by one veth pair.

Namespaces and links are made with pyroute2 and ``setns``, never the ``ip`` tool: the demo and
the benchmarks run from an installed package.  Veth ends are created inside the namespaces, so
the root namespace never sees an interface, address or route; only TEST-NET addresses
(RFC 5737) are accepted.  :meth:`NetnsLab.ip`, :meth:`NetnsLab.run` and :meth:`NetnsLab.popen`
do shell out to ``ip``: they are the tests' plumbing (``ip netns exec`` also gives the child
the namespace's own ``/sys``), and the library itself never calls them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CLIENT_ADDRESS",
    "NETNS_DIR",
    "SERVER_ADDRESS",
    "TEST_NETS",
    "NetnsLab",
    "TwoHosts",
    "enter",
    "inside",
    "is_test_net",
    "listening",
    "namespace_exists",
    "pids_in",
    "two_hosts",
]

NETNS_DIR: Final = Path("/run/netns")
TEST_NETS: Final = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
# The underlay of add_two_hosts (TEST-NET-1); the demo and the benchmarks use these.
SERVER_ADDRESS: Final = "192.0.2.1"
CLIENT_ADDRESS: Final = "192.0.2.2"

_CLONE_NEWNET: Final = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# Two labs of one process (a test and its fixture) must never pick the same names.
_counter = itertools.count(1)


# -- primitives ----------------------------------------------------------------------------------


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


def is_test_net(address: str) -> bool:
    """Whether ``address`` (with or without a prefix length) lies in a TEST-NET block."""
    ip = ipaddress.ip_interface(address).ip
    return any(ip in net for net in TEST_NETS)


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


# -- the lab -------------------------------------------------------------------------------------


class NetnsLab:
    """A set of namespaces and processes that is torn down as a whole."""

    def __init__(self, tag: str = "pk") -> None:
        self.prefix = f"{tag}{os.getpid()}-{next(_counter)}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------------------

    def add_namespace(self, suffix: str = "", *, name: str | None = None) -> str:
        """A new namespace with its loopback up; its name (``name``, else one made from this
        lab's prefix) is returned."""
        from pyroute2 import IPRoute, netns

        if name is None:
            name = f"{self.prefix}-{len(self.namespaces)}{suffix}"
        netns.create(name)
        # Recorded before configuring, so close() removes it even if that fails.
        self.namespaces.append(name)
        with inside(name), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return name

    def add_veth(
        self,
        ns_a: str,
        ns_b: str,
        *,
        addr_a: str = "192.0.2.1/24",
        addr_b: str = "192.0.2.2/24",
        name_a: str = "veth-a",
        name_b: str = "veth-b",
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """A veth pair ``name_a`` in ``ns_a`` <-> ``name_b`` in ``ns_b``, addressed and up."""
        from pyroute2 import IPRoute

        for addr in (addr_a, addr_b):
            if not is_test_net(addr):
                raise ValueError(f"{addr} is not a TEST-NET address")
        with inside(ns_a), IPRoute() as ipr:
            ipr.link("add", ifname=name_a, kind="veth", peer=name_b)
            fd = os.open(NETNS_DIR / ns_b, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("set", index=ipr.link_lookup(ifname=name_b)[0], net_ns_fd=fd)
            finally:
                os.close(fd)
            _configure(ipr, name_a, addr_a, mtu)
        with inside(ns_b), IPRoute() as ipr:
            _configure(ipr, name_b, addr_b, mtu)
        return name_a, name_b

    def add_two_hosts(
        self,
        server: str = SERVER_ADDRESS,
        client: str = CLIENT_ADDRESS,
        *,
        server_if: str = "srv0",
        client_if: str = "cli0",
        prefixlen: int = 24,
        mtu: int | None = None,
        names: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """A server and a client namespace (suffixes ``s``, ``c``, or exactly ``names``) joined by
        one veth pair."""
        server_ns = self.add_namespace("s", name=names[0] if names else None)
        client_ns = self.add_namespace("c", name=names[1] if names else None)
        self.add_veth(server_ns, client_ns, addr_a=f"{server}/{prefixlen}",
                      addr_b=f"{client}/{prefixlen}", name_a=server_if, name_b=client_if, mtu=mtu)
        return server_ns, client_ns

    def ip(self, ns: str, *args: str) -> str:
        """``ip -n NS ARGS`` (test plumbing; the library itself never shells out)."""
        return subprocess.run(
            ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
        ).stdout

    # -- running ----------------------------------------------------------------------------------

    def run(
        self, ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            check=check,
            timeout=timeout,
            capture_output=True,
            text=True,
            **kw,
        )

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process inside ``ns`` in its own session; it is killed on close."""
        kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.processes.append(proc)
        return proc

    def track(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """Kill ``proc`` on close too (for processes started by other helpers)."""
        self.processes.append(proc)
        return proc

    # -- teardown ---------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Kill, delete, and return the namespaces that could not be removed (idempotent)."""
        from pyroute2 import netns

        for proc in self.processes:
            _kill_session(proc)
        for ns in self.namespaces:
            # A process may fork while we kill; a few rounds catch its children too.
            for _ in range(50):
                pids = [p for p in pids_in(ns) if p != os.getpid()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.02)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.processes.clear()
        for ns in self.namespaces:
            with contextlib.suppress(OSError):
                netns.remove(ns)
        left = [ns for ns in self.namespaces if namespace_exists(ns)]
        self.namespaces.clear()
        return left

    def leftovers(self) -> list[str]:
        """Namespaces with this lab's prefix that still exist (should be empty after close)."""
        if not NETNS_DIR.exists():
            return []
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(self.prefix + "-"))


def _configure(ipr: Any, ifname: str, address: str, mtu: int | None) -> None:
    index = ipr.link_lookup(ifname=ifname)[0]
    iface = ipaddress.ip_interface(address)
    ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    if mtu is None:
        ipr.link("set", index=index, state="up")
    else:
        ipr.link("set", index=index, state="up", mtu=mtu)


def _kill_session(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


@dataclass(frozen=True, slots=True)
class TwoHosts:
    """What :func:`two_hosts` built: the lab and its server and client namespace names."""

    lab: NetnsLab
    server: str
    client: str


@contextlib.contextmanager
def two_hosts(
    tag: str,
    server: str = SERVER_ADDRESS,
    client: str = CLIENT_ADDRESS,
    *,
    server_if: str = "srv0",
    client_if: str = "cli0",
    mtu: int | None = None,
) -> Iterator[TwoHosts]:
    """A lab with :meth:`NetnsLab.add_two_hosts` for a ``with`` block, closed on leaving it."""
    with NetnsLab(tag) as lab:
        server_ns, client_ns = lab.add_two_hosts(server, client, server_if=server_if,
                                                 client_if=client_if, mtu=mtu)
        yield TwoHosts(lab, server_ns, client_ns)
