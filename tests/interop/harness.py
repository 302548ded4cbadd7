"""Running the real pptpd and pptp (pptp-linux) inside test network namespaces.

Each program runs in a *sandbox* (``sandbox.sh`` next to this file): network namespace ``NS``,
a private mount namespace with its own /dev (fresh devpts instance, /dev/log served by busybox
syslogd writing a file the test reads) and a private tmpfs on /run/pptp, and by default a PID
namespace, so stopping the sandbox kills pptpd, every pptpctrl, the PPP program and pptp's call
manager together.

Packet capture: :class:`Capture` runs ``dumpcap`` in a namespace; :func:`tshark_problems` runs
Wireshark's dissectors over the file and returns every malformed or expert-warning line.

Facts about the peers this relies on are in docs (INTEROP): pptpd's ``ppp`` option replaces
pppd by any executable, pptp needs ``--nolaunchpppd`` and a socketpair/raw-pty fd 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns import inside, pids_in

SANDBOX = Path(__file__).with_name("sandbox.sh")

#: Wireshark display filter for "something is wrong on the wire".  TCP resets and TCP analysis
#: flags are excluded: tearing a connection down from a test is legitimate.
PROBLEM_FILTER = (
    "_ws.malformed || (_ws.expert.severity >= warning && !tcp.connection.rst && !tcp.analysis.flags)"
)

DEFAULT_CAPTURE_FILTER = "tcp port 1723 or ip proto 47"


def find_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise FileNotFoundError(f"{name} is not installed")
    return path


# -- sandboxed processes -----------------------------------------------------------------------


@dataclass
class Sandboxed:
    """A command running in a sandbox; :meth:`stop` ends it and everything it started."""

    name: str
    netns: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    syslog_path: Path
    output_path: Path
    pid_namespace: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def syslog(self) -> str:
        try:
            return self.syslog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_syslog(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until a syslog line matches the regex ``pattern``; return the match."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.syslog())
            if m is not None:
                return m
            if time.monotonic() > end:
                raise TimeoutError(
                    f"{self.name}: no syslog line matching {pattern!r} in {timeout}s\n"
                    f"--- syslog ---\n{self.syslog()}\n--- output ---\n{self.output()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> int | None:
        """End the sandbox; with a PID namespace its init's death takes every process along."""
        if self.proc.poll() is None:
            # The proc is `unshare`, which in PID-namespace mode kills the namespace's init
            # (SIGKILL, --kill-child) when it dies; otherwise it is sandbox.sh's session leader.
            sig = signal.SIGKILL if self.pid_namespace else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        if self.pid_namespace:
            # The kernel reaps a dead PID namespace asynchronously; wait for it to be empty.
            end = time.monotonic() + timeout
            while self._leftover_pids() and time.monotonic() < end:
                time.sleep(0.02)
        return self.proc.returncode

    def _leftover_pids(self) -> list[int]:
        ours = {os.getpid()}
        return [p for p in pids_in(self.netns) if p not in ours and _started_by(p, self.syslog_path)]


def _started_by(pid: int, syslog_path: Path) -> bool:
    """Best effort: is ``pid`` part of the sandbox that logs to ``syslog_path``?"""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"PPTPKIT_SANDBOX={syslog_path}".encode() in env


