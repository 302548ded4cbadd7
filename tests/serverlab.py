"""The real ``pptpkit server`` in a namespace and in-process clients against it: the helpers
the server tests share (a helper module, not a test file).

:class:`Server` runs the CLI process with its log in a file; :func:`connect` makes a client
session (PptpClient + PppLink on a real TUN) in the current namespace; :func:`run_in` runs a
coroutine inside a namespace; :class:`Pinger` measures a live session's ping loss while
something else happens.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netns import NetnsLab, inside, pids_in
from pptpkit.auth.base import PeerConfig
from pptpkit.io.dataplane import TunDataPlane
from pptpkit.io.link import PppLink
from pptpkit.ppp.session_config import LinkUp, MppePolicy, SessionConfig, SessionRole
from pptpkit.pptp.client import PptpCall, PptpClient, PptpClientConfig

SERVER, CLIENT = "192.0.2.1", "192.0.2.2"
LOCAL_IP = "198.51.100.1"
SECRETS = 'alice pptpd "alice pw" *\nbob pptpd bobpw 198.51.100.50\n'

TCP_PEER = textwrap.dedent('''
    """TCP endpoint: listen|connect ADDR PORT send|recv NBYTES; prints the sha256 it saw."""
    import hashlib, socket, sys, random
    role, addr, port, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    if role == "listen":
        srv = socket.create_server((addr, port))
        print("ready", flush=True)
        sock, _ = srv.accept()
    else:
        sock = socket.create_connection((addr, port), timeout=30)
    sock.settimeout(60)
    h = hashlib.sha256()
    if mode == "send":
        rnd = random.Random(7)
        left = n
        while left:
            chunk = rnd.randbytes(min(65536, left))
            sock.sendall(chunk)
            h.update(chunk)
            left -= len(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    else:
        got = 0
        while got < n:
            data = sock.recv(262144)
            if not data:
                break
            h.update(data)
            got += len(data)
        print("bytes", got)
        sock.close()
    print("sha", h.hexdigest(), flush=True)
''')


def server_ready(log: str) -> bool:
    """Does a ``pptpkit server`` log say it serves?  A single process once it listens; a
    supervisor (``--workers``, by default one per CPU) once every worker does: the first
    worker's ``listening on`` comes before the others listen, and before the supervisor's
    control socket answers for them and its metrics endpoint is open."""
    if "listening on" not in log:
        return False
    return re.search(r"starting \d+ workers \(", log) is None or " workers running (pids " in log


def wait_until_ready(log: Callable[[], str], alive: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for :func:`server_ready`; fail at once if the server exits first."""
    end = time.monotonic() + timeout
    while not server_ready(text := log()):
        assert alive(), text
        assert time.monotonic() < end, f"the server is not ready:\n{text}"
        time.sleep(0.05)


