"""The processes the benchmarks measure: a pptpkit server and pptpkit clients, built from the
library API (:class:`~pptpkit.pptp.server.PptpServer`, :class:`~pptpkit.pptp.client.PptpClient`,
:class:`~pptpkit.io.link.PppLink`), each in its own network namespace.

Run as ``python -m pptpkit.lab.bench.agent ROLE --netns NS [options]``.  The agent enters the
namespace before it opens anything, writes one JSON object per line on stdout (``{"event":
...}``) and stops when its stdin reaches EOF (or a ``stop`` line arrives), printing its final
``{"event": "stats"}`` line.  The orchestrator (:mod:`pptpkit.lab.bench.runner`) drives it.

Roles:

* ``server``: a PPTP server whose calls run the built-in PPP stack (MS-CHAPv2, MPPE as
  ``--mppe``).  ``--plane tun``: one TUN per call (real kernel forwarding, for throughput);
  ``--plane echo``: packets from a client are sent straight back with source and destination
  swapped, no TUN at all (setup and scale: the peers' inner addresses never reach a kernel).
* ``client``: one session with a TUN (throughput); prints ``up`` and holds it.
* ``setup``: ``--sequential N`` sessions one after the other, then ``--concurrent M`` at once;
  the time from TCP connect to IPCP opened of each.
* ``scale``: ``--sessions N`` sessions held open at once with echo keepalives running, then one
  packet through each and back.
* ``blast``: ``--sessions M`` sessions, as many on each of ``--balance N`` server workers (told
  apart by the server's call ID, :mod:`pptpkit.gre.partition`); each gets ``--packets P``
  packets of 1400 octets encrypted ahead of time; on a ``go`` line they are sent in
  ``sendmmsg`` batches through a packet socket, at most ``--window W`` per session unechoed,
  the echoes counted from the GRE sequence numbers of one in ``2**--sample`` and the first
  few hundred of each session decrypted and checked, so the client costs a few microseconds
  a packet and the server is what is measured (:mod:`pptpkit.lab.bench.blastio`).

A server started with ``--worker I/N`` is worker I of N (``pptpkit server --workers``'s
mechanism without its supervisor, which the echo plane does not need): ``SO_REUSEPORT``, a raw
GRE socket filtered to its call-ID partition, call IDs from that partition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from ipaddress import IPv4Address
from typing import Any, Final

from pptpkit.auth.base import AuthenticatorConfig, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.control import CallIdAllocator
from pptpkit.gre.partition import gre_partition_filter, partition
from pptpkit.io.dataplane import TunDataPlane
from pptpkit.io.grechannel import acquire_gre_socket, release_gre_socket
from pptpkit.io.gresock import GreSocket
from pptpkit.io.link import PacketSink, PppLink
from pptpkit.io.loop import freeze_startup_heap
from pptpkit.io.loop import run as run_on_loop
from pptpkit.lab.bench.blastio import (
    Batches,
    EchoCheck,
    PacketPath,
    detach_filter,
    inet_name,
    sample_filter,
    set_filter,
)
from pptpkit.lab.netns import SERVER_ADDRESS, enter
from pptpkit.ppp.session_config import LinkUp, MppePolicy, SessionConfig, SessionRole
from pptpkit.pptp.client import PptpClient, PptpClientConfig
from pptpkit.pptp.server import CallHandler, PptpServer, PptpServerConfig, ServerCall
from pptpkit.speedups import EXT, describe

__all__ = ["EchoPlane", "ProbePlane", "main", "mppe_policy", "session_config"]

log = logging.getLogger(__name__)

USERNAME: Final = "bench"
SERVER_NAME: Final = "pptpd"
SECRET: Final = "bench-secret-1"
#: Inner (PPP) addresses: TEST-NET-2.  With the echo plane they never reach a kernel.
TUNNEL_LOCAL: Final = IPv4Address("198.51.100.1")
TUNNEL_PEER: Final = IPv4Address("198.51.100.2")
#: MRU of both ends: a 1400-octet link keeps GRE packets under the veth's 1500 (no fragments).
MRU: Final = 1400
MPPE_MODES: Final = ("stateless", "stateful", "none")
_PROBES_AT_ONCE: Final = 500
_PROBE_PROTO: Final = 253  # RFC 3692 experimentation protocol number
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")


def mppe_policy(mode: str) -> MppePolicy:
    if mode == "stateless":
        return MppePolicy(required=True, bits_40=False)
    if mode == "stateful":
        return MppePolicy(required=True, bits_40=False, stateful=True)
    if mode == "none":
        return MppePolicy.nomppe()
    raise ValueError(f"unknown MPPE mode {mode!r}")


def session_config(role: SessionRole, mode: str, *, echo_interval: float) -> SessionConfig:
    """Both ends as the benchmark runs them: MS-CHAPv2, MPPE per ``mode``, MRU 1400."""
    if role is SessionRole.SERVER:
        return SessionConfig(
            role=role,
            auth_policy=AuthPolicy(require=frozenset({AuthMethod.MSCHAP_V2})),
            authenticator=AuthenticatorConfig(
                name=SERVER_NAME, secrets=StaticSecrets({(USERNAME, SERVER_NAME): SECRET})),
            local_address=TUNNEL_LOCAL, peer_address=TUNNEL_PEER,
            mppe=mppe_policy(mode), mru=MRU, echo_interval=echo_interval, ipv6=False,
        )
    return SessionConfig(
        role=role, peer=PeerConfig(username=USERNAME, password=SECRET),
        mppe=mppe_policy(mode), mru=MRU, echo_interval=echo_interval, ipv6=False,
    )


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1 << 16:
        # Root may raise the hard limit too: 20 000 client sessions need more than 20 000 fds.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 16, 1 << 16))
            return
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


async def _stdin_closed() -> None:
    """Resolves when stdin reaches EOF or carries a ``stop`` line."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data or b"stop" in data:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)

    loop.add_reader(fd, readable)
    await done


