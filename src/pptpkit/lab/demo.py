"""``pptpkit demo``: a whole VPN on one machine, on embedded defaults.

Two fresh network namespaces joined by a veth pair (TEST-NET-1 addresses), built and torn down
by the lab shared with the benchmarks and the tests (:mod:`pptpkit.lab.netns`).
In one, ``pptpkit server`` in built-in mode (MS-CHAPv2 and MPPE-128 required, a temporary
secrets file); in the other, ``pptpkit connect`` - two separate processes, started exactly as a
user would start them.  Once the tunnel is up the demo prints what was negotiated (auth, MPPE,
addresses, MTU, interface names), pings across the tunnel (count, loss, RTT) and pushes TCP
through it for a few seconds with its own sender and receiver (the throughput figure), then
stops the client with SIGTERM (LCP Terminate, Call-Clear, Stop-Control-Connection, routes and
interface removed) and the server.  Namespaces, interfaces, processes and temporary files are
removed afterwards, also on failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pptpkit.lab.netns import CLIENT_ADDRESS, SERVER_ADDRESS, NetnsLab, TwoHosts, enter, listening

__all__ = ["DemoError", "DemoResult", "parse_ping", "run_demo"]

SERVER_ADDR: Final = SERVER_ADDRESS
CLIENT_ADDR: Final = CLIENT_ADDRESS
PREFIX_LEN: Final = 24
TUNNEL_SERVER: Final = "198.51.100.1"
TUNNEL_POOL: Final = "198.51.100.10-20"
PUSHED_DNS: Final = "203.0.113.53"
DEMO_USER: Final = "demo"
_THROUGHPUT_PORT: Final = 5001
_UP_TIMEOUT: Final = 20.0


class DemoError(Exception):
    """The demo could not run or a check failed; the message says which."""


@dataclass(slots=True)
class PingResult:
    transmitted: int
    received: int
    loss_percent: float
    rtt_min: float | None = None
    rtt_avg: float | None = None
    rtt_max: float | None = None


@dataclass(slots=True)
class DemoResult:
    up: dict[str, Any] = field(default_factory=dict)
    server_interfaces: list[str] = field(default_factory=list)
    ping: PingResult | None = None
    throughput_bytes: int = 0
    throughput_seconds: float = 0.0
    client_exit: int | None = None
    server_exit: int | None = None
    client_log: str = ""
    server_log: str = ""
    seconds: float = 0.0


_PING_COUNTS: Final = re.compile(r"(\d+) packets transmitted, (\d+) received.*?([\d.]+)% packet loss")
_PING_RTT: Final = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")


def parse_ping(text: str) -> PingResult:
    """The summary of iputils ``ping`` output (counts, loss, RTT min/avg/max in ms)."""
    counts = _PING_COUNTS.search(text)
    if counts is None:
        raise DemoError(f"cannot read ping's summary:\n{text}")
    result = PingResult(int(counts.group(1)), int(counts.group(2)), float(counts.group(3)))
    rtt = _PING_RTT.search(text)
    if rtt is not None:
        result.rtt_min, result.rtt_avg, result.rtt_max = (float(rtt.group(i)) for i in (1, 2, 3))
    return result


def _build(lab: NetnsLab) -> TwoHosts:
    """The demo's server and client namespaces.  Their names (``pkdemo<pid>-s``/``-c``) and the
    veth ends' are the demo's own, so a user (or a test) can find a running demo's parts."""
    tag = f"pkdemo{os.getpid()}"
    return TwoHosts(lab, *lab.add_two_hosts(SERVER_ADDR, CLIENT_ADDR, server_if="pkdemo-s",
                                            client_if="pkdemo-c", prefixlen=PREFIX_LEN,
                                            names=(f"{tag}-s", f"{tag}-c")))


async def _spawn(ns: str, argv: list[str], **kw: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, preexec_fn=lambda: enter(ns), start_new_session=True, **kw)


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
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


async def _interfaces(ns: str) -> list[str]:
    """Interface names in ``ns``, asked of a short child that lives there (pyroute2's
    synchronous NetNS cannot run inside our event loop)."""
    code = "import socket; print(*(n for _, n in socket.if_nameindex()))"
    proc = await _spawn(ns, [sys.executable, "-c", code],
                        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode().split()


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    return b"" if stream is None else await stream.read()


_RECEIVER: Final = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); n = 0; first = None
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        if first is None:
            first = time.monotonic()
        n += len(b)
    print(n, time.monotonic() - (first or time.monotonic()), flush=True)
