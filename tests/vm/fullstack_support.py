"""Our CLI programs in the VM's host namespace, for the full-stack tests against the real pppd.

:class:`OurClient` runs ``pptpkit connect --json`` and collects its JSON events;
:class:`OurServer` runs ``pptpkit server`` in built-in mode and reads its log.  Both run from
this checkout's ``src`` (no installed package needed) inside :data:`vmlib.NAMESPACE`, with
their log in a file of the test's ``tmp_path``.  :func:`host_state` / :func:`host_leftovers`
check that nothing of ours stays behind in the namespace; :func:`ppp_protocols` and
:func:`pptp_message_types` read a capture.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmlib import HOST_ADDR, NAMESPACE, REPO, GuestVm

# The packet-capture helpers live with the interop tests; they are re-exported from here.
sys.path.insert(0, str(REPO / "tests" / "interop"))

from harness import Capture, tshark_lines, tshark_problems

from netns import pids_in

__all__ = [
    "Capture",
    "HostState",
    "OurClient",
    "OurServer",
    "ServerSession",
    "gre_call_ids",
    "host_leftovers",
    "host_state",
    "our_pids",
    "ppp_protocols",
    "pptp_message_types",
    "read_counter",
    "tshark_problems",
    "wait_for",
]

SRC = REPO / "src"
_MAX_LOG = 4 << 20  # bytes of one of our logs read back


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _read(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            return stream.read(_MAX_LOG).decode(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


class _Program:
    """One of our programs in the namespace: stderr (the log) to a file, stdout to a queue."""

    def __init__(self, vm: GuestVm, argv: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self.lines: queue.Queue[str] = queue.Queue()
        with log_path.open("wb") as log:
            self.proc = vm.host_popen(
                [sys.executable, "-m", "pptpkit", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=_env(),
                cwd=str(REPO),
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def log(self) -> str:
        return _read(self.log_path)

    def wait_log(self, pattern: str | re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log())
            if found is not None:
                return found
            if time.monotonic() > deadline or self.proc.poll() is not None:
                found = regex.search(self.log())
                if found is not None:
                    return found
                status = self.proc.poll()
                raise AssertionError(
                    f"{regex.pattern!r} not logged (exit {status}); log:\n{self.log()[-4000:]}"
                )
            time.sleep(0.1)

    def signal(self, signum: int = signal.SIGTERM, *, timeout: float = 15.0) -> int:
        """Send ``signum`` and wait for the exit status (SIGKILL and a failure if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running {timeout} s later; log:\n{self.log()[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


class OurClient(_Program):
    """``pptpkit connect --json -v``; JSON events (``up``, ``down``, ``retry``) from stdout."""

    def __init__(self, vm: GuestVm, server: str, password_file: Path, log_path: Path, *flags: str) -> None:
        argv = ["connect", "--json", "-v", "--user", "alice", "--password-file", str(password_file), *flags]
        super().__init__(vm, [*argv, server], log_path)

    def next_event(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no event within {timeout} s (exit status {self.proc.poll()}); log:\n{self.log()[-4000:]}"
            ) from None
        event = json.loads(line)
        assert isinstance(event, dict), line
        return event

    def wait_up(self, timeout: float = 30.0) -> dict[str, Any]:
        event = self.next_event(timeout)
        assert event["event"] == "up", f"{event}; log:\n{self.log()[-4000:]}"
        return event


@dataclass(frozen=True)
class ServerSession:
    user: str
    peer: str
    address: str
    local: str
    mppe: str
    interface: str


SESSION_UP = re.compile(
    r"session up: user '(?P<user>[^']*)', peer (?P<peer>\S+), address (?P<address>\S+), "
    r"local (?P<local>\S+), (?P<mppe>[^,]+), interface (?P<interface>\S+),"
)


class OurServer(_Program):
    """``pptpkit server -v`` in built-in mode, listening on :data:`HOST_ADDR` only."""

    def __init__(self, vm: GuestVm, secrets: Path, log_path: Path, *flags: str) -> None:
        argv = [
            "server", "-v", "--listen", HOST_ADDR, "--local-ip", "198.51.100.1",
            "--remote-ip", "198.51.100.10-20", "--secrets", str(secrets), "--name", "pptpd",
            "--ctl-socket", str(log_path.parent / "ctl.sock"), *flags,
        ]  # fmt: skip
        super().__init__(vm, argv, log_path)
        self.wait_log(f"listening on {HOST_ADDR}:1723", timeout=20)

    def wait_session_up(self, *, after: int = 0, timeout: float = 20.0) -> ServerSession:
        """The ``after``-th (0-based) session that came up."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(SESSION_UP.finditer(self.log()))
            if len(found) > after:
                return ServerSession(**found[after].groupdict())
            if time.monotonic() > deadline:
                raise AssertionError(f"no session up #{after}; log:\n{self.log()[-4000:]}")
            time.sleep(0.1)


# -- the host namespace ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostState:
    links: frozenset[str]
    routes: tuple[str, ...]


def host_state(vm: GuestVm) -> HostState:
    links = vm.host(["ip", "-o", "link", "show"]).stdout.decode()
    names = frozenset(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line)
    routes = vm.host(["ip", "-4", "route", "show", "table", "all"]).stdout.decode()
    return HostState(links=names, routes=tuple(sorted(routes.splitlines())))


def our_pids() -> list[int]:
    """Processes of pptpkit still running in the namespace."""
    found = []
    for pid in pids_in(NAMESPACE):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # ``python -m pptpkit ...`` or an installed ``pptpkit`` script (not qemu, whose
        # arguments mention pptpkit-vm paths).
        if any(arg == b"pptpkit" or arg.endswith(b"/pptpkit") for arg in cmdline.split(b"\0")):
            found.append(pid)
    return found


def host_leftovers(vm: GuestVm, before: HostState) -> list[str]:
    """What a run left in the namespace: pptpkit processes, interfaces, routes (empty: clean)."""
    problems = [f"pptpkit process {pid} still running" for pid in our_pids()]
    now = host_state(vm)
    problems += [f"interface {name} left" for name in sorted(now.links - before.links)]
    problems += [f"route added: {r}" for r in now.routes if r not in before.routes]
    problems += [f"route gone: {r}" for r in before.routes if r not in now.routes]
    return problems


def read_counter(vm: GuestVm, interface: str, name: str) -> int:
    path = f"/sys/class/net/{interface}/statistics/{name}"
    return int(vm.host(["cat", path]).stdout.decode().strip())


# -- captures ------------------------------------------------------------------------------------


def _ints(lines: list[str]) -> set[int]:
    values = set()
    for line in lines:
        for item in line.split(","):
            if item.strip():
                values.add(int(item.strip(), 0))
    return values


def pptp_message_types(pcap: Path) -> set[int]:
    return _ints(tshark_lines(pcap, "pptp", fields=["pptp.control_message_type"]))


def ppp_protocols(pcap: Path) -> set[int]:
    """PPP protocol numbers seen inside GRE (MPPE-encrypted data shows as 0x00fd)."""
    return _ints(tshark_lines(pcap, "gre && ppp", fields=["ppp.protocol"]))


def gre_call_ids(pcap: Path) -> set[int]:
    return _ints(tshark_lines(pcap, "gre", fields=["gre.key.call_id"]))
