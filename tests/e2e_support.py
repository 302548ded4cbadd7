"""Helpers for the end-to-end VPN tests (``test_e2e_*.py``, ``test_connect_*.py``); no tests here.

(It is named ``test_e2e_*`` only because that is the name space these tests own; pytest
collects it and finds nothing to run.)

:class:`VpnLab` is a server namespace and a client namespace joined by a veth pair
(192.0.2.1 <-> 192.0.2.2), with ``pptpkit server`` (built-in PPP) and ``pptpkit connect`` run
as the real CLI processes, exactly as a user would run them.  Clients print ``--json`` events
on stdout; :class:`Client` reads them in a thread so tests can wait for "up" or "down" with a
timeout.  Every process is killed and every namespace deleted by the NetnsLab underneath.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from netns import NetnsLab, pids_in
from pptpkit.lab.netns import listening

SERVER = "192.0.2.1"
CLIENT = "192.0.2.2"
TUNNEL_LOCAL = "198.51.100.1"
POOL = "198.51.100.10-99"
PASSWORD = "s3cret-Pa55"
USER = "alice"
PUSHED_DNS = "203.0.113.53"
PY = sys.executable


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Client:
    """One ``pptpkit connect`` process; ``events`` get its JSON lines."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self.events.put(json.loads(line))

    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def next_event(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next event of ``kind`` (others are kept in ``seen``)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout:g} s; exit "
                                     f"{self.proc.poll()}; seen {self.seen}; stderr:\n{self.stderr}")
            try:
                event = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    self._reader.join(1)
                    if self.events.empty():
                        raise AssertionError(f"client exited with {self.proc.returncode} before a {kind!r} "
                                             f"event; seen {self.seen}; stderr:\n{self.stderr}") from None
                continue
            self.seen.append(event)
            if event["event"] == kind:
                return event

    def wait_up(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.next_event("up", timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"client still running after {timeout:g} s; stderr:\n{self.stderr}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)


class VpnLab:
    """Server and client namespaces, secrets, and the two CLI commands."""

    def __init__(self, lab: NetnsLab, tmp: Path, *, extra_client_namespaces: int = 0) -> None:
        self.lab = lab
        self.tmp = tmp
        self.server_ns = lab.add_namespace("s")
        self.client_ns = lab.add_namespace("c")
        lab.add_veth(self.server_ns, self.client_ns, addr_a=f"{SERVER}/24", addr_b=f"{CLIENT}/24",
                     name_a="veth-s", name_b="veth-c")
        self.secrets = tmp / "chap-secrets"
        self.secrets.write_text(f'{USER} pptpd "{PASSWORD}" *\n')
        os.chmod(self.secrets, 0o600)
        self.password_file = tmp / "password"
        self.password_file.write_text(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = tmp / "server.log"
        self._clients = 0

    # -- server ---------------------------------------------------------------------------------

    def start_server(self, *flags: str, timeout: float = 15.0) -> subprocess.Popen[bytes]:
        argv = [PY, "-m", "pptpkit", "server", "--listen", SERVER, "--local-ip", TUNNEL_LOCAL,
                "--remote-ip", POOL, "--secrets", str(self.secrets), "--dns", PUSHED_DNS,
                "--max-per-source", "64", "--no-mss-clamp", "--ctl-socket", str(self.tmp / "ctl.sock"),
                *flags]
        log = self.server_log.open("ab")
        proc: subprocess.Popen[bytes] = self.lab.popen(self.server_ns, argv, stdin=subprocess.DEVNULL,
                                                       stdout=log, stderr=log)
        log.close()
        self.server = proc
        wait_for(lambda: listening(proc.pid, 1723) or proc.poll() is not None, timeout,
                 "the server to listen")
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{self.server_text()}")
        return proc

    def server_text(self) -> str:
        return self.server_log.read_text(errors="replace") if self.server_log.exists() else ""

    def kill_server(self) -> None:
        """A crash: every process of the server at once (with workers, by default one per CPU,
        a supervisor killed alone takes its workers down cleanly, LCP Terminate and all)."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(10)
            wait_for(lambda: not self.processes(self.server_ns), 10, "every server process to be gone")

    def stop_server(self) -> int:
        assert self.server is not None
        if self.server.poll() is None:
            self.server.terminate()
        return self.server.wait(15)

    # -- clients --------------------------------------------------------------------------------

    def connect(self, *flags: str, ns: str | None = None, password_file: Path | None = None,
                user: str = USER, server: str = SERVER) -> Client:
        self._clients += 1
        err = self.tmp / f"client{self._clients}.err"
        argv = [PY, "-m", "pptpkit", "connect", server, "--user", user, "--password-file",
                str(password_file or self.password_file), "--json", "--lcp-restart", "1", *flags]
        with err.open("wb") as errf:
            proc: subprocess.Popen[bytes] = self.lab.popen(ns or self.client_ns, argv,
                                                           stdin=subprocess.DEVNULL,
                                                           stdout=subprocess.PIPE, stderr=errf)
        return Client(proc, err)

    # -- checks ---------------------------------------------------------------------------------

    def ping(self, ns: str, target: str, *, count: int = 3, interface: str | None = None,
             timeout: float = 20) -> subprocess.CompletedProcess[str]:
        # -w: keep trying until ``count`` replies or the deadline.  The server configures its
        # side of a session (TUN, address) just after IPCP opens, so a packet sent the instant
        # the client reports "up" can still meet a server that is not ready for it.
        argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-w", "10"]
        if interface is not None:
            argv += ["-I", interface]
        return self.lab.run(ns, [*argv, target], check=False, timeout=timeout)

    def links(self, ns: str) -> list[str]:
        out = self.lab.ip(ns, "-o", "link", "show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def routes(self, ns: str) -> list[str]:
        return sorted(line.strip() for line in self.lab.ip(ns, "route", "show").splitlines())

    def processes(self, ns: str, exclude: Sequence[int] = ()) -> list[int]:
        return [p for p in pids_in(ns) if p != os.getpid() and p not in exclude]