""")

_SENDER: Final = textwrap.dedent("""
    import socket, sys, time
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
    block = bytes(range(256)) * 256; end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        s.sendall(block)
    s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
""")


async def _throughput(hosts: TwoHosts, seconds: float, result: DemoResult) -> None:
    py = sys.executable
    receiver = await _spawn(hosts.server, [py, "-c", _RECEIVER, TUNNEL_SERVER, str(_THROUGHPUT_PORT)],
                            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    sender: asyncio.subprocess.Process | None = None
    try:
        assert receiver.stdout is not None
        ready = await asyncio.wait_for(receiver.stdout.readline(), 10)
        if ready.strip() != b"ready":
            raise DemoError("the throughput receiver did not start")
        sender = await _spawn(hosts.client, [py, "-c", _SENDER, TUNNEL_SERVER, str(_THROUGHPUT_PORT),
                                             str(seconds)],
                              stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(receiver.stdout.readline(), seconds + 20)
        await asyncio.wait_for(sender.wait(), 10)
        if sender.returncode != 0:
            err = (await _read_all(sender.stderr)).decode(errors="replace")
            raise DemoError(f"the throughput sender failed:\n{err}")
        count, took = line.split()
        result.throughput_bytes = int(count)
        result.throughput_seconds = float(took)
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                await _stop(proc, signal.SIGKILL)


async def _wait_up(client: asyncio.subprocess.Process, err: asyncio.Future[bytes]) -> dict[str, Any]:
    assert client.stdout is not None
    end = time.monotonic() + _UP_TIMEOUT
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise DemoError(f"the tunnel did not come up within {_UP_TIMEOUT:g} s")
        try:
            line = await asyncio.wait_for(client.stdout.readline(), left)
        except TimeoutError:
            continue
        if not line:
            await client.wait()
            log = (await asyncio.wait_for(err, 5)).decode(errors="replace")
            raise DemoError(f"pptpkit connect exited with status {client.returncode}:\n{log}")
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "up":
                return dict(event)


async def _run(hosts: TwoHosts, tmp: Path, pings: int, seconds: float, verbose: int,
               result: DemoResult) -> None:
    py = sys.executable
    log_v = ["-v"] * verbose
    password = secrets.token_urlsafe(12)
    secrets_file = tmp / "chap-secrets"
    secrets_file.write_text(f"{DEMO_USER} pptpd {password} *\n")
    password_file = tmp / "password"
    password_file.write_text(password + "\n")
    for path in (secrets_file, password_file):
        path.chmod(0o600)
    started = time.monotonic()
    server = await _spawn(hosts.server, [
        py, "-m", "pptpkit", "server", *log_v, "--listen", SERVER_ADDR, "--local-ip", TUNNEL_SERVER,
        "--remote-ip", TUNNEL_POOL, "--secrets", str(secrets_file), "--require-mschap-v2",
        "--require-mppe-128", "--dns", PUSHED_DNS,
        # The demo's private server must not take (or be refused) the machine's control socket,
        # nor run the machine's /etc/ppp/ip-up scripts.
        "--no-ctl", "--no-hooks",
    ], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    server_err = asyncio.ensure_future(_read_all(server.stderr))
    client: asyncio.subprocess.Process | None = None
    client_err: asyncio.Future[bytes] | None = None
    try:
        end = time.monotonic() + 10
        while not listening(server.pid, 1723):
            if server.returncode is not None or time.monotonic() > end:
                await _stop(server)
                raise DemoError("the server did not start listening:\n"
                                + (await server_err).decode(errors="replace"))
            await asyncio.sleep(0.05)
        client = await _spawn(hosts.client, [
            py, "-m", "pptpkit", "connect", SERVER_ADDR, "--user", DEMO_USER, "--password-file",
            str(password_file), "--require-mppe-128", "--route", "203.0.113.0/24", "--json", *log_v,
        ], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        client_err = asyncio.ensure_future(_read_all(client.stderr))
        result.up = await _wait_up(client, client_err)
        result.server_interfaces = [n for n in await _interfaces(hosts.server) if n.startswith("pptpkit")]

        ping = await _spawn(hosts.client, ["ping", "-n", "-c", str(pings), "-i", "0.2", "-w", "15",
                                           TUNNEL_SERVER],
                            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(ping.communicate(), 20)
        result.ping = parse_ping(out.decode(errors="replace"))
        if result.ping.received == 0:
            raise DemoError(f"no ping reply across the tunnel:\n{out.decode(errors='replace')}")

        await _throughput(hosts, seconds, result)

        result.client_exit = await _stop(client)
        result.client_log = (await client_err).decode(errors="replace")
        if result.client_exit != 0:
            raise DemoError(f"pptpkit connect exited with status {result.client_exit}:\n{result.client_log}")
        left = [n for n in await _interfaces(hosts.client) if n.startswith("pptp")]
        if left:
            raise DemoError(f"the client left {left} behind")
        result.server_exit = await _stop(server)
        result.server_log = (await server_err).decode(errors="replace")
        if result.server_exit != 0:
            raise DemoError(f"the server exited with status {result.server_exit}:\n{result.server_log}")
        result.seconds = time.monotonic() - started
    finally:
        for proc in (client, server):
            if proc is not None:
                await _stop(proc)
        server_err.cancel()
        if client_err is not None:
            client_err.cancel()


def _report(result: DemoResult) -> str:
    up = result.up
    ping = result.ping
    assert ping is not None
    mbit = result.throughput_bytes * 8 / result.throughput_seconds / 1e6 if result.throughput_seconds else 0.0
    rtt = ("-" if ping.rtt_avg is None else
           f"min {ping.rtt_min:.2f} / avg {ping.rtt_avg:.2f} / max {ping.rtt_max:.2f} ms")
    lines = [
        "pptpkit demo: a PPTP VPN between two network namespaces",
        f"  server {SERVER_ADDR} (pptpkit server, built-in PPP) <-veth-> client {CLIENT_ADDR} "
        "(pptpkit connect)",
        "negotiated:",
        f"  authentication   {up['auth']} as {up['username']!r}",
        f"  encryption       {up['mppe']}",
        f"  addresses        client {up['local_address']} <-> server {up['peer_address']}",
        f"  MTU              {up['mtu']}",
        f"  interfaces       client {up['interface']}, server {', '.join(result.server_interfaces) or '?'}",
        f"  DNS pushed       {', '.join(up['dns']) or 'none'}",
        f"  client routes    {', '.join(up['routes']) or 'none'} (+ host route to {SERVER_ADDR} "
        "outside the tunnel)",
        f"ping {up['peer_address']} through the tunnel:",
        f"  {ping.transmitted} sent, {ping.received} received, {ping.loss_percent:g}% loss, RTT {rtt}",
        "TCP through the tunnel (client -> server):",
        f"  {result.throughput_bytes / 1e6:.1f} MB in {result.throughput_seconds:.2f} s: {mbit:.1f} Mbit/s",
        "teardown:",
        f"  client stopped with SIGTERM: exit {result.client_exit} (LCP Terminate, Call-Clear-Request, "
        "Stop-Control-Connection, routes and interface removed)",
        f"  server stopped with SIGTERM: exit {result.server_exit}",
        f"  total {result.seconds:.1f} s",
    ]
    return "\n".join(lines)


def run_demo(*, pings: int = 5, seconds: float = 3.0, verbose: int = 0) -> int:
    """Run the demo, print the figures; 0 on success, 1 on failure, 130 on Ctrl-C."""
    if os.geteuid() != 0:
        print("pptpkit demo: needs root (network namespaces, TUN, raw GRE sockets)", file=sys.stderr)
        return 1
    lab = NetnsLab("pkdemo")
    result = DemoResult()
    code = 1

    owner = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            # A child forked by pyroute2 (its netns helper) inherits this handler; it must
            # simply die when told to, never run our cleanup (which deletes the namespaces).
            os._exit(128 + signum)
        raise KeyboardInterrupt

    # SIGTERM cleans up like Ctrl-C; SIGINT gets Python's handler even if our parent ignored it.
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="pptpkit-demo-") as tmp:
            hosts = _build(lab)
            asyncio.run(_run(hosts, Path(tmp), pings, seconds, verbose, result))
        print(_report(result))
        code = 0
    except DemoError as exc:
        print(f"pptpkit demo: FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("pptpkit demo: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        # Still one line and a full cleanup; the traceback only when asked for.
        print(f"pptpkit demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        if verbose:
            traceback.print_exc()
    finally:
        left = lab.close()
        if left:
            print(f"pptpkit demo: could not remove namespaces {left}", file=sys.stderr)
            code = 1
        else:
            print("cleanup: namespaces, interfaces, processes and temporary files removed",
                  file=sys.stderr if code else sys.stdout)
    return code
