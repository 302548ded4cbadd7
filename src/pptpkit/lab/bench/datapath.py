"""``pptpkit bench datapath``: what one received packet costs the built-in server, in process.

The throughput benchmark measures whole tunnels, where the kernel, the offloads and the
client's own work blur the server's share.  This one isolates the server's receive path: a
real :class:`~pptpkit.pptp.server.PptpServer` with the built-in sessions and a real
:class:`~pptpkit.pptp.client.PptpClient` set up a session over loopback TCP, their GRE sockets
replaced by in-memory demultiplexers (the one mock, below the I/O line).  The client then
seals ``packets`` IP packets (MPPE as asked) into GRE datagrams, captured instead of sent; the
timed loop hands those datagrams, IPv4 header on, to the server's demultiplexer exactly as its
raw socket's reader would, and the packets come out at a counting sink where the TUN would be.

The datagrams go in as the compiled reader hands them over: parsed, in ``recvmmsg``-sized
batches (:meth:`~pptpkit.gre.demux.GreDemux.route_batch`, which gives each call its run in one
call), so the batch entry points along the receive path are what is timed; ``batch`` 1 times
the one-datagram-at-a-time path instead.

So the figure is the server's whole per-packet cost from "datagram read" to "packet written",
in nanoseconds, without the two system calls (and, batched, without the parse): GRE
demultiplexing, the GRE engine, every hop between the GRE channel and the PPP link, MPPE and PPP
decapsulation.  The client's sealing of those packets is timed too (the send figure): IP
packet in, GRE datagram handed to the socket, fed as the TUN reader feeds the link -
``send_batch`` packets per ``PppLink.send_ips`` call, the segments of one TSO read (47 of 1400
octets in 64 KiB), or one by one with ``send_batch`` 1.
Compare runs of two checkouts side by side (see docs/performance.md) to price a change to that
path.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Final, cast

from pptpkit.gre import GreDemux
from pptpkit.gre.demux import parse_datagram
from pptpkit.gre.packet import Buffer, data_header
from pptpkit.io.gresock import Ancillary
from pptpkit.io.link import PacketSink, PppLink
from pptpkit.lab.bench.agent import SECRET, SERVER_NAME, USERNAME, mppe_policy, session_config
from pptpkit.ppp.session_config import LinkUp, SessionRole

if TYPE_CHECKING:
    from pptpkit.io.gresock import GreSocket

__all__ = ["DatapathResult", "measure_datapath"]

LOCALHOST: Final = "127.0.0.1"
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_INNER: Final = struct.Struct("!BBHHHBBH4s4s")
_PROBE_PROTO: Final = 253  # RFC 3692 experimentation protocol number
#: Datagrams per timed batch by default: what the compiled reader takes per ``recvmmsg``.
RECV_BATCH: Final = 64


class _MemoryGre(GreDemux):
    """A raw GRE socket without the socket: what is sent goes to ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.out: Callable[[bytes], object] | None = None
        #: While a send is timed, what send_parts and send_many were given, as given: the kernel
        #: gathers the parts, so joining them here would time our stand-in, not the path
        #: (None: joined and handed to ``out`` at once).
        self.held: list[tuple[bytes, Buffer] | tuple[int, int, int, Sequence[bytes]]] | None = None
        self.closed = False

    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        if self.out is not None:
            self.out(bytes(packet))
        return True

    def send_from(self, peer: str, packet: bytes | bytearray | memoryview, ancillary: Ancillary) -> bool:
        return self.send(peer, packet)

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), packet)

    def send_parts(self, peer: int, header: bytes, payload: bytes | bytearray | memoryview,
                   pktinfo: bytes | None) -> bool:
        if self.held is not None:
            self.held.append((header, payload))
        elif self.out is not None:
            self.out(header + payload)
        return True

    def send_many(self, peer: int, call_id: int, seq: int, ack: int, frames: Sequence[bytes],
                  pktinfo: bytes | None) -> int:
        if self.held is not None:
            self.held.append((call_id, seq, ack, frames))
        elif self.out is not None:
            for k, frame in enumerate(frames):
                self.out(data_header(call_id, len(frame), seq + k, ack) + frame)
        return len(frames)

    def release(self) -> None:
        """Stop holding: hand what was held to ``out`` as datagrams, in order."""
        held, self.held = self.held, None
        for item in held or ():
            if len(item) == 2:
                self.send_parts(0, *item, None)
            else:
                self.send_many(0, *item, None)

    def close(self) -> None:
        self.closed = True


