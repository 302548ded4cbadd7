"""The client-side processes of ``pptpkit bench soak`` (:mod:`pptpkit.lab.bench.soak`).

Run as ``python -m pptpkit.lab.bench.soakagent ROLE --netns NS [options]``; like
:mod:`pptpkit.lab.bench.agent` it writes JSON lines (``{"event": ...}``) on stdout and reads
commands, one per line, on stdin.

Roles:

* ``clients``: ``--sessions N`` library sessions against the real ``pptpkit server``, each
  reconnecting after every end with ``pptpkit connect --persist``'s backoff (1, 2, 4, 8, 10 s,
  reset after a link that stayed up 30 s), and each sending an ICMP Echo Request to the
  server's tunnel address every ``--probe-interval`` seconds while it is up (the server's kernel
  answers through the shared TUN).  Commands: ``phase NAME`` (label the following probes), ``count`` (emit
  how many sessions are up),
  ``report`` (emit every session's up/down times and probe counts), ``close`` (close every
  session cleanly, stop reconnecting, emit ``closed``).
* ``hostile``: the floods of issue 14, from its own address: an unauthenticated control
  connection sending Echo-Requests and unknown message types at ``--rate`` messages/s, GRE
  packets forged with the legitimate clients' source address, random call IDs and sequence
  numbers far ahead (pairs X, X + 2**31) at ``--gre-rate`` packets/s, and ``--pending-calls``
  calls that never answer LCP (reopened as soon as the server clears them).  Commands:
  ``start``, ``stop`` (emit ``stats``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any, Final

from pptpkit.auth.base import PeerConfig
from pptpkit.control import CallIdAllocator
from pptpkit.control.messages import (
    EchoRequest,
    OutgoingCallRequest,
    RawControlMessage,
    StartControlConnectionRequest,
)
from pptpkit.gre.packet import encode_gre
from pptpkit.io.grechannel import acquire_gre_socket, release_gre_socket
from pptpkit.io.link import PacketSink, PppLink
from pptpkit.io.loop import run as run_on_loop
from pptpkit.lab.bench.agent import mppe_policy
from pptpkit.lab.netns import enter
from pptpkit.ppp.session_config import LinkUp, SessionConfig, SessionRole
from pptpkit.pptp.client import PptpClient, PptpClientConfig
from pptpkit.vpn.connect import Backoff

__all__ = ["main"]

_ICMP_ECHO: Final = 8
_ICMP_ECHO_REPLY: Final = 0
_IPV4: Final = struct.Struct("!BBHHHBBH4s4s")
_ICMP: Final = struct.Struct("!BBHHH")
_PPTP_PORT: Final = 1723
#: Control message types no PPTP version defines (1..15 are taken).
_UNKNOWN_TYPES: Final = (16, 99, 200, 0xFFFF)


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(src: IPv4Address, dst: IPv4Address, ident: int, seq: int) -> bytes:
    """An IPv4 ICMP Echo Request from ``src`` to ``dst`` (56 octets of payload, as ping)."""
    payload = struct.pack("!d", time.monotonic()).ljust(56, b"\x5a")
    icmp = _ICMP.pack(_ICMP_ECHO, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    header = _IPV4.pack(0x45, 0, 20 + len(icmp), seq, 0, 64, socket.IPPROTO_ICMP, 0, src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + icmp


def echo_reply_key(packet: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an ICMP Echo Reply, else None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_ICMP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[ihl] != _ICMP_ECHO_REPLY:
        return None
    _type, _code, _sum, ident, seq = _ICMP.unpack_from(packet, ihl)
    return ident, seq


async def _commands(handler: Any) -> None:
    """Feed each stdin line to ``handler(line)`` until EOF (then ``handler("eof")``)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            await handler("eof")
            return
        text = line.decode().strip()
        if text and await handler(text):
            return


# -- clients -------------------------------------------------------------------------------------


def _phase_text(link: PppLink) -> str:
    """How far a link got: its RFC 1661 phase, and the outcome if it ended."""
    session = link.session
    text = session.phase.value
    if link.down_event is not None:
        text += f", {link.down_event.outcome.name}"
    return text


