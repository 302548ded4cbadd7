"""The anchor: the C user-space relays of the classic setup, back to back, at full speed.

``pptp --nolaunchpppd`` (pptp-linux) in the client namespace takes async-HDLC PPP frames on
its fd 0 (our end of a socketpair) and relays them as GRE to ``pptpd`` in the server
namespace, whose ``pptpctrl`` relays them to the PPP program on a pty.  Here the PPP program is
:func:`ppp_program`, a fast source or sink instead of pppd, and our end of the socketpair is
the other fast source or sink.  No PPP is negotiated (the relays do not look inside frames),
so what is measured is the relays alone: frames/s and Mbit/s of 1400-octet PPP frames.

Both sides count frames by HDLC frame starts (a flag followed by a non-flag), which holds
whether a relay shares flags between frames or not.  Sources write 32 frames per system call,
so they are never the bottleneck.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from pptpkit.io.pty import set_raw
from pptpkit.ppp import hdlc

__all__ = ["RelayResult", "frame_stream", "measure_relay", "ppp_program", "relay_available"]

FRAME_SIZE: Final = 1400
# Run as the init of fresh mount + PID namespaces (see _sandboxed): pptpd/pptpctrl/pptp get a
# /dev of their own with a new devpts instance (pptpctrl opens a pty per call), /dev/log from
# busybox syslogd (they log there and misbehave without it), and a private /run/pptp (pptp's
# call manager keeps its unix socket there).  The command keeps our fd 0.
_SANDBOX: Final = r"""
set -eu
log=$1; shift
host=$(mktemp -d /tmp/pkbench-dev.XXXXXX)
mount --rbind /dev "$host"
mount -t tmpfs -o mode=0755,size=1m bench-dev /dev
for n in null zero full random urandom tty; do : >"/dev/$n"; mount --bind "$host/$n" "/dev/$n"; done
umount -l "$host"; rmdir "$host"
mkdir -m 0755 /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
ln -s /proc/self/fd /dev/fd
mkdir -p /run/pptp
mount -t tmpfs -o mode=0755,size=1m bench-run /run/pptp
busybox syslogd -n -O "$log" </dev/null >/dev/null 2>&1 &
for _ in $(seq 100); do [ -S /dev/log ] && break; sleep 0.02; done
set +e
"$@" <&0 &
child=$!
exec </dev/null
wait "$child"
"""
_BATCH: Final = 32
_FLAG: Final = 0x7E
# Linux values (the socket module does not export them).
_SO_SNDBUFFORCE: Final = 32
_SO_RCVBUFFORCE: Final = 33


def ppp_frame(size: int = FRAME_SIZE) -> bytes:
    """A ``size``-octet PPP frame (``ff 03 00 21`` + an IPv4-looking payload)."""
    body = bytes(0x40 + (i % 0x3C) for i in range(size - 5))
    return b"\xff\x03\x00\x21\x45" + body


def frame_stream(size: int = FRAME_SIZE, count: int = _BATCH) -> bytes:
    """``count`` HDLC-encoded frames back to back, each with its own opening flag."""
    return hdlc.encode_frame(ppp_frame(size)) * count


class FrameCounter:
    """Counts HDLC frame starts and octets in a byte stream fed in arbitrary pieces."""

    __slots__ = ("_last_flag", "frames", "octets")

    def __init__(self) -> None:
        self.frames = 0
        self.octets = 0
        self._last_flag = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        raw = bytes(data)
        flags = raw.count(b"\x7e")
        # Frame starts = flags not followed by another flag (and not at the very end), plus a
        # start right at the beginning when the previous piece ended in a flag.
        starts = flags - raw.count(b"\x7e\x7e") - (1 if raw[-1] == _FLAG else 0)
        if self._last_flag and raw[0] != _FLAG:
            starts += 1
        self.frames += starts
        self.octets += n
        self._last_flag = raw[-1] == _FLAG


def ppp_program(result_path: str, mode: str) -> None:
    """The PPP program pptpd runs (its stdin/stdout are one pty slave): sink or source.

    ``sink``: count frames, rewriting ``result_path`` with "frames octets monotonic-time" about
    every 0.1 s.  ``source``: write frames as fast as the pty takes them.  Either way one frame
    goes out first, because pptpctrl reads no GRE before the PPP program has spoken.
    """
    if os.isatty(0):
        # pptpd hands over a cooked pty; raw mode is needed to see the bytes unchanged.
        with contextlib.suppress(termios.error):
            set_raw(0)
    os.set_blocking(1, True)
    blob = frame_stream()
    # pptp opens its GRE socket only after the call is up; GRE that arrives before gets an
    # ICMP protocol-unreachable, which pptpctrl's connected socket reports as a fatal error.
    time.sleep(1.0)
    os.write(1, hdlc.encode_frame(ppp_frame()))
    if mode == "source":
        with contextlib.suppress(OSError):
            while True:
                os.write(1, blob)
        return
    counter = FrameCounter()
    buf = bytearray(1 << 16)
    next_report = 0.0
    tmp = result_path + ".tmp"
    while True:
        try:
            n = os.readv(0, [buf])
        except OSError:
            break
        if not n:
            break
        counter.feed(memoryview(buf)[:n])
        now = time.monotonic()
        if now >= next_report:
            next_report = now + 0.1
            with open(tmp, "w") as f:
                f.write(f"{counter.frames} {counter.octets} {now}\n")
            os.replace(tmp, result_path)


@dataclass(frozen=True, slots=True)
class RelayResult:
    frames_per_s: float
    frames: int
    seconds: float

    @property
    def mbit_s(self) -> float:
        return self.frames_per_s * FRAME_SIZE * 8 / 1e6


def relay_available() -> str | None:
    """None when pptp and pptpd are installed, else what is missing."""
    for name in ("pptp", "pptpd"):
        if _which(name) is None:
            return f"{name} is not installed (apt-get install pptp-linux pptpd)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _read_result(path: Path) -> tuple[int, float] | None:
    try:
        frames, _octets, when = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return int(frames), float(when)


class _GreGuard:
    """A raw GRE socket in a namespace, drained and discarded by a thread, during a measurement.

    This kernel answers GRE with ICMP protocol-unreachable when no raw socket takes it, and it
    counts a socket whose buffer is full as not taking it.  pptp-linux and pptpctrl use
    connected raw sockets on which that ICMP is a fatal error, so one overrun relay would end
    the call: this always-ready socket keeps the kernel from answering (it also covers the
    moments before pptp and pptpctrl open their own sockets).
    """

    def __init__(self, netns_name: str) -> None:
        from pptpkit.lab.netns import inside

        with inside(netns_name):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        buf = bytearray(65536)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.sock.recv_into(buf)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()


def _sandboxed(netns_name: str, syslog: Path, argv: list[str], *, stdin: int,
               log: IO[bytes]) -> subprocess.Popen[bytes]:
    from pptpkit.lab.netns import enter

    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
         "--mount-proc", "bash", "-c", _SANDBOX, "sandbox", str(syslog), *argv],
        stdin=stdin, stdout=log, stderr=log, preexec_fn=lambda: enter(netns_name),
        start_new_session=True)


def measure_relay(server_ns: str, client_ns: str, direction: str, seconds: float,
                  *, warmup: float = 1.0, timeout: float = 30.0) -> RelayResult:
    """Frames/s through pptp-linux -> pptpd (``direction="c2s"``) or back (``"s2c"``)."""
    from pptpkit.lab.netns import SERVER_ADDRESS

    pptp, pptpd = _which("pptp"), _which("pptpd")
    if pptp is None or pptpd is None:
        raise RuntimeError(relay_available() or "pptp/pptpd missing")
    work = Path(tempfile.mkdtemp(prefix="pkbench-relay-"))
    procs: list[subprocess.Popen[bytes]] = []
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # pptp writes to its fd 0 without blocking and gives up when the socket is full: a large
    # buffer absorbs the bursts between two reads of ours.
    for sock in (ours, theirs):
        for opt in (_SO_SNDBUFFORCE, _SO_RCVBUFFORCE):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
    guards = [_GreGuard(server_ns), _GreGuard(client_ns)]
    stop = threading.Event()
    try:
        result_path = work / "sink.txt"
        program = work / "ppp-bench"
        mode = "sink" if direction == "c2s" else "source"
        program.write_text(
            f"#!{sys.executable}\nfrom pptpkit.lab.bench.relay import ppp_program\n"
            f"ppp_program({str(result_path)!r}, {mode!r})\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        conf = work / "pptpd.conf"
        conf.write_text(f"ppp {program}\nnoipparam\nlocalip 198.51.100.1\nremoteip 198.51.100.2-9\n"
                        f"listen {SERVER_ADDRESS}\nconnections 4\npidfile {work / 'pptpd.pid'}\n")
        # The children keep their own copies of the log descriptor.
        with open(work / "pptpd.log", "wb") as log:
            procs.append(_sandboxed(server_ns, work / "pptpd.syslog", [pptpd, "--fg", "-c", str(conf)],
                                    stdin=subprocess.DEVNULL, log=log))
            _wait_listening(server_ns, 1723, timeout)
            procs.append(_sandboxed(client_ns, work / "pptp.syslog",
                                    [pptp, SERVER_ADDRESS, "--nolaunchpppd", "--nohostroute"],
                                    stdin=theirs.fileno(), log=log))
        theirs.close()
        counter = FrameCounter()
        if direction == "c2s":
            return _run_c2s(ours, result_path, seconds, warmup, timeout, stop)
        return _run_s2c(ours, counter, seconds, warmup, timeout)
    finally:
        stop.set()
        ours.close()
        for guard in guards:
            guard.close()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if os.environ.get("PPTPKIT_BENCH_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)


def _run_c2s(ours: socket.socket, result_path: Path, seconds: float, warmup: float, timeout: float,
             stop: threading.Event) -> RelayResult:
    blob = frame_stream()

    # The PPP program speaks first (pptpctrl wants it); its frame through both relays means
    # the call is up end to end.
    ours.settimeout(timeout)
    if not ours.recv(65536):
        raise RuntimeError("pptp closed the stream before the call came up")

    def source() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                ours.sendall(blob)

    thread = threading.Thread(target=source, daemon=True)
    thread.start()
    end = time.monotonic() + timeout
    while _read_result(result_path) is None:
        if time.monotonic() > end:
            raise RuntimeError("no frame reached pptpd's PPP program (relay did not start)")
        time.sleep(0.05)
    time.sleep(warmup)
    first = _read_result(result_path)
    time.sleep(seconds)
    last = _read_result(result_path)
    stop.set()
    assert first is not None and last is not None
    frames, span = last[0] - first[0], last[1] - first[1]
    if frames <= 0 or span <= 0:
        raise RuntimeError("the relays stopped passing frames (client->server)")
    return RelayResult(frames / span, frames, span)


def _run_s2c(ours: socket.socket, counter: FrameCounter, seconds: float, warmup: float,
             timeout: float) -> RelayResult:
    ours.settimeout(timeout)
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    n = ours.recv_into(buf)  # the first data: the call is up
    counter.feed(view[:n])
    t_end_warm = time.monotonic() + warmup
    while time.monotonic() < t_end_warm:
        counter.feed(view[: ours.recv_into(buf)])
    f0, t0 = counter.frames, time.monotonic()
    t_end = t0 + seconds
    while True:
        n = ours.recv_into(buf)
        if not n:
            raise RuntimeError("pptp closed the stream")
        counter.feed(view[:n])
        now = time.monotonic()
        if now >= t_end:
            break
    frames = counter.frames - f0
    span = now - t0
    return RelayResult(frames / span, frames, span)


def _wait_listening(netns_name: str, port: int, timeout: float) -> None:
    from pptpkit.lab.netns import inside

    end = time.monotonic() + timeout
    want = f":{port:04X} "
    while time.monotonic() < end:
        # /proc/<pid>/net shows the namespace of that pid: read it from a thread inside.
        with inside(netns_name):
            table = Path("/proc/thread-self/net/tcp").read_text()
        if any(want in line and line.split()[3] == "0A" for line in table.splitlines()[1:]):
            return
        time.sleep(0.05)
    raise RuntimeError(f"pptpd did not listen on {port} within {timeout:.0f}s")