def _ip_wrap(gre: bytes) -> bytes:
    """The IPv4 header a raw socket's reader sees in front of the GRE packet."""
    addr = socket.inet_aton(LOCALHOST)
    return _IPV4.pack(0x45, 0, 20 + len(gre), 0, 0, 64, 47, 0, addr, addr) + gre


class _CountingPlane:
    """A data plane whose sink only counts (where a TUN write would be); like a TUN it has a
    batch variant (``write_many``), which the link's batch path finds and uses."""

    def __init__(self) -> None:
        self.packets = 0

    def write(self, packet: bytes) -> None:
        self.packets += 1

    def write_many(self, packets: list[bytes]) -> None:
        self.packets += len(packets)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        link.interface = "bench"
        return self.write

    async def detach(self, link: PppLink) -> None:
        return None


@dataclass(frozen=True, slots=True)
class DatapathResult:
    mppe: str
    packets: int
    size: int
    ns_per_packet: list[float]
    delivered: int
    #: The client's send path per packet, IP packet in -> GRE datagram out (no system call),
    #: fed as the TUN reader feeds it: ``send_batch`` packets per call of ``PppLink.send_ips``
    #: (a TSO read's segments), or one by one through ``send_ip`` when ``send_batch`` is 1.
    send_ns_per_packet: list[float] = field(default_factory=list)
    send_batch: int = 1
    #: Datagrams per call of the server's reader path (``GreDemux.route_batch``, as one
    #: ``recvmmsg`` gives them), or 1: one at a time through ``dispatch``.
    batch: int = 1

    @property
    def median_ns(self) -> float:
        return statistics.median(self.ns_per_packet)

    def as_dict(self) -> dict[str, Any]:
        return {"mppe": self.mppe, "packets": self.packets, "size": self.size,
                "ns_per_packet": self.ns_per_packet, "median_ns": self.median_ns,
                "delivered": self.delivered, "send_ns_per_packet": self.send_ns_per_packet,
                "send_median_ns": self.send_median_ns, "send_batch": self.send_batch, "batch": self.batch}

    @property
    def send_median_ns(self) -> float:
        return statistics.median(self.send_ns_per_packet) if self.send_ns_per_packet else 0.0


def _probe(size: int, n: int) -> bytes:
    src, dst = IPv4Address("198.51.100.2").packed, IPv4Address("198.51.100.1").packed
    header = _INNER.pack(0x45, 0, size, n & 0xFFFF, 0, 64, _PROBE_PROTO, 0, src, dst)
    return header + bytes(size - len(header))


def _time_send(link: PppLink, gre: _MemoryGre, probes: list[bytes], batch: int) -> int:
    """Nanoseconds the client's link takes to send ``probes``: through ``send_ips`` in slices
    of ``batch`` (the TUN reader's batch path), or ``send_ip`` one by one when ``batch`` is 1."""
    gre.held = []
    send_ip, send_ips = link.send_ip, getattr(link, "send_ips", None)
    slices = [probes[at:at + batch] for at in range(0, len(probes), batch)]
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        if batch == 1 or send_ips is None:
            for probe in probes:
                send_ip(probe)
        else:
            for chunk in slices:
                send_ips(chunk)
        elapsed = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    gre.release()
    return elapsed