# -- data planes -------------------------------------------------------------------------------


class EchoPlane:
    """Server data plane without a kernel: every IPv4 packet goes back with the addresses swapped.

    Swapping two 32-bit words leaves the header checksum valid (a ones'-complement sum does
    not depend on order).
    """

    def __init__(self) -> None:
        self.echoed = 0

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        link.interface = "echo"
        send = link.send_ip

        def sink(packet: bytes) -> None:
            if len(packet) >= 20 and packet[0] >> 4 == 4:
                self.echoed += 1
                send(packet[:12] + packet[16:20] + packet[12:16] + packet[20:])

        return sink

    async def detach(self, link: PppLink) -> None:
        return None


def probe_packet(up: LinkUp, tag: int, size: int = 64) -> bytes:
    """An IPv4 packet from our address to the peer's, carrying ``tag`` (no kernel sees it)."""
    local = up.local_address or IPv4Address(0)
    peer = up.peer_address or IPv4Address(0)
    payload = struct.pack("!Q", tag).ljust(max(size - 20, 8), b"\xa5")
    header = _IPV4.pack(0x45, 0, 20 + len(payload), tag & 0xFFFF, 0, 64, _PROBE_PROTO, 0,
                        local.packed, peer.packed)
    csum = _ip_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class ProbePlane:
    """Client data plane without a kernel: remembers the packets each link received."""

    def __init__(self) -> None:
        self.received: dict[PppLink, list[bytes]] = {}
        self.waiters: dict[PppLink, asyncio.Future[bytes]] = {}

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        link.interface = "probe"

        def sink(packet: bytes) -> None:
            waiter = self.waiters.pop(link, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)

        return sink

    async def detach(self, link: PppLink) -> None:
        self.waiters.pop(link, None)


# -- server ------------------------------------------------------------------------------------


class _LinkHandler:
    """A server call's data plane: a PppLink on the call, started once the call is answered
    (the link keeps whatever the client sends before that)."""

    def __init__(self, link: PppLink) -> None:
        self.link = link

    def start(self) -> None:
        self.link.start()

    async def aclose(self) -> None:
        self.link.lower_down("call ended")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.link.closed), 5.0)