class ProbeCounts:
    __slots__ = ("lost", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.lost = 0


class Slot:
    """One persistent session: its reconnect loop, its probes and what happened to it."""

    def __init__(self, index: int, pool: Clients) -> None:
        self.index = index
        self.pool = pool
        self.ups: list[float] = []
        self.downs: list[tuple[float, str]] = []
        self.failures = 0
        self.probes: dict[str, ProbeCounts] = {}
        self.link: PppLink | None = None
        self.client: PptpClient | None = None
        self.up: LinkUp | None = None
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.seq = 0
        self.stopping = False
        self.stage = "control"

    def as_dict(self) -> dict[str, Any]:
        return {"ups": self.ups, "downs": self.downs, "failures": self.failures,
                "probes": {k: [v.sent, v.lost] for k, v in self.probes.items()}}

    async def run(self) -> None:
        backoff = Backoff()
        # Spread the first attempts a little so 500 do not hit the listen queue in one burst.
        await asyncio.sleep(random.uniform(0, self.pool.args.ramp))
        while not self.stopping:
            up_for: float | None = None
            attempt = time.monotonic()
            try:
                await self._open()
            except Exception as exc:  # every failure is retried, as --persist does
                self.failures += 1
                # Where it failed and after how long: the report splits the failed attempts
                # after the restart by stage (control connection, call, PPP phase).
                took = time.monotonic() - attempt
                self.downs.append((time.monotonic(), f"setup ({self.stage}, {took:.1f} s): "
                                   f"{type(exc).__name__}: {exc}"[:160]))
            else:
                assert self.link is not None
                started = time.monotonic()
                self.ups.append(started)
                probe = asyncio.ensure_future(self._probe_loop())
                down = await asyncio.shield(self.link.closed)
                probe.cancel()
                up_for = time.monotonic() - started
                if not self.stopping:
                    self.downs.append((time.monotonic(), f"{down.outcome.name}: {down.reason}"[:160]))
                await self._drop_client()
            if self.stopping:
                return
            await self.pool.sleep(backoff.next_delay(up_for))

    async def _open(self) -> None:
        args = self.pool.args
        client = PptpClient(PptpClientConfig(server=args.server, echo_interval=60.0,
                                             connect_timeout=10.0, call_timeout=10.0),
                            call_ids=self.pool.call_ids)
        self.client = client
        self.stage = "control"
        try:
            await client.connect()
            self.stage = "call"
            early: list[bytes] = []
            call = await client.open_call(on_frame=early.append)
            link = PppLink(self.pool.config, call, self.pool, name=f"soak {self.index}")
            self.link = link
            call.on_frame = link.frame_received
            call.on_close = lambda info: link.lower_down(info.reason)
            link.start()
            for frame in early:
                link.frame_received(frame)
            self.stage = "link"
            try:
                self.up = await asyncio.wait_for(link.wait_up(), 30.0)
            finally:
                if self.up is None:
                    self.stage = f"link, {_phase_text(link)}"
        except BaseException:
            if self.link is not None:
                self.link.lower_down("setup failed")
            await self._drop_client()
            raise

    async def _drop_client(self) -> None:
        client, self.client, self.link, self.up = self.client, None, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5.0)

    async def _probe_loop(self) -> None:
        args = self.pool.args
        await asyncio.sleep(random.uniform(0, args.probe_interval))
        # Not awaited: a probe waits up to its timeout, the next one leaves on time.  Not
        # cancelled with the loop either: one in flight when its link ends uncounts itself.
        running: set[asyncio.Task[None]] = set()
        while True:
            task = asyncio.get_running_loop().create_task(self._probe())
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(args.probe_interval)

    async def _probe(self) -> None:
        link, up = self.link, self.up
        if link is None or up is None or link.finished:
            return
        counts = self.probes.setdefault(self.pool.phase, ProbeCounts())
        self.seq = (self.seq + 1) & 0xFFFF
        seq = self.seq
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[seq] = waiter
        assert up.local_address is not None and up.peer_address is not None
        counts.sent += 1
        link.send_ip(echo_request(up.local_address, up.peer_address, self.index & 0xFFFF, seq))
        try:
            await asyncio.wait_for(waiter, self.pool.args.probe_timeout)
        except TimeoutError:
            # A probe whose session ended meanwhile is not a lost probe: the session's end is
            # counted on its own.
            if self.link is link and not link.finished:
                counts.lost += 1
            else:
                counts.sent -= 1
        finally:
            self.waiters.pop(seq, None)

    def received(self, packet: bytes) -> None:
        key = echo_reply_key(packet)
        if key is not None and key[0] == self.index & 0xFFFF:
            waiter = self.waiters.pop(key[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        self.stopping = True
        link = self.link
        if link is not None and not link.finished:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.aclose(timeout=3.0), 8.0)
        await self._drop_client()


class Clients:
    """The data plane of every slot (no kernel: packets from the server go to their slot)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.phase = "start"
        self.call_ids = CallIdAllocator(max_in_use=min(65535, max(args.sessions * 4, 32767)))
        self.config = SessionConfig(
            role=SessionRole.CLIENT, peer=PeerConfig(username=args.user, password=args.password),
            mppe=mppe_policy(args.mppe), echo_interval=args.echo_interval, ipv6=False)
        self.slots = [Slot(i, self) for i in range(args.sessions)]
        self._by_link: dict[PppLink, Slot] = {}
        self._wake = asyncio.Event()

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        link.interface = "soak"
        slot = self.slots[int(link.name.split()[1])]
        return slot.received

    async def detach(self, link: PppLink) -> None:
        return None

    async def sleep(self, seconds: float) -> None:
        # Interrupted by close: a slot waiting out a backoff must not hold the shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)


async def run_clients(args: argparse.Namespace) -> None:
    gre = acquire_gre_socket()  # held: one socket and its counters for every session and restart
    pool = Clients(args)
    tasks = [asyncio.ensure_future(slot.run()) for slot in pool.slots]
    t0 = time.monotonic()

    async def announce() -> None:
        end = t0 + args.establish_timeout
        while time.monotonic() < end:
            if all(s.link is not None and s.up is not None for s in pool.slots):
                break
            await asyncio.sleep(0.2)
        up = sum(1 for s in pool.slots if s.up is not None)
        _emit("established", sessions=up, wanted=len(pool.slots), seconds=time.monotonic() - t0,
              failures=sum(s.failures for s in pool.slots),
              reasons=[r for s in pool.slots for _, r in s.downs][:5])

    announcer = asyncio.ensure_future(announce())

    async def handle(line: str) -> bool:
        if line.startswith("phase "):
            pool.phase = line.split(None, 1)[1]
            _emit("phase", phase=pool.phase, up=sum(1 for s in pool.slots if s.up is not None))
        elif line == "count":
            _emit("count", up=sum(1 for s in pool.slots if s.up is not None))
        elif line == "report":
            _emit("report", slots=[s.as_dict() for s in pool.slots],
                  up=sum(1 for s in pool.slots if s.up is not None),
                  gre={"unknown_call": gre.stats.unknown_call, "receive_errors": gre.stats.receive_errors})
        elif line in ("close", "eof"):
            announcer.cancel()
            for slot in pool.slots:
                slot.stopping = True
            pool._wake.set()
            await asyncio.gather(*(s.close() for s in pool.slots), return_exceptions=True)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _emit("closed")
            return True
        return False

    await _commands(handle)
    release_gre_socket(gre)


# -- hostile -------------------------------------------------------------------------------------


class Hostile:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats: dict[str, Any] = {
            "control_sent": 0, "control_echo_replies": 0, "control_messages_received": 0,
            "control_closed_by_server": 0, "control_connect_failed": 0,
            "gre_forged": 0,
            "calls_attempted": 0, "calls_connected": 0, "calls_refused": 0,
            "calls_closed_by_server": 0, "call_connect_failed": 0, "call_hold_seconds": [],
        }

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(
            self.args.server, _PPTP_PORT, local_addr=(self.args.source, 0)), 10.0)

    @staticmethod
    async def _message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readexactly(2)
        size = struct.unpack("!H", head)[0]
        body = await reader.readexactly(max(size - 2, 0))
        data = head + body
        return (struct.unpack_from("!H", data, 8)[0] if len(data) >= 10 else -1), data

    async def control_flood(self) -> None:
        st = self.stats
        echo = EchoRequest(identifier=1).encode()
        unknown = [RawControlMessage(raw_type=t, body=b"\0" * 8).encode() for t in _UNKNOWN_TYPES]
        tick = 0.01
        per_tick = max(1, round(self.args.rate * tick))
        while True:
            try:
                reader, writer = await self._open()
            except (OSError, TimeoutError):
                st["control_connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue

            async def read(reader: asyncio.StreamReader = reader) -> None:
                with contextlib.suppress(asyncio.IncompleteReadError, OSError):
                    while True:
                        kind, _ = await self._message(reader)
                        st["control_messages_received"] += 1
                        if kind == 6:
                            st["control_echo_replies"] += 1

            reading = asyncio.ensure_future(read())
            try:
                writer.write(StartControlConnectionRequest(host_name="hostile").encode())
                n = 0
                while not reading.done():
                    batch = b"".join(echo if (n + i) % 2 == 0 else unknown[(n + i) // 2 % len(unknown)]
                                     for i in range(per_tick))
                    writer.write(batch)
                    n += per_tick
                    st["control_sent"] += per_tick
                    # Bounded: a server that stops reading must not grow our buffer forever.
                    if writer.transport.get_write_buffer_size() > 1 << 20:
                        await asyncio.wait_for(writer.drain(), 30.0)
                    await asyncio.sleep(tick)
            except (OSError, TimeoutError):
                pass
            finally:
                reading.cancel()
                writer.close()
            st["control_closed_by_server"] += 1
            await asyncio.sleep(0.5)

    async def gre_forge(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sock.setblocking(False)
        src = IPv4Address(self.args.spoof).packed
        dst = IPv4Address(self.args.server).packed
        tick = 0.01
        per_tick = max(2, round(self.args.gre_rate * tick))
        try:
            while True:
                for _ in range(per_tick // 2):
                    call_id = random.randrange(65536)
                    seq = random.randrange(1 << 32)
                    for s in (seq, (seq + (1 << 31)) & 0xFFFFFFFF):
                        gre = encode_gre(call_id, os.urandom(12), s, None)
                        header = _IPV4.pack(0x45, 0, 20 + len(gre), 0, 0, 64, 47, 0, src, dst)
                        with contextlib.suppress(BlockingIOError, OSError):
                            sock.sendto(header + gre, (self.args.server, 0))
                            self.stats["gre_forged"] += 1
                await asyncio.sleep(tick)
        finally:
            sock.close()

    async def pending_call(self) -> None:
        st = self.stats
        while True:
            st["calls_attempted"] += 1
            try:
                reader, writer = await self._open()
            except (OSError, TimeoutError):
                st["call_connect_failed"] += 1
                await asyncio.sleep(1.0)
                continue
            try:
                writer.write(StartControlConnectionRequest(host_name="hostile").encode())
                kind, _ = await asyncio.wait_for(self._message(reader), 10.0)
                writer.write(OutgoingCallRequest(call_id=random.randrange(1, 65536),
                                                 call_serial_number=1, maximum_bps=100000000,
                                                 packet_receive_window=64).encode())
                while True:
                    kind, data = await asyncio.wait_for(self._message(reader), 10.0)
                    if kind == 8:  # Outgoing-Call-Reply
                        break
                if data[16] != 1:  # result code (after call ID and peer call ID): 1 = connected
                    st["calls_refused"] += 1
                    await asyncio.sleep(1.0)
                    continue
                st["calls_connected"] += 1
                t0 = time.monotonic()
                # Never answer LCP; wait for the server to give up on us.
                with contextlib.suppress(asyncio.IncompleteReadError, OSError):
                    while True:
                        kind, _ = await self._message(reader)
                        if kind in (13, 4):  # Call-Disconnect-Notify, Stop-Control-Connection-Request
                            break
                st["calls_closed_by_server"] += 1
                st["call_hold_seconds"].append(round(time.monotonic() - t0, 2))
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                st["call_connect_failed"] += 1
                await asyncio.sleep(1.0)
            finally:
                writer.close()


async def run_hostile(args: argparse.Namespace) -> None:
    hostile = Hostile(args)
    tasks: list[asyncio.Future[None]] = []
    started: list[float] = []

    async def handle(line: str) -> bool:
        if line == "start" and not tasks:
            started.append(time.monotonic())
            tasks.append(asyncio.ensure_future(hostile.control_flood()))
            if args.gre_rate > 0:
                tasks.append(asyncio.ensure_future(hostile.gre_forge()))
            tasks.extend(asyncio.ensure_future(hostile.pending_call()) for _ in range(args.pending_calls))
            _emit("started")
        elif line in ("stop", "eof"):
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            seconds = time.monotonic() - started[0] if started else 0.0
            _emit("stats", seconds=seconds, **hostile.stats)
            return True
        return False

    await _commands(handle)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pptpkit.lab.bench.soakagent")
    p.add_argument("role", choices=("clients", "hostile"))
    p.add_argument("--netns", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--user", default="soak")
    p.add_argument("--password", default="")
    p.add_argument("--mppe", choices=("stateless", "stateful", "none"), default="stateless")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--ramp", type=float, default=5.0)
    p.add_argument("--echo-interval", type=float, default=10.0)
    p.add_argument("--probe-interval", type=float, default=2.0)
    p.add_argument("--probe-timeout", type=float, default=3.0)
    p.add_argument("--establish-timeout", type=float, default=120.0)
    p.add_argument("--source", default="192.0.2.3")
    p.add_argument("--spoof", default="192.0.2.2")
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--gre-rate", type=float, default=1000.0)
    p.add_argument("--pending-calls", type=int, default=8)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    enter(args.netns)
    if args.role == "clients" and not args.password:
        # Not on the command line (ps shows it): from the environment the orchestrator sets.
        args.password = os.environ.get("PPTPKIT_PASSWORD", "")
    runner = run_clients if args.role == "clients" else run_hostile
    try:
        run_on_loop(runner(args))
    except Exception as exc:
        _emit("error", error=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
