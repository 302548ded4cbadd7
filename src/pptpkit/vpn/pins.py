"""Records of the host routes ``pptpkit connect`` pins, so a killed run's route is found again.

A run pins ``SERVER/32`` through the current path with the lowest free metric (see
:meth:`pptpkit.vpn.connect.Connector._pin_host_route`) and removes it when it ends.  A run
killed with SIGKILL cannot, and its route would stay for good, with the next run stacking a
second one beside it.  So each pin is recorded as a file whose name says which network
namespace, server and metric it is, holding the owner's pid; before pinning, a run removes the
routes whose owners are gone.  A route whose owner still runs is never touched, and a
network namespace's records never match another's (the namespace's inode is in the name), so
runs in containers or test namespaces sharing ``/run`` cannot remove each other's routes.

The records are an aid, not a lock: if the directory cannot be written, pinning works as
before, without recovery (said once at debug level).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_PIN_DIR", "PinRecords"]

log = logging.getLogger(__name__)

DEFAULT_PIN_DIR: Final = "/run/pptpkit/pins"


def _netns_id() -> str:
    try:
        return str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class PinRecords:
    """The pin records of this network namespace in ``directory``."""

    def __init__(self, directory: str = DEFAULT_PIN_DIR) -> None:
        self.directory = Path(directory)
        self._ns = _netns_id()

    def _path(self, server: str, metric: int) -> Path:
        return self.directory / f"{self._ns}-{server}-{metric}"

    def orphans(self, server: str) -> list[int]:
        """Metrics of ``server``'s pins whose owner is gone (their records are dropped)."""
        found = []
        prefix = f"{self._ns}-{server}-"
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return []
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            try:
                metric = int(entry.name[len(prefix):])
                pid = int(entry.read_text().strip() or "0")
            except (OSError, ValueError):
                continue
            if pid > 0 and _alive(pid):
                continue
            found.append(metric)
            with contextlib.suppress(OSError):
                entry.unlink()
        return sorted(found)

    def claim(self, server: str, metric: int) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self._path(server, metric)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(f"{os.getpid()}\n")
            tmp.replace(path)
        except OSError as exc:
            log.debug("host route pin not recorded in %s: %s", self.directory, exc)

    def release(self, server: str, metric: int) -> None:
        path = self._path(server, metric)
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
