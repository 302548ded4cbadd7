"""The tests' side of the one namespace lab (a helper module, not a test file).

The lab itself - :class:`NetnsLab`, the namespace primitives, TEST-NET enforcement - is
:mod:`pptpkit.lab.netns`, shared with the demo and the benchmarks.  What stays here is what only
tests want: :func:`two_hosts` in the ``(lab, server_ns, client_ns)`` shape the fixtures unpack,
asserting that nothing of the lab survives it, and readers of the TCP and call-manager state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pptpkit.lab import netns as lab_netns
from pptpkit.lab.netns import NetnsLab, inside, namespace_exists, pids_in

__all__ = ["NetnsLab", "control_connections", "inside", "managed_socket", "namespace_exists",
           "pids_in", "tcp_rows", "two_hosts"]


@contextlib.contextmanager
def two_hosts(tag: str, server: str, client: str) -> Iterator[tuple[NetnsLab, str, str]]:
    """A lab with a server and a client namespace joined by ``srv0``/``cli0`` (addresses /24);
    on leaving, nothing of it may be left behind."""
    with lab_netns.two_hosts(tag, server, client) as hosts:
        yield hosts.lab, hosts.server, hosts.client
    assert hosts.lab.leftovers() == []
    assert not namespace_exists(hosts.server) and not namespace_exists(hosts.client)


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