def start_sandboxed(
    netns: str,
    argv: Sequence[str],
    *,
    workdir: Path,
    name: str,
    pid_namespace: bool = True,
    stdin: int | None = None,
    env: dict[str, str] | None = None,
) -> Sandboxed:
    """Run ``argv`` in a sandbox inside ``netns``.  ``stdin`` is an fd to hand over as fd 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    syslog_path = workdir / f"{name}.syslog"
    output_path = workdir / f"{name}.out"
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if pid_namespace:
        unshare += ["--pid", "--fork", "--kill-child", "--mount-proc"]
    full_env = dict(os.environ if env is None else env)
    # A marker every process of the sandbox inherits, to find stragglers.
    full_env["PPTPKIT_SANDBOX"] = str(syslog_path)
    with open(output_path, "wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *unshare, "bash", str(SANDBOX), str(syslog_path), *argv],
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    box = Sandboxed(
        name=name,
        netns=netns,
        argv=list(argv),
        proc=proc,
        syslog_path=syslog_path,
        output_path=output_path,
        pid_namespace=pid_namespace,
    )
    # The sandbox is ready once syslogd is up (it logs its own start first).
    try:
        box.wait_for_syslog(r"syslogd started", timeout=10)
    except BaseException:
        box.stop()
        raise
    return box


# -- pptpd -------------------------------------------------------------------------------------


def write_pptpd_conf(
    path: Path,
    *,
    ppp_program: Path | str,
    listen: str,
    localip: str = "198.51.100.1",
    remoteip: str = "198.51.100.2-9",
    pidfile: Path,
    connections: int = 4,
    debug: bool = True,
    extra_lines: Sequence[str] = (),
) -> Path:
    lines = [
        f"ppp {ppp_program}",
        "noipparam",
        f"localip {localip}",
        f"remoteip {remoteip}",
        f"listen {listen}",
        f"connections {connections}",
        f"pidfile {pidfile}",
    ]
    if debug:
        lines.append("debug")
    lines.extend(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def start_pptpd(
    netns: str,
    workdir: Path,
    *,
    ppp_program: Path | str,
    listen: str = "192.0.2.2",
    localip: str = "198.51.100.1",
    remoteip: str = "198.51.100.2-9",
    extra_lines: Sequence[str] = (),
    pid_namespace: bool = True,
    name: str = "pptpd",
    ready_timeout: float = 10.0,
) -> Sandboxed:
    """Start pptpd in the foreground with a config written here; returns once it listens."""
    conf = write_pptpd_conf(
        workdir / f"{name}.conf",
        ppp_program=ppp_program,
        listen=listen,
        localip=localip,
        remoteip=remoteip,
        pidfile=workdir / f"{name}.pid",
        extra_lines=extra_lines,
    )
    box = start_sandboxed(
        netns, [find_binary("pptpd"), "--fg", "-c", str(conf)], workdir=workdir, name=name,
        pid_namespace=pid_namespace,
    )
    box.extra["conf"] = conf
    try:
        wait_listening(netns, 1723, timeout=ready_timeout)
    except BaseException:
        box.stop()
        raise
    return box


def tcp_listening(netns: str, port: int) -> bool:
    """Is a TCP socket in ``netns`` listening on ``port``?  (Reads the namespace's /proc view.)"""
    with inside(netns):
        table = Path("/proc/thread-self/net/tcp").read_text()
    for line in table.splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def wait_listening(netns: str, port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not tcp_listening(netns, port):
        if time.monotonic() > end:
            raise TimeoutError(f"nothing listens on TCP {port} in {netns}")
        time.sleep(0.05)


# -- pptp (pptp-linux) -------------------------------------------------------------------------


def start_pptp(
    netns: str,
    workdir: Path,
    server: str,
    *,
    stdin: int,
    extra_args: Sequence[str] = ("--loglevel", "2"),
    pid_namespace: bool = True,
    name: str = "pptp",
) -> Sandboxed:
    """Start ``pptp SERVER --nolaunchpppd --nohostroute`` with PPP frames on ``stdin``.

    ``stdin`` must be a socketpair end or a raw-mode pty slave (pptp writes to its fd 0 too);
    the caller keeps the other end and should close its copy of ``stdin`` afterwards.
    """
    argv = [find_binary("pptp"), server, "--nolaunchpppd", "--nohostroute", *extra_args]
    return start_sandboxed(netns, argv, workdir=workdir, name=name, pid_namespace=pid_namespace, stdin=stdin)


# -- packet capture ----------------------------------------------------------------------------


class Capture:
    """``dumpcap`` on ``iface`` inside ``netns`` writing ``path``; use as a context manager."""

    def __init__(self, netns: str, iface: str, path: Path, capture_filter: str = DEFAULT_CAPTURE_FILTER):
        self.netns = netns
        self.iface = iface
        self.path = path
        self.capture_filter = capture_filter
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = path.with_suffix(".dumpcap.log")

    def start(self, timeout: float = 10.0) -> Capture:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, find_binary("dumpcap"), "-i", self.iface,
                 "-f", self.capture_filter, "-w", str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + timeout
        # dumpcap says "Capturing on ..." once the interface is open and the filter compiled.
        while b"Capturing on" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"dumpcap did not start: {self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        return self

    def stop(self, settle: float = 0.3) -> Path:
        """Stop capturing (after ``settle`` seconds for packets still in flight)."""
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(settle)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.path

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(settle=0 if exc[0] is not None else 0.3)


def _tshark(
    pcap: Path, display_filter: str, decode_as: Sequence[str], fields: Sequence[str] = ()
) -> list[str]:
    argv = [find_binary("tshark"), "-n", "-r", str(pcap), "-Y", display_filter]
    for rule in decode_as:
        argv += ["-d", rule]
    if fields:
        argv += ["-T", "fields"]
        for f in fields:
            argv += ["-e", f]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"tshark failed ({res.returncode}): {res.stderr}")
    return [line for line in res.stdout.splitlines() if line.strip()]


def tshark_problems(pcap: Path, *, decode_as: Sequence[str] = ()) -> list[str]:
    """Lines for every packet Wireshark finds malformed or worth a warning (empty = clean).

    ``decode_as`` takes tshark ``-d`` rules, e.g. ``"tcp.port==1724,pptp"`` for a
    non-standard port.
    """
    return _tshark(pcap, PROBLEM_FILTER, decode_as)


def tshark_lines(
    pcap: Path, display_filter: str, *, fields: Sequence[str] = (), decode_as: Sequence[str] = ()
) -> list[str]:
    """The packets of ``pcap`` matching ``display_filter`` (one summary or fields line each)."""
    return _tshark(pcap, display_filter, decode_as, fields)
