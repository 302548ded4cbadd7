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

__all__ = [
    "Agent",
    "AgentError",
    "Command",
    "JsonLineProcess",
    "ProcessSample",
    "pptpkit_argv",
    "private_file",
    "sample_process",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def pptpkit_argv(*args: str) -> list[str]:
    """``pptpkit ARGS`` as the interpreter running the benchmark runs it (``python -m
    pptpkit``): the same code, and the same start-up cost as the console script."""
    return [sys.executable, "-m", "pptpkit", *args]


def private_file(directory: str, name: str, text: str) -> str:
    """A new file only we can read (secrets, passwords for the commands under test)."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class AgentError(RuntimeError):
    """An agent failed, exited or did not answer in time (its stderr tail is in the message)."""


class JsonLineProcess:
    """A child process whose stdout is JSON lines, each stamped with ``time.monotonic()`` as it is
    read by a thread of its own; its stderr kept in a temporary file for error messages."""

    def __init__(self, name: str, argv: Sequence[str], *, stdin: int, env: dict[str, str] | None,
                 netns: str | None = None) -> None:
        self.name = name
        # Kept open for the process's lifetime, closed in kill().
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        #: Taken just before the fork: ``stamp - started`` includes the interpreter's start-up.
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=self._stderr,
            # setns in the child, not ``ip netns exec``: no extra exec in the measured time.
            preexec_fn=(lambda: enter(netns)) if netns is not None else None,
            start_new_session=True, env={**os.environ, **env} if env else None,
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
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def wait_stamped(self, name: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """The first ``name`` event and when it was read; :class:`AgentError` when the process
        reports an error, exits first, or says nothing in time."""
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
            event = item[1]
            if event.get("event") == "error":
                raise AgentError(f"{self.name}: {event.get('error')}\n{self.stderr_tail()}")
            if event.get("event") == name:
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
                self._events.put(None)  # keep the end marker for the waiters
                return items
            items.append(item)

    def stderr_size(self) -> int:
        """Octets written to stderr so far (the log of a server)."""
        return os.fstat(self._stderr.fileno()).st_size

    def stderr_lines(self) -> int:
        self._stderr.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: self._stderr.read(1 << 20), b""))

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._stderr.close()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Agent(JsonLineProcess):
    """``python -m MODULE ARGS`` (default :mod:`pptpkit.lab.bench.agent`): events read as JSON
    lines, stopped by stdin EOF."""

    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None,
                 module: str = "pptpkit.lab.bench.agent") -> None:
        super().__init__(name, [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, env=env)

    def send(self, line: str) -> None:
        """One command line on the agent's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        return self.wait_stamped(name, timeout)[1]

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

    def __enter__(self) -> Agent:
        return self


class Command(JsonLineProcess):
    """A real ``pptpkit`` command started in namespace ``netns`` as a user would start it, its
    JSON-line events stamped as they are read (see :attr:`JsonLineProcess.started`)."""

    def __init__(self, name: str, netns: str, argv: Sequence[str], *,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(name, argv, stdin=subprocess.DEVNULL, env=env, netns=netns)

    def wait_event(self, name: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """The first ``name`` event and when it was read."""
        return self.wait_stamped(name, timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as a user's Ctrl-C or service stop would; its exit status (killed if it hangs)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = self.stderr_tail()
            self.kill()
            raise AgentError(f"{self.name}: still running {timeout:.0f}s after SIGTERM\n{tail}") from None

    def __enter__(self) -> Command:
        return self


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
