"""``pptpkit demo``: the PPTP layer end to end on one machine, on embedded defaults.

Two fresh network namespaces joined by a veth pair (TEST-NET-1 addresses, made with pyroute2),
``pptpkit server`` with the built-in echo program (:mod:`pptpkit._echo`) in one, ``pptpkit pty``
in the other.  PPP frames are pushed through the client's stdin, across TCP/GRE, through the echo
program and back out of its stdout, and checked byte for byte.  Then the figures: the control
connection as the client saw it, the call IDs, GRE statistics and the frame rate.  Everything is
removed afterwards (processes, interfaces, namespaces), also on failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .ppp.hdlc import HdlcDecoder, encode_frame

__all__ = ["DemoError", "DemoResult", "demo_frames", "run_demo"]

SERVER_ADDR: Final = "192.0.2.1"
CLIENT_ADDR: Final = "192.0.2.2"
PREFIX_LEN: Final = 24
_CLONE_NEWNET: Final = 0x40000000
_NETNS_DIR: Final = Path("/run/netns")
# Frames in flight at once: well inside both sides' GRE window, so none wait or drop.
_IN_FLIGHT: Final = 32
_STALL: Final = 5.0


class DemoError(Exception):
    """The demo could not run or a check failed; the message says which."""


@dataclass(slots=True)
class DemoResult:
    frames: int = 0
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    server_log: str = ""


def demo_frames(count: int, size: int) -> Iterator[bytes]:
    """Distinct PPP frames (address/control, IPv4 protocol, a numbered payload with every
    octet value, so escaping is exercised)."""
    body = bytes(range(256)) * (size // 256 + 1)
    for i in range(count):
        head = b"\xff\x03\x00\x21" + i.to_bytes(4, "big")
        yield (head + body[i % 256 :])[:size]


def _setns_child(name: str) -> None:
    """preexec_fn: move the forked child into network namespace ``name``."""
    fd = os.open(_NETNS_DIR / name, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class _Lab:
    """The two namespaces and the veth between them, removed by :meth:`close`."""

    def __init__(self) -> None:
        tag = f"pkdemo{os.getpid()}"
        self.server_ns = f"{tag}-s"
        self.client_ns = f"{tag}-c"
        self.created: list[str] = []

    def build(self) -> None:
        from pyroute2 import NetNS, netns

        for name in (self.server_ns, self.client_ns):
            netns.create(name)
            self.created.append(name)
        with NetNS(self.server_ns) as ns:
            ns.link("add", ifname="pkdemo-s", kind="veth",
                    peer={"ifname": "pkdemo-c", "net_ns_fd": self.client_ns})
        for name, ifname, addr in ((self.server_ns, "pkdemo-s", SERVER_ADDR),
                                   (self.client_ns, "pkdemo-c", CLIENT_ADDR)):
            with NetNS(name) as ns:
                for link in ("lo", ifname):
                    index = ns.link_lookup(ifname=link)[0]
                    if link != "lo":
                        ns.addr("add", index=index, address=addr, prefixlen=PREFIX_LEN)
                    ns.link("set", index=index, state="up")

    def close(self) -> list[str]:
        """Delete the namespaces (their veth ends go with them); returns those left over."""
        from pyroute2 import netns

        for name in self.created:
            for pid in _pids_in(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                netns.remove(name)
        left = [n for n in self.created if (_NETNS_DIR / n).exists()]
        self.created.clear()
        return left


def _pids_in(name: str) -> list[int]:
    try:
        want = os.stat(_NETNS_DIR / name)
    except FileNotFoundError:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                out.append(int(entry))
    return out


def _listening(pid: int, port: int) -> bool:
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return False
    for line in table.splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


async def _spawn(ns: str, argv: list[str], **kw: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, preexec_fn=lambda: _setns_child(ns), start_new_session=True, **kw)


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def _run(lab: _Lab, frames: int, size: int, verbose: int, result: DemoResult) -> None:
    py = sys.executable
    log_v = ["-v"] * verbose
    server = await _spawn(lab.server_ns, [
        py, "-m", "pptpkit", "server", *log_v, "--listen", SERVER_ADDR,
        "--ppp-program", py, "--ppp-arg=-m", "--ppp-arg=pptpkit._echo",
        "--localip", "198.51.100.1", "--remoteip", "198.51.100.2-9", "--noipparam",
    ], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    client: asyncio.subprocess.Process | None = None
    server_err = asyncio.ensure_future(_read_all(server.stderr))
    try:
        end = time.monotonic() + 10
        while not _listening(server.pid, 1723):
            if server.returncode is not None or time.monotonic() > end:
                raise DemoError("the server did not start listening:\n" + await _text(server_err, server))
            await asyncio.sleep(0.05)
        client = await _spawn(lab.client_ns, [py, "-m", "pptpkit", "pty", SERVER_ADDR, "--summary", *log_v],
                              stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                              stderr=asyncio.subprocess.PIPE)
        client_err = asyncio.ensure_future(_read_all(client.stderr))
        assert client.stdin is not None and client.stdout is not None
        started = time.monotonic()
        await _pump(client.stdin, client.stdout, frames, size, client_err)
        result.frames = frames
        result.seconds = time.monotonic() - started
        client.stdin.close()
        status = await asyncio.wait_for(client.wait(), 15)
        err = (await client_err).decode(errors="replace")
        if status != 0:
            raise DemoError(f"pptpkit pty exited with status {status}:\n{err}")
        for line in err.splitlines():
            if line.startswith("pptpkit-summary "):
                result.summary = json.loads(line.split(" ", 1)[1])
        if not result.summary:
            raise DemoError(f"pptpkit pty printed no summary:\n{err}")
        code = await _stop(server)
        result.server_log = (await server_err).decode(errors="replace")
        if code != 0:
            raise DemoError(f"the server exited with status {code}:\n{result.server_log}")
    finally:
        for proc in (client, server):
            if proc is not None:
                await _stop(proc, signal.SIGKILL if proc is client else signal.SIGTERM)
        server_err.cancel()


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    return b"" if stream is None else await stream.read()


async def _text(fut: asyncio.Future[bytes], proc: asyncio.subprocess.Process) -> str:
    await _stop(proc)
    return (await fut).decode(errors="replace")


async def _pump(stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader, count: int, size: int,
                client_err: asyncio.Future[bytes]) -> None:
    """Keep ``_IN_FLIGHT`` frames outstanding; check every echoed frame in order."""
    decoder = HdlcDecoder(max_frame=4096)
    source = demo_frames(count, size)
    expected: list[bytes] = []
    received = 0
    sent = 0
    while received < count:
        while sent < count and sent - received < _IN_FLIGHT:
            frame = next(source)
            expected.append(frame)
            stdin.write(encode_frame(frame))
            sent += 1
        await stdin.drain()
        try:
            data = await asyncio.wait_for(stdout.read(65536), _STALL)
        except TimeoutError:
            raise DemoError(f"no echo for {_STALL:g} s after {received} of {count} frames") from None
        if not data:
            err = (await asyncio.wait_for(client_err, 5)).decode(errors="replace")
            raise DemoError(f"pptpkit pty closed its output after {received} frames:\n{err}")
        for frame in decoder.feed(data):
            want = expected[received]
            if frame != want:
                raise DemoError(f"frame {received} came back changed: sent {want[:16].hex()}..., "
                                f"got {frame[:16].hex()}...")
            received += 1
    if decoder.stats.bad_fcs:
        raise DemoError(f"{decoder.stats.bad_fcs} frames with a bad FCS")


def _report(result: DemoResult, size: int) -> str:
    s = result.summary
    peer = s["peer"]
    gre = s["gre"]
    rtt = gre.get("srtt")
    rate = result.frames / result.seconds if result.seconds > 0 else 0.0
    lines = [
        "pptpkit demo: PPTP layer, server and client in two network namespaces",
        f"  server {SERVER_ADDR} <-veth-> client {CLIENT_ADDR} (TEST-NET-1)",
        "control connection (as the client saw the server's Start-Control-Connection-Reply):",
        f"  protocol version {peer['protocol_version'] >> 8}.{peer['protocol_version'] & 0xFF}, "
        f"vendor {peer['vendor']!r}, host {peer['host_name']!r}, firmware {peer['firmware_revision']:#x}",
        f"  framing capabilities {peer['framing_capabilities']:#x}, bearer capabilities "
        f"{peer['bearer_capabilities']:#x}, max channels {peer['max_channels']}",
        "call:",
        f"  client call ID {s['call_id']}, server call ID {s['peer_call_id']}, "
        f"server window {s['peer_window']}, connect speed {s['connect_speed']} bit/s",
        "GRE (client side):",
        f"  sent {gre['sent']}, received {gre['received']}, lost {gre['lost']}, "
        f"reordered {gre['reordered']}, duplicates {gre['duplicates']}, acks sent {gre['acks_sent']}, "
        f"RTT {'-' if rtt is None else f'{rtt * 1000:.2f} ms'}",
        "echo:",
        f"  {result.frames} PPP frames of {size} bytes, all back byte-exact, in {result.seconds:.2f} s: "
        f"{rate:.0f} frames/s each way",
        "server log:",
        *("  " + line for line in result.server_log.splitlines()),
    ]
    return "\n".join(lines)


def run_demo(*, frames: int = 5000, size: int = 200, verbose: int = 0) -> int:
    """Run the demo, print the figures; 0 on success, 1 on failure (message on stderr)."""
    if os.geteuid() != 0:
        print("pptpkit demo: needs root (network namespaces, raw GRE sockets)", file=sys.stderr)
        return 1
    lab = _Lab()
    result = DemoResult()
    code = 1

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM cleans up like Ctrl-C; SIGINT gets Python's handler even if our parent ignored it.
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        lab.build()
        asyncio.run(_run(lab, frames, size, verbose, result))
        print(_report(result, size))
        code = 0
    except DemoError as exc:
        print(f"pptpkit demo: FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("pptpkit demo: interrupted", file=sys.stderr)
        code = 130
    finally:
        left = lab.close()
        if left:
            print(f"pptpkit demo: could not remove namespaces {left}", file=sys.stderr)
            code = 1
        else:
            print("cleanup: namespaces, interfaces and processes removed",
                  file=sys.stderr if code else sys.stdout)
    return code
