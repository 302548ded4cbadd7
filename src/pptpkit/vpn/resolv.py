"""``--dns``: point resolv.conf at the DNS servers the server pushed, and put it back after.

The file is rewritten *in place* (truncate + write), never replaced by a rename: in containers
/etc/resolv.conf is often a bind mount (a rename over it fails with EBUSY) and elsewhere a
symlink into a resolver's run directory (a rename would replace the link by a plain file).

The original text is kept in memory and also in ``PATH.pptpkit-orig``, so that a run killed
too hard to clean up (SIGKILL, power) is repaired by the next run: :meth:`ResolvConf.recover`
puts the saved original back when the file still carries our marker line.  A file that someone
else rewrote while we were up is left alone (their change wins) and only the backup goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final

from pptpkit.errors import PptpkitError

__all__ = ["MARKER", "MAX_NAMESERVERS", "ResolvConf", "ResolvConfError", "render_resolv_conf"]

log = logging.getLogger(__name__)

#: The first line of every file we write; :meth:`ResolvConf.recover` trusts nothing else.
MARKER: Final = "# written by pptpkit connect --dns"
#: glibc reads at most three nameserver lines (MAXNS); more would be ignored silently.
MAX_NAMESERVERS: Final = 3
#: resolv.conf is a few lines; a huge one is not a resolver config we should copy around.
MAX_ORIGINAL: Final = 1 << 20
_KEEP: Final = ("search", "domain", "options", "sortlist")


class ResolvConfError(PptpkitError):
    """resolv.conf could not be read, written or restored."""


def render_resolv_conf(servers: Sequence[IPv4Address], original: str, *, backup: str) -> str:
    """Our file: the marker, the pushed nameservers (at most three), then the original's
    search/domain/options lines so short names and resolver options keep working."""
    if not servers:
        raise ResolvConfError("no DNS servers to write")
    lines = [MARKER, f"# the original is restored on exit (saved in {backup})"]
    lines += [f"nameserver {s}" for s in list(dict.fromkeys(servers))[:MAX_NAMESERVERS]]
    for line in original.splitlines():
        word = line.split(maxsplit=1)[0] if line.split() else ""
        if word in _KEEP:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _write_in_place(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = text.encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


class ResolvConf:
    """One resolv.conf (``path``), with :meth:`apply` / :meth:`restore`."""

    def __init__(self, path: str | os.PathLike[str] = "/etc/resolv.conf") -> None:
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".pptpkit-orig")
        self._original: str | None = None
        self._existed = True
        self._written: str | None = None

    @property
    def active(self) -> bool:
        """True while our version is in place (between apply and restore)."""
        return self._written is not None

    def _read(self, path: Path) -> str | None:
        try:
            with path.open("rb") as f:
                data = f.read(MAX_ORIGINAL + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResolvConfError(f"cannot read {path}: {exc}") from exc
        if len(data) > MAX_ORIGINAL:
            raise ResolvConfError(f"{path} is larger than {MAX_ORIGINAL} bytes: not touching it")
        return data.decode(errors="replace")

    def recover(self) -> bool:
        """Undo what a previous run left behind (see the module doc); True if it did."""
        saved = self._read(self.backup)
        if saved is None:
            return False
        current = self._read(self.path)
        restored = False
        if current is not None and current.startswith(MARKER):
            try:
                _write_in_place(self.path, saved)
            except OSError as exc:
                raise ResolvConfError(f"cannot restore {self.path}: {exc}") from exc
            log.warning("restored %s left behind by an earlier run", self.path)
            restored = True
        with contextlib.suppress(FileNotFoundError):
            self.backup.unlink()
        return restored

    def apply(self, servers: Sequence[IPv4Address]) -> None:
        """Write ``servers``; the first call remembers the original, later ones (a new link
        after a reconnect) only replace our own text."""
        if self._written is None:
            original = self._read(self.path)
            self._existed = original is not None
            self._original = original or ""
            try:
                _write_in_place(self.backup, self._original)
            except OSError as exc:
                raise ResolvConfError(f"cannot save {self.path} to {self.backup}: {exc}") from exc
        assert self._original is not None
        text = render_resolv_conf(servers, self._original, backup=str(self.backup))
        try:
            _write_in_place(self.path, text)
        except OSError as exc:
            if self._written is None:
                with contextlib.suppress(OSError):
                    self.backup.unlink()
            raise ResolvConfError(f"cannot write {self.path}: {exc}") from exc
        self._written = text
        log.info("%s: nameservers %s", self.path, ", ".join(str(s) for s in servers[:MAX_NAMESERVERS]))

    def restore(self) -> None:
        """Put the original back (idempotent).  If the file changed since we wrote it, the
        newer text stays and only our backup is removed."""
        if self._written is None:
            return
        written, self._written = self._written, None
        current = self._read(self.path)
        try:
            if current == written:
                if self._existed:
                    assert self._original is not None
                    _write_in_place(self.path, self._original)
                else:
                    self.path.unlink()
                log.info("%s restored", self.path)
            else:
                log.warning("%s was changed by someone else while the tunnel was up: leaving it",
                            self.path)
        except OSError as exc:
            # The backup stays: the next run's recover() can still put the original back.
            raise ResolvConfError(f"cannot restore {self.path}: {exc}") from exc
        with contextlib.suppress(FileNotFoundError):
            self.backup.unlink()
        self._original = None