class Server:
    """The CLI server process in ``ns`` with its log file."""

    def __init__(self, lab: NetnsLab, ns: str, workdir: Path, *extra: str, secrets: str = SECRETS,
                 builtin: bool = True, env: dict[str, str] | None = None) -> None:
        """``builtin`` False: only ``extra`` after ``--listen`` (program mode takes no secrets)."""
        self.lab, self.ns, self.workdir = lab, ns, workdir
        self.secrets = workdir / "chap-secrets"
        self.secrets.write_text(secrets)
        self.log_path = workdir / "server.log"
        base = ["--local-ip", LOCAL_IP, "--remote-ip", "198.51.100.10-20", "--secrets", str(self.secrets),
                "--dns", "203.0.113.53"] if builtin else []
        # A control socket of its own: servers of other tests (or runs) may be up at the same time.
        self.ctl_socket = workdir / "ctl.sock"
        if "--ctl-socket" not in extra and "--no-ctl" not in extra:
            base += ["--ctl-socket", str(self.ctl_socket)]
        # The machine's /etc/ppp/ip-up must never run by accident: hooks only where a test names
        # its scripts (every one of the four; the others are then a path that does not exist).
        hook_flags = ("--ip-up", "--ip-down", "--ipv6-up", "--ipv6-down")
        if builtin and not any(flag in extra for flag in hook_flags):
            base.append("--no-hooks")
        elif builtin:
            base += [a for flag in hook_flags if flag not in extra
                     for a in (flag, str(workdir / f"no-such{flag[1:]}"))]
        with open(self.log_path, "wb") as log:
            self.proc = lab.popen(ns, [
                sys.executable, "-m", "pptpkit", "server", "--listen", SERVER, *base, *extra,
            ], stdout=subprocess.DEVNULL, stderr=log, env=env)
        wait_until_ready(self.log, lambda: self.proc.poll() is None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def workers(self) -> int:
        """Worker processes (``--workers``, by default one per CPU): 1 without a supervisor."""
        found = re.search(r"starting (\d+) workers \(", self.log())
        return 1 if found is None else int(found.group(1))

    def crash(self) -> None:
        """Every process of the server killed at once (a supervisor killed alone takes its
        workers down cleanly): its session's process group, as systemd kills a cgroup."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        end = time.monotonic() + 10
        while [p for p in pids_in(self.ns) if p != os.getpid()]:
            assert time.monotonic() < end, "server processes outlived SIGKILL"
            time.sleep(0.05)

    def pid_of(self, log_text: str) -> int:
        """The pid of the process that logged ``log_text``: the server's own, or with workers
        the worker's (the latest start of that worker)."""
        line = next((ln for ln in self.log().splitlines() if log_text in ln), None)
        assert line is not None, f"no {log_text!r} in the log:\n{self.log()}"
        worker = re.search(r"worker (\d+): ", line)
        if worker is None:
            return self.proc.pid
        starts = re.findall(rf"worker {worker.group(1)} started \(pid (\d+)\)", self.log())
        assert starts, self.log()
        return int(starts[-1])

    def shared_tuns(self, name: str = "pptpkit-srv") -> list[str]:
        """The shared interfaces of ``--tun-mode shared``: ``name``, or with workers ``name``
        and each worker's index."""
        count = self.workers
        return [name] if count == 1 else [f"{name}{i}" for i in range(count)]

    def wait_log(self, text: str, timeout: float = 10, count: int = 1) -> None:
        end = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert self.proc.poll() is None or self.log().count(text) >= count, self.log()
            assert time.monotonic() < end, f"no {text!r} in the log:\n{self.log()}"
            time.sleep(0.05)

    async def await_log(self, text: str, timeout: float = 10, count: int = 1) -> None:
        end = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert time.monotonic() < end, f"no {text!r} in the log:\n{self.log()}"
            await asyncio.sleep(0.05)


def two_namespaces(lab: NetnsLab) -> tuple[str, str]:
    srv, cli = lab.add_namespace("s"), lab.add_namespace("c")
    lab.add_veth(srv, cli, addr_a=f"{SERVER}/24", addr_b=f"{CLIENT}/24")
    return srv, cli


async def sh(*argv: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def in_ns(ns: str, *argv: str, timeout: float = 60) -> tuple[int, str]:
    return await sh("ip", "netns", "exec", ns, *argv, timeout=timeout)


class Session:
    def __init__(self, client: PptpClient, call: PptpCall, link: PppLink, up: LinkUp) -> None:
        self.client, self.call, self.link, self.up = client, call, link, up

    async def close(self) -> None:
        await self.link.aclose()
        await self.client.close()


class Tap:
    """Between a client's PppLink and its call: frames ``block`` says yes to are not sent, and
    the test sends frames of its own with :meth:`inject`; ``observe`` sees every frame from
    the server before the link does."""

    def __init__(self, call: PptpCall) -> None:
        self.call = call
        self.block: Callable[[bytes], bool] | None = None
        self.observe: Callable[[bytes], None] | None = None

    def send_frame(self, frame: bytes) -> bool:
        if self.block is not None and self.block(frame):
            return True
        return self.call.send_frame(frame)

    def inject(self, frame: bytes) -> bool:
        return self.call.send_frame(frame)

    def close(self) -> object:
        return self.call.close()


async def connect(user: str, password: str, *, local_address: str | None = None,
                  tun: str = "pkc%d", mppe: MppePolicy | None = None, tap: list[Tap] | None = None,
                  observe: Callable[[Tap, bytes], None] | None = None, **config: Any) -> Session:
    """A client session: PPTP call + PppLink on its own TUN in the current namespace.  ``tap``:
    a list that gets the session's :class:`Tap`; ``config``: more SessionConfig fields."""
    client = PptpClient(PptpClientConfig(server=SERVER, local_address=local_address))
    await client.connect()
    early: list[bytes] = []
    holder: list[PppLink] = []
    taps: list[Tap] = []

    def on_frame(frame: bytes) -> None:
        # The server speaks first; its first frames may beat the link's creation.
        if taps and taps[0].observe is not None:
            taps[0].observe(frame)
        if holder:
            holder[0].frame_received(frame)
        else:
            early.append(frame)

    try:
        call = await client.open_call(on_frame=on_frame)
    except BaseException:
        await client.close()
        raise
    cfg = SessionConfig(role=SessionRole.CLIENT, peer=PeerConfig(username=user, password=password),
                        mppe=mppe or MppePolicy(required=True), request_dns=True, **config)
    transport: PptpCall | Tap = call
    if tap is not None:
        transport = Tap(call)
        if observe is not None:
            transport.observe = lambda frame, t=transport: observe(t, frame)
        taps.append(transport)
        tap.append(transport)
    link = PppLink(cfg, transport, TunDataPlane(tun), name=f"client {user}")
    call.on_close = lambda info: link.lower_down(info.reason)
    link.start()
    holder.append(link)
    for frame in early:
        link.frame_received(frame)
    try:
        up = await asyncio.wait_for(link.wait_up(), 20)
    except BaseException:
        await link.aclose(timeout=1)
        await client.close()
        raise
    return Session(client, call, link, up)


def run_in(ns: str, coro_fn: Callable[[], Any]) -> None:
    with inside(ns):
        asyncio.run(asyncio.wait_for(coro_fn(), 240))


async def ping(ns: str, target: str, *extra: str) -> tuple[int, str]:
    return await in_ns(ns, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "3", *extra, target)


async def tcp_transfer(lab_ns_listen: str, listen_addr: str, ns_connect: str, mode_listen: str,
                       nbytes: int, workdir: Path, port: int) -> None:
    script = workdir / "tcp_peer.py"
    script.write_text(TCP_PEER)
    listener = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lab_ns_listen, sys.executable, str(script), "listen", listen_addr, str(port),
        mode_listen, str(nbytes), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert listener.stdout is not None
    assert (await asyncio.wait_for(listener.stdout.readline(), 20)).strip() == b"ready"
    other = "recv" if mode_listen == "send" else "send"
    rc, out = await in_ns(ns_connect, sys.executable, str(script), "connect", listen_addr, str(port),
                          other, str(nbytes), timeout=120)
    rest, _ = await asyncio.wait_for(listener.communicate(), 60)
    assert rc == 0 and listener.returncode == 0, out + rest.decode()
    text = out + rest.decode()
    shas = [line.split()[1] for line in text.splitlines() if line.startswith("sha ")]
    assert len(shas) == 2 and shas[0] == shas[1], text
    assert f"bytes {nbytes}" in text, text




class Pinger:
    """``ping`` from the current namespace to ``target`` for ``count`` x ``interval`` s: start it
    before an attack, ``await loss()`` after it."""

    def __init__(self, target: str = LOCAL_IP, count: int = 40, interval: float = 0.1,
                 ns: str | None = None) -> None:
        """``ns``: ping from that namespace instead."""
        self.target, self.count, self.interval, self.ns = target, count, interval, ns
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Pinger:
        where = ["ip", "netns", "exec", self.ns] if self.ns else []
        self._proc = await asyncio.create_subprocess_exec(
            *where, "ping", "-n", "-q", "-c", str(self.count), "-i", str(self.interval), "-W", "1",
            self.target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        return self

    async def received(self) -> tuple[int, str]:
        """Replies received, and ping's summary."""
        assert self._proc is not None
        out, _ = await self._proc.communicate()
        text = out.decode(errors="replace")
        if " received" not in text:
            return 0, text
        return int(text.split(" received")[0].rsplit(" ", 1)[-1]), text


def echo_request(src: str, dst: str) -> bytes:
    """An ICMP echo request with valid checksums (the server's kernel would answer it)."""
    import ipaddress
    import struct

    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x5053, 1) + b"spoofed!")
    struct.pack_into("!H", icmp, 2, checksum(bytes(icmp)))
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                                   ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    struct.pack_into("!H", header, 10, checksum(bytes(header)))
    return bytes(header + icmp)
