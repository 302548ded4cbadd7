"""Network-namespace helpers for tests (a helper module, not a test file).

A :class:`NetnsLab` creates namespaces with names unique to this process, veth pairs between them
(created directly inside the namespaces, so the root namespace never sees an interface, address or
route), runs commands inside (``ip netns exec``) and, on :meth:`NetnsLab.close` (or leaving the
``with`` block, also after a failure), kills every process it started or that lives in one of its
namespaces and deletes the namespaces.

Only TEST-NET addresses (RFC 5737) are accepted for addresses the lab configures.

:meth:`NetnsLab.inside` switches the *calling thread* into a namespace for a block, so sockets,
TUN devices and netlink sockets opened in the block belong to it; they stay there afterwards.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pptpkit.lab.netns import NETNS_DIR, inside, pids_in

TEST_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)

_counter = itertools.count(1)


def is_test_net(address: str) -> bool:
    ip = ipaddress.ip_interface(address).ip
    return any(ip in net for net in TEST_NETS)


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


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

    # -- building -----------------------------------------------------------------------------

    def add_namespace(self, suffix: str = "") -> str:
        name = f"{self.prefix}-{len(self.namespaces)}{suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, ns: str, *args: str) -> str:
        """``ip -n NS ARGS`` (test plumbing only; the library itself never shells out)."""
        return subprocess.run(
            ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
        ).stdout

    def add_veth(
        self,
        ns_a: str,
        ns_b: str,
        *,
        addr_a: str = "192.0.2.1/24",
        addr_b: str = "192.0.2.2/24",
        name_a: str = "veth-a",
        name_b: str = "veth-b",
    ) -> tuple[str, str]:
        """A veth pair ``name_a`` in ``ns_a`` <-> ``name_b`` in ``ns_b``, addressed and up."""
        for addr in (addr_a, addr_b):
            if not is_test_net(addr):
                raise ValueError(f"{addr} is not a TEST-NET address")
        self.ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
        self.ip(ns_a, "addr", "add", addr_a, "dev", name_a)
        self.ip(ns_b, "addr", "add", addr_b, "dev", name_b)
        self.ip(ns_a, "link", "set", name_a, "up")
        self.ip(ns_b, "link", "set", name_b, "up")
        return name_a, name_b

    # -- running ------------------------------------------------------------------------------

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

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.processes:
            _kill_session(proc)
        for ns in self.namespaces:
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
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces with this lab's prefix that still exist (should be empty after close)."""
        if not NETNS_DIR.exists():
            return []
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(self.prefix + "-"))


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


@contextlib.contextmanager
def two_hosts(tag: str, server: str, client: str) -> Iterator[tuple[NetnsLab, str, str]]:
    """A lab with a server and a client namespace joined by ``srv0``/``cli0`` (addresses /24);
    on leaving, nothing of it may be left behind."""
    with NetnsLab(tag) as lab:
        server_ns = lab.add_namespace("s")
        client_ns = lab.add_namespace("c")
        lab.add_veth(server_ns, client_ns, addr_a=f"{server}/24", addr_b=f"{client}/24",
                     name_a="srv0", name_b="cli0")
        yield lab, server_ns, client_ns
    assert lab.leftovers() == []
    assert not namespace_exists(server_ns) and not namespace_exists(client_ns)


def tcp_rows(ns: str) -> list[list[str]]:
    """The rows of /proc/net/tcp as seen from namespace ``ns``."""
    with inside(ns):
        table = Path("/proc/thread-self/net/tcp").read_text()
    return [line.split() for line in table.splitlines()[1:]]


def control_connections(ns: str) -> int:
    """Established TCP connections to port 1723 seen from ``ns``."""
    return sum(1 for row in tcp_rows(ns) if row[3] == "01" and row[2].endswith(":06BB"))


def managed_socket(run_dir: Path, server: str) -> Path:
    """The call manager's socket for SERVER:1723 (its name ends with the namespace's inode)."""
    found = [p for p in run_dir.glob(f"{server}:1723@*") if not p.name.endswith(".lock")]
    return found[0] if found else run_dir / f"{server}:1723@none"