async def run_server(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    plane: Any = (TunDataPlane(name="pkbs%d", offload=args.offload == "on") if args.plane == "tun"
                  else EchoPlane())
    links: list[PppLink] = []
    ups = 0

    def on_event(link: PppLink, event: object) -> None:
        nonlocal ups
        if isinstance(event, LinkUp):
            ups += 1

    # One immutable configuration for every call, as a real server shares it.
    cfg = session_config(SessionRole.SERVER, args.mppe, echo_interval=args.echo_interval)

    async def factory(call: ServerCall) -> CallHandler:
        link = PppLink(cfg, call, plane, on_event=on_event, name=f"call {call.call_id}")
        call.on_frame = link.frame_received
        links.append(link)
        handler = _LinkHandler(link)
        # Runs after PptpServer has answered the call (it does so right after we return).
        loop.call_soon(handler.start)
        return handler

    n = args.max_sessions
    index, count = (int(x) for x in args.worker.split("/"))
    part = partition(index, count)
    gre = None if count == 1 else GreSocket(bpf=gre_partition_filter(part))
    span = part.high - part.allocatable_low + 1
    server = PptpServer(PptpServerConfig(
        listen=SERVER_ADDRESS, max_connections=n, max_per_source=n, max_calls=4,
        respect_peer_window=False, echo_interval=args.echo_interval, start_timeout=30.0,
        reuse_port=count > 1,
    ), factory, gre_socket=gre, call_ids=CallIdAllocator(
        low=part.allocatable_low, high=part.high, max_in_use=min(span, max(n + 16, span // 2))))
    await server.start()
    trace_to = os.environ.get("PPTPKIT_BENCH_TRACEMALLOC")
    if trace_to:
        # Where the memory held per session goes: SIGUSR1 (sent during the hold) dumps a
        # tracemalloc snapshot (tracing started in main()).
        import signal
        import tracemalloc

        loop.add_signal_handler(signal.SIGUSR1, lambda: tracemalloc.take_snapshot().dump(
            os.path.join(trace_to, "server.tracemalloc")))
    _emit("ready", pid=os.getpid())
    await _stdin_closed()
    _emit("stats", sessions_up=ups, links=len(links),
          alive=sum(1 for link in links if not link.finished),
          echoed=getattr(plane, "echoed", 0))
    await server.close()
    if gre is not None:
        gre.close()


# -- clients -----------------------------------------------------------------------------------


class Session:
    """One client session: the PPTP client, its call and the PPP link."""

    def __init__(self, client: PptpClient, link: PppLink, up: LinkUp, setup_time: float) -> None:
        self.client = client
        self.link = link
        self.up = up
        self.setup_time = setup_time

    async def close(self) -> None:
        # asyncio.timeout rather than wait_for (no extra task per await): the setup clients'
        # CPU per setup is part of what the benchmark reports, and it shares the cores.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self.link.aclose(timeout=2.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self.client.close()


async def open_session(args: argparse.Namespace, plane: Any, call_ids: CallIdAllocator) -> Session:
    # Every client of the process shares its raw GRE socket, demultiplexed by (server address,
    # our call ID): one allocator for all of them keeps the IDs apart.
    client = PptpClient(PptpClientConfig(
        server=SERVER_ADDRESS, respect_peer_window=False, echo_interval=args.echo_interval,
        connect_timeout=30.0, call_timeout=30.0,
    ), call_ids=call_ids)
    # time.perf_counter, not loop.time: uvloop's clock ticks in whole milliseconds, which
    # rounded every setup time of a few ms to 2.00 or 3.00.
    t0 = time.perf_counter()
    try:
        await client.connect()
        # The server's first LCP frame can arrive before open_call() returns: keep it.
        early: list[bytes] = []
        call = await client.open_call(on_frame=early.append)
        cfg = session_config(SessionRole.CLIENT, args.mppe, echo_interval=args.echo_interval)
        link = PppLink(cfg, call, plane, name=f"call {call.call_id}")
        call.on_frame = link.frame_received
        call.on_close = lambda info: link.lower_down(info.reason)
        link.start()
        for frame in early:
            link.frame_received(frame)
        async with asyncio.timeout(30.0):
            up = await link.wait_up()
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5.0)
        raise
    return Session(client, link, up, time.perf_counter() - t0)


async def run_client(args: argparse.Namespace) -> None:
    plane = TunDataPlane(name="pkbc%d", offload=args.offload == "on")
    session = await open_session(args, plane, CallIdAllocator())
    _emit("up", interface=session.link.interface, local=str(session.up.local_address),
          peer=str(session.up.peer_address), mppe=session.up.mppe, mtu=session.up.mtu,
          setup_ms=session.setup_time * 1000, path=describe())
    await _stdin_closed()
    stats = session.link.session.stats
    _emit("stats", tx_packets=stats.tx_packets, rx_packets=stats.rx_packets,
          dropped=dict(stats.dropped), gre=_gre_stats(session))
    await session.close()


def _gre_stats(session: Session) -> dict[str, int]:
    calls = session.client.calls
    if not calls:
        return {}
    st = calls[0].stats
    return {"sent": st.sent, "received": st.received, "lost": st.lost, "reordered": st.reordered}


async def run_setup(args: argparse.Namespace) -> None:
    # Held for the whole run: one socket (and its counters) for every session.
    gre = acquire_gre_socket()
    plane = ProbePlane()
    # Several setup clients in one namespace each see every GRE packet there: their call IDs
    # must not overlap, or one client's frames reach another's call with the same ID.
    index, count = (int(x) for x in args.worker.split("/"))
    part = partition(index, count)
    call_ids = CallIdAllocator(low=part.allocatable_low, high=part.high)
    sequential: list[float] = []
    for _ in range(args.sequential):
        session = await open_session(args, plane, call_ids)
        sequential.append(session.setup_time)
        await session.close()
    t0, cpu0 = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(open_session(args, plane, call_ids) for _ in range(args.concurrent)),
                                   return_exceptions=True)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sessions = [r for r in results if isinstance(r, Session)]
    failures = [repr(r) for r in results if not isinstance(r, Session)]
    concurrent = [s.setup_time for s in sessions]
    await asyncio.gather(*(s.close() for s in sessions))
    _emit("result", sequential=sequential, concurrent=concurrent, concurrent_elapsed=elapsed, cpu=cpu,
          failures=failures[:5], failed=len(failures), gre_unknown_call=gre.stats.unknown_call,
          gre_receive_errors=gre.stats.receive_errors)
    release_gre_socket(gre)
    await _stdin_closed()


async def _probe(plane: ProbePlane, session: Session, tag: int) -> bool:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bytes] = loop.create_future()
    plane.waiters[session.link] = waiter
    packet = probe_packet(session.up, tag)
    if not session.link.send_ip(packet):
        return False
    try:
        echoed = await asyncio.wait_for(waiter, 10.0)
    except TimeoutError:
        return False
    # The echo swaps the addresses; the tag travels in the payload.
    return echoed[20:] == packet[20:] and echoed[12:16] == packet[16:20]


async def run_scale(args: argparse.Namespace) -> None:
    plane = ProbePlane()
    # --worker I/N: one of N scale clients in one namespace, each with its own call IDs.
    index, count = (int(x) for x in args.worker.split("/"))
    part = partition(index, count)
    span = part.high - part.allocatable_low + 1
    call_ids = CallIdAllocator(low=part.allocatable_low, high=part.high,
                               max_in_use=min(span, max(args.sessions + 16, span // 2)))
    limit = asyncio.Semaphore(args.parallel)
    loop = asyncio.get_running_loop()

    async def one() -> Session:
        async with limit:
            return await open_session(args, plane, call_ids)

    t0 = loop.time()
    results = await asyncio.gather(*(one() for _ in range(args.sessions)), return_exceptions=True)
    sessions = [r for r in results if isinstance(r, Session)]
    failures = [repr(r) for r in results if not isinstance(r, Session)]
    _emit("established", sessions=len(sessions), failed=len(failures), failures=failures[:5],
          seconds=loop.time() - t0)
    # Hold: the orchestrator measures the server, the keepalives run.
    await _stdin_closed()
    alive_before = sum(1 for s in sessions if not s.link.finished)
    # At most _PROBES_AT_ONCE in flight: 10 000 echoes at once overflow a GRE socket's receive
    # buffer, which would measure the burst, not the sessions.
    probes = asyncio.Semaphore(_PROBES_AT_ONCE)

    async def probe(session: Session, tag: int) -> bool:
        async with probes:
            return await _probe(plane, session, tag)

    oks = await asyncio.gather(*(probe(s, i) for i, s in enumerate(sessions)))
    _emit("result", sessions=len(sessions), alive=alive_before, passed=sum(oks))
    closers = [asyncio.ensure_future(s.close()) for s in sessions]
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*closers), 60.0)


async def run_blast(args: argparse.Namespace) -> None:
    import socket

    plane = ProbePlane()
    gre = acquire_gre_socket()
    # Every GRE channel binds the socket's two-part send when it opens, so the capture below
    # must be behind a send_parts that the channels already hold: this one, switched by
    # ``parts_capture``.
    parts_capture: list[Callable[[int, bytes, bytes | bytearray | memoryview, bytes | None], bool]] = []
    real_send_parts = gre.send_parts

    def send_parts(peer: int, header: bytes, payload: bytes | bytearray | memoryview,
                   pktinfo: bytes | None) -> bool:
        if parts_capture:
            return parts_capture[0](peer, header, payload, pktinfo)
        return real_send_parts(peer, header, payload, pktinfo)

    gre.send_parts = send_parts  # type: ignore[method-assign]
    call_ids = CallIdAllocator()
    workers = args.balance
    want = args.sessions // workers
    per_worker: list[list[Session]] = [[] for _ in range(workers)]
    extra: list[Session] = []
    for _ in range(args.sessions * 8):
        if all(len(w) >= want for w in per_worker):
            break
        session = await open_session(args, plane, call_ids)
        worker = session.client.calls[0].peer_call_id * workers >> 16
        (per_worker[worker] if len(per_worker[worker]) < want else extra).append(session)
    sessions = [s for w in per_worker for s in w]
    if len(sessions) < want * workers:
        raise RuntimeError(f"could not balance {args.sessions} sessions over {workers} workers")
    # Encrypt every packet now: capture what the GRE channel would send.
    captured: list[list[tuple[str, bytes]]] = []
    real_send, real_send_from, real_send_to = gre.send, gre.send_from, gre.send_to
    out: list[tuple[str, bytes]] = []

    def capture(peer: str, packet: bytes | bytearray | memoryview) -> bool:
        out.append((peer, bytes(packet)))
        return True

    def capture_from(peer: str, packet: bytes | bytearray | memoryview, _ancillary: object) -> bool:
        return capture(peer, packet)

    def capture_to(peer: int, packet: bytes | bytearray | memoryview, _pktinfo: bytes | None) -> bool:
        # The compiled path's send (GreChannel uses it whenever the extension is loaded):
        # without it nothing was captured and the blast sent nothing at all.
        return capture(str(IPv4Address(peer)), packet)

    def capture_parts(peer: int, header: bytes, payload: bytes | bytearray | memoryview,
                      _pktinfo: bytes | None) -> bool:
        # The in-order send of the fast path: header and PPP frame as two parts.
        return capture(str(IPv4Address(peer)), header + bytes(payload))

    gre.send, gre.send_from = capture, capture_from  # type: ignore[method-assign, assignment]
    gre.send_to = capture_to  # type: ignore[method-assign, assignment]
    parts_capture.append(capture_parts)
    for i, session in enumerate(sessions):
        for tag in range(args.packets):
            session.link.send_ip(probe_packet(session.up, tag + (i << 32), 1400))
        captured.append(out)
        out = []
    gre.send, gre.send_from = real_send, real_send_from  # type: ignore[method-assign]
    gre.send_to = real_send_to  # type: ignore[method-assign]
    parts_capture.clear()
    # Our call ID (in the echoes' key) -> session index.
    ours = {s.client.calls[0].call_id: i for i, s in enumerate(sessions)}
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=os.dup(gre.fileno()))
    sock.setblocking(False)
    path = PacketPath(str(SERVER_ADDRESS)) if args.tx == "packet" else None
    if path is not None:
        batches = [Batches([path.frame(packet) for _, packet in c], path.name) for c in captured]
    else:
        batches = [Batches([packet for _, packet in c], inet_name(c[0][0] if c else "0.0.0.0"))
                   for c in captured]
    del captured
    checks = [_echo_check(s, i, b.count) for i, (s, b) in enumerate(zip(sessions, batches, strict=True))]
    _emit("ready", sessions=len(sessions), packets=sum(b.count for b in batches))
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        return
    loop.remove_reader(gre.fileno())  # from here the echoes are counted (and sampled) below
    # The last number the server sent on each call: the blast's echoes follow it, one each.
    base = [s.client.calls[0].channel.engine.last_delivered or 0 for s in sessions]
    set_filter(sock, sample_filter(args.sample))
    stats = _blast(sock, path.sock.fileno() if path is not None else sock.fileno(), batches, ours, base,
                   checks, args.window, args.sample, args.verify, args.seconds, args.nap)
    if path is not None:
        path.close()
    detach_filter(sock)
    loop.add_reader(gre.fileno(), gre._on_readable)
    _emit("result", sessions=len(sessions), octets=stats["echoed"] * 1400, **stats)
    sock.close()
    await asyncio.gather(*(s.close() for s in sessions + extra))
    release_gre_socket(gre)
    await _stdin_closed()


def _echo_check(session: Session, index: int, count: int) -> EchoCheck:
    channel = session.link.session.mppe_channel
    decryptor = channel.decryptor if channel is not None else None
    if decryptor is None:
        raise RuntimeError("blast: the session has no MPPE receiver to check the echoes with")
    up = session.up
    return EchoCheck(decryptor, lambda tag: probe_packet(up, tag + (index << 32), 1400), count)


def _blast(sock: Any, tx: int, batches: list[Batches], ours: dict[int, int], base: list[int],
           checks: list[EchoCheck], window: int, shift: int, verify: int,
           seconds: float, nap: float) -> dict[str, Any]:
    """The measured loop: keep ``window`` packets of each session unechoed, count the echoes
    from the sampled ones' sequence numbers (:mod:`pptpkit.lab.bench.blastio`)."""
    import select

    count = len(batches)
    lens = [b.count for b in batches]
    sends = [b.send for b in batches]
    nxt = [0] * count           # packets sent
    counted = [0] * count       # echoes counted (from the latest sampled echo's number)
    written_off = [0] * count   # unechoed for 0.2 s: lost
    sent_at = [0.0] * count
    sampled = missing = stalls = echoed = 0
    step = 1 << shift
    total = sum(lens)
    tail = shift == 0
    recv_batch = EXT.recv_gre if EXT is not None else None
    fd = sock.fileno()
    seq_of = struct.Struct("!I").unpack_from
    mark: tuple[float, int] | None = None
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while echoed + stalls < total:
        now = time.perf_counter()
        if now > deadline:
            break
        progress = False
        for i in range(count):
            k = nxt[i]
            o = k - counted[i] - written_off[i]
            if o > 0 and now - sent_at[i] > 0.2:
                stalls += o  # echoes lost: reopen the window
                written_off[i] += o
                o = 0
            if o < window and k < lens[i]:
                j = k + sends[i](tx, k, min(k + window - o, lens[i]))
                nxt[i] = j
                sent_at[i] = now
                progress = True
                if not tail and lens[i] - j <= 2 * window:
                    # Before any session's last two windows: from now on every numbered echo
                    # is admitted, so each session's final echo is seen whatever its number.
                    set_filter(sock, sample_filter(0))
                    tail = True
                if mark is None and j == lens[i]:
                    # The measured interval ends here, when the first session has sent its
                    # last packet: until now every session kept a full window in flight, so
                    # every worker had work.  After it the workers finish one by one and the
                    # first to finish idles while the others still work: the end of a finite
                    # transfer, which a fixed count of packets per session would otherwise
                    # charge to the aggregate.
                    mark = (now - t0, echoed)
                    _emit("mark", seconds=mark[0], echoed=mark[1])
        while True:
            if recv_batch is not None:
                try:
                    batch = recv_batch(fd, 16)
                except InterruptedError:
                    break
            else:
                batch = _recv_pure(sock, 16)
            for key, gre_packet in batch:
                if key < 0:
                    continue
                i = ours.get(key & 0xFFFF, -1)
                if i < 0 or len(gre_packet) < 12 or not gre_packet[0] & 0x10:
                    continue
                seq = seq_of(gre_packet, 8)[0]
                c = (seq - base[i]) & 0xFFFFFFFF
                gap = c - counted[i]
                if gap <= 0 or c > nxt[i]:
                    continue  # not an echo of this blast (late, or numbered before it)
                sampled += 1
                if gap > step:
                    missing += 1  # an admitted echo never arrived (or came out of order)
                echoed += gap
                counted[i] = c
                sent_at[i] = now
                progress = True
                if c <= verify:
                    # Only the first echoes: each check steps the session's stateless MPPE
                    # receiver to the echo's coherency count, one RC4 key change per packet
                    # in between, so checking all along would cost a key change per echo.
                    checks[i].check(gre_packet, c - 1)
            if len(batch) < 16:
                break
        if not progress:
            if nap > 0:
                time.sleep(nap)
            else:
                select.select([sock], [], [], 0.005)
    elapsed = time.perf_counter() - t0
    if mark is None:
        mark = (elapsed, echoed)
        _emit("mark", seconds=elapsed, echoed=echoed)
    return {"sent": sum(nxt), "echoed_all": echoed, "seconds_all": elapsed, "stalls": stalls,
            "seconds": mark[0], "echoed": mark[1], "sampled": sampled,
            "sample_missing": missing, "checked": sum(c.checked for c in checks),
            "check_failed": sum(c.failed for c in checks)}


def _recv_pure(sock: Any, most: int) -> list[tuple[int, bytes]]:
    """recv_gre's answer without the extension: (our call ID, GRE packet) of each datagram."""
    out: list[tuple[int, bytes]] = []
    for _ in range(most):
        try:
            data = sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            break
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8:
            continue
        out.append((int.from_bytes(data[ihl + 6:ihl + 8], "big"), data[ihl:]))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pptpkit.lab.bench.agent")
    p.add_argument("role", choices=("server", "client", "setup", "scale", "blast"))
    p.add_argument("--netns", required=True)
    p.add_argument("--mppe", choices=MPPE_MODES, default="stateless")
    p.add_argument("--plane", choices=("tun", "echo"), default="echo")
    p.add_argument("--offload", choices=("on", "off"), default="on",
                   help="TUN checksum/TSO offloads and merged writes for the TUN data plane")
    p.add_argument("--echo-interval", type=float, default=10.0)
    p.add_argument("--max-sessions", type=int, default=64)
    p.add_argument("--sequential", type=int, default=20)
    p.add_argument("--concurrent", type=int, default=50)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--parallel", type=int, default=200)
    p.add_argument("--worker", default="0/1", help="server: worker I of N")
    p.add_argument("--balance", type=int, default=1, help="blast: sessions spread over N workers")
    p.add_argument("--packets", type=int, default=10000, help="blast: packets per session")
    p.add_argument("--window", type=int, default=32, help="blast: unechoed packets per session")
    p.add_argument("--seconds", type=float, default=30.0, help="blast: at most this long")
    p.add_argument("--sample", type=int, default=4, choices=range(0, 9),
                   help="blast: admit (count from) one echo in 2**N, by GRE sequence number")
    p.add_argument("--nap", type=float, default=0.0005,
                   help="blast: with every window full, sleep this long (0: wait for an echo)")
    p.add_argument("--tx", choices=("packet", "raw"), default="packet",
                   help="blast: send through a packet socket (IPv4 headers built ahead) or a raw IP socket")
    p.add_argument("--verify", type=int, default=512,
                   help="blast: decrypt and check the sampled echoes among each session's first N")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    enter(args.netns)
    _raise_fd_limit()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.role == "server" and os.environ.get("PPTPKIT_BENCH_TRACEMALLOC"):
        import tracemalloc

        tracemalloc.start(4)
    runner = {"server": run_server, "client": run_client, "setup": run_setup, "scale": run_scale,
              "blast": run_blast}[args.role]
    # uvloop cannot carry pyroute2's netlink socket (AsyncIPRoute), which configures the TUNs:
    # the agents with a TUN stay on the standard loop, the others take uvloop when installed.
    uses_tun = args.role == "client" or (args.role == "server" and args.plane == "tun")
    choice = "asyncio" if uses_tun else None

    def run_loop(main: Coroutine[Any, Any, None]) -> None:
        run_on_loop(main, choice=choice)

    # As ``pptpkit server`` does before it serves: start-up's objects out of the collector's
    # full scans, which otherwise walk them once in the first burst of setups.
    freeze_startup_heap()
    profile_to = os.environ.get("PPTPKIT_BENCH_PROFILE")
    try:
        if profile_to:
            # cProfile of the whole agent, one file per role (the benchmark's --profile DIR).
            # Timed in the process's CPU time, not wall time: on shared cores a wall-clock
            # profile charges whatever function was running when the scheduler preempted the
            # agent (most often a send that woke the peer), which hides the real costs.  The
            # pid keeps two agents of one role (the setup clients) from sharing a file.
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            try:
                profiler.runcall(run_loop, runner(args))
            finally:
                profiler.dump_stats(os.path.join(
                    profile_to, f"{args.role}-{args.mppe}-offload-{args.offload}-{describe()}"
                                f"-{os.getpid()}.prof"))
        else:
            run_loop(runner(args))
    except Exception as exc:
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        log.exception("agent failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