async def _measure(mppe: str, packets: int, size: int, repeat: int, send_batch: int = 47,
                   batch: int = RECV_BATCH) -> DatapathResult:
    # Imported here so that the module (and `pptpkit bench --help`) stays cheap to import.
    from pptpkit.auth.secrets import StaticSecrets
    from pptpkit.pptp.client import PptpClient, PptpClientConfig
    from pptpkit.pptp.server import PptpServer, PptpServerConfig
    from pptpkit.vpn.pool import AddressPool
    from pptpkit.vpn.server import BuiltinConfig, BuiltinSessions

    loop = asyncio.get_running_loop()
    server_gre, client_gre = _MemoryGre(), _MemoryGre()
    # Setup: each side's datagrams reach the other on the next loop turn, as a network would.
    server_gre.out = lambda d: loop.call_soon(client_gre.dispatch, _ip_wrap(d), loop.time())
    client_gre.out = lambda d: loop.call_soon(server_gre.dispatch, _ip_wrap(d), loop.time())

    plane = _CountingPlane()
    builtin = BuiltinSessions(BuiltinConfig(
        pool=AddressPool(["198.51.100.1"], ["198.51.100.2"]),
        secrets=StaticSecrets({(USERNAME, SERVER_NAME): SECRET}),
        name=SERVER_NAME, mppe=mppe_policy(mppe),
        auth_policy=session_config(SessionRole.SERVER, mppe, echo_interval=0).auth_policy,
        echo_interval=0, mru=1400,
    ), plane)
    # The in-memory demux has every method of the socket the server uses.
    server = PptpServer(PptpServerConfig(listen=LOCALHOST, port=0, echo_interval=None, window=64),
                        builtin, gre_socket=cast("GreSocket", server_gre))
    await server.start()
    client = PptpClient(PptpClientConfig(server=LOCALHOST, port=server.port, echo_interval=None,
                                         respect_peer_window=False),
                        gre_socket=cast("GreSocket", client_gre))
    try:
        await client.connect()
        call = await client.open_call()
        link = PppLink(session_config(SessionRole.CLIENT, mppe, echo_interval=0), call, None,
                       name="bench client")
        call.on_frame = link.frame_received
        link.start()
        up = await asyncio.wait_for(link.wait_up(), 10.0)
        assert up.peer_address == IPv4Address("198.51.100.1")
        # Let the server's LinkUp task attach its (counting) data plane.
        for _ in range(100):
            if plane.packets == 0 and builtin.links and builtin.links[0].up is not None:
                break
            await asyncio.sleep(0.01)

        server_gre.out = None  # acks from the server are not needed any more
        runs: list[float] = []
        sends: list[float] = []
        for _ in range(repeat):
            captured: list[bytes] = []
            client_gre.out = captured.append
            sends.append(_time_send(link, client_gre, [_probe(size, i) for i in range(packets)], send_batch)
                         / packets)
            client_gre.out = None
            datagrams = [_ip_wrap(d) for d in captured]
            if len(datagrams) != packets:
                raise RuntimeError(f"the client sent {len(datagrams)} of {packets} packets")
            before = plane.packets
            dispatch = server_gre.dispatch
            route_batch = server_gre.route_batch
            # What the compiled reader's recvmmsg hands route_batch: (key, GRE packet) pairs,
            # parsed (in C there, here before the clock starts), ``batch`` at a time.
            parsed = [(key, d[ihl:]) for d in datagrams for key, ihl in (parse_datagram(d),)]
            batches = [parsed[i:i + batch] for i in range(0, len(parsed), batch)]
            now = loop.time()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                if batch > 1:
                    for run in batches:
                        route_batch(run, now)
                else:
                    for datagram in datagrams:
                        dispatch(datagram, now)
                elapsed = time.perf_counter_ns() - t0
            finally:
                gc.enable()
            got = plane.packets - before
            if got != packets:
                raise RuntimeError(f"the server delivered {got} of {packets} packets")
            runs.append(elapsed / packets)
            await asyncio.sleep(0)
        return DatapathResult(mppe, packets, size, runs, plane.packets, sends, send_batch, batch)
    finally:
        # Both directions again, so that the LCP Terminate exchange ends the session at once.
        server_gre.out = lambda d: loop.call_soon(client_gre.dispatch, _ip_wrap(d), loop.time())
        client_gre.out = lambda d: loop.call_soon(server_gre.dispatch, _ip_wrap(d), loop.time())
        await builtin.close_all()
        await client.close()
        await server.close()


def measure_datapath(*, mppe: str = "none", packets: int = 20000, size: int = 1400,
                     repeat: int = 5, send_batch: int = 47, batch: int = RECV_BATCH) -> DatapathResult:
    """Median-friendly figures: ``repeat`` timed passes of ``packets`` packets each; the server
    gets them ``batch`` datagrams at a time, as its ``recvmmsg`` reader does (1: one datagram at
    a time through ``dispatch``, the reader without the compiled primitives)."""
    if batch < 1 or send_batch < 1:
        raise ValueError("batch sizes must be at least 1")
    return asyncio.run(_measure(mppe, packets, size, repeat, send_batch, batch))
