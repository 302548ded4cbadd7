"""Child processes of a benchmark: JSON-line agents, and what /proc says about a process."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from pptpkit.lab.netns import enter

__all__ = ["Agent", "AgentError", "Command", "ProcessSample", "sample_process"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class AgentError(RuntimeError):
    """An agent failed, exited or did not answer in time (its stderr tail is in the message)."""


class Agent:
    """``python -m MODULE ARGS`` (default :mod:`pptpkit.lab.bench.agent`): events read as JSON
    lines, stopped by stdin EOF."""

    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None,
                 module: str = "pptpkit.lab.bench.agent") -> None:
        self.name = name
        # Kept open for the agent's lifetime (its stderr), closed in kill().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True, env={**os.environ, **env} if env else None,
        )
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._events.put(json.loads(line))
        self._events.put(None)

    def stderr_tail(self, limit: int = 3000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AgentError(f"{self.name}: no {name!r} within {timeout:.0f}s\n{self.stderr_tail()}")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if event is None:
                raise AgentError(f"{self.name}: exited ({self.proc.poll()}) before {name!r}\n"
                                 f"{self.stderr_tail()}")
            if event.get("event") == "error":
                raise AgentError(f"{self.name}: {event.get('error')}\n{self.stderr_tail()}")
            if event.get("event") == name:
                return event

    def send(self, line: str) -> None:
        """One command line on the agent's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def tell_stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def stop(self, event: str | None = "stats", timeout: float = 30.0) -> dict[str, Any] | None:
        """Close stdin, wait for its final ``event`` line and its exit; kill it if it hangs."""
        self.tell_stop()
        result = None
        try:
            if event is not None:
                result = self.wait_event(event, timeout)
            self.proc.wait(timeout=timeout)
        except (AgentError, subprocess.TimeoutExpired):
            self.kill()
            raise
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._stderr.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Command:
    """A real ``pptpkit`` command started in namespace ``netns`` as a user would start it, its
    JSON-line events stamped with ``time.monotonic()`` as they are read.

    ``started`` is taken just before the fork, so ``stamp - started`` includes the fork, the
    interpreter's start-up and the imports: what the user waits for.
    """

    def __init__(self, name: str, netns: str, argv: Sequence[str], *,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            # setns in the child, not ``ip netns exec``: no extra exec in the measured time.
            preexec_fn=lambda: enter(netns), start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        self._events: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp = time.monotonic()
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    self._events.put((stamp, event))
        self._events.put(None)

    def stderr_tail(self, limit: int = 3000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def wait_event(self, name: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """The first ``name`` event and when it was read; :class:`AgentError` on exit or timeout."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AgentError(f"{self.name}: no {name!r} within {timeout:.0f}s\n{self.stderr_tail()}")
            try:
                item = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                self.proc.wait()
                raise AgentError(f"{self.name}: exited ({self.proc.returncode}) before {name!r}\n"
                                 f"{self.stderr_tail()}")
            if item[1].get("event") == name:
                return item

    def drain(self) -> list[tuple[float, dict[str, Any]]]:
        """Every event read so far and not yet taken, with when it was read."""
        items: list[tuple[float, dict[str, Any]]] = []
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return items
            if item is None:
                self._events.put(None)  # keep the end marker for wait_event
                return items
            items.append(item)

    def stderr_size(self) -> int:
        """Octets written to stderr so far (the log of a server)."""
        return os.fstat(self._stderr.fileno()).st_size

    def stderr_lines(self) -> int:
        self._stderr.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: self._stderr.read(1 << 20), b""))

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as a user's Ctrl-C or service stop would; its exit status (killed if it hangs)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AgentError(f"{self.name}: still running {timeout:.0f}s after SIGTERM\n"
                             f"{self.stderr_tail()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def __enter__(self) -> Command:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self._stderr.close()


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """CPU seconds used so far (user + system) and resident memory, of one process."""

    when: float
    cpu: float
    rss: int


def sample_process(pid: int) -> ProcessSample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return ProcessSample(time.monotonic(), cpu, rss)
