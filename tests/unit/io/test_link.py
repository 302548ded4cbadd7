"""PppLink on a real event loop, two links back to back over in-memory transports."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from ipaddress import IPv4Address
from typing import Any

import pytest

from pptpkit.auth.base import AuthenticatorConfig, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import PptpkitError
from pptpkit.io.link import MAX_EARLY_FRAMES, MAX_HELD_PACKETS, LinkDownError, PacketSink, PppLink
from pptpkit.io.ratelimit import TokenBucket
from pptpkit.ppp.fsm import FsmConfig
from pptpkit.ppp.session_config import (
    AccmChanged,
    LinkDown,
    LinkUp,
    MppePolicy,
    Outcome,
    SessionConfig,
    SessionEvent,
    SessionRole,
)

SERVER_IP, CLIENT_IP = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
PING = bytes([0x45, 0, 0, 28]) + bytes(8) + SERVER_IP.packed + CLIENT_IP.packed + bytes(8)


class Wire:
    """A frame transport whose frames reach the other end on the next loop iteration."""

    def __init__(self) -> None:
        self.peer: Callable[[bytes], None] | None = None
        self.sent = 0
        self.closes = 0
        self.link_info: list[tuple[int, int]] = []
        self.up = True
        self.on_close: Callable[[], None] | None = None

    def send_frame(self, frame: bytes) -> bool:
        if not self.up:
            return False
        self.sent += 1
        peer = self.peer
        if peer is not None:
            asyncio.get_running_loop().call_soon(peer, frame)
        return True

    def set_link_info(self, send_accm: int, receive_accm: int) -> None:
        self.link_info.append((send_accm, receive_accm))

    async def close(self) -> None:
        self.closes += 1
        self.up = False
        if self.on_close is not None:
            self.on_close()


class MemoryPlane:
    def __init__(self, *, fail: bool = False) -> None:
        self.received: list[bytes] = []
        self.attached: list[LinkUp] = []
        self.detached = 0
        self.fail = fail

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        await asyncio.sleep(0)
        if self.fail:
            raise PptpkitError("no TUN for you")
        self.attached.append(up)
        link.interface = "mem0"
        return self.received.append

    async def detach(self, link: PppLink) -> None:
        self.detached += 1


def configs(*, mppe: bool = True, password: str = "s3cret") -> tuple[SessionConfig, SessionConfig]:
    secrets = StaticSecrets({("alice", "pptpd"): "s3cret"})
    policy = MppePolicy(required=True) if mppe else MppePolicy.nomppe()
    server = SessionConfig(
        role=SessionRole.SERVER,
        auth_policy=AuthPolicy(require=frozenset({AuthMethod.MSCHAP_V2})),
        authenticator=AuthenticatorConfig(name="pptpd", secrets=secrets),
        local_address=SERVER_IP, peer_address=CLIENT_IP, mppe=policy,
        fsm=_fast_fsm())
    client = SessionConfig(role=SessionRole.CLIENT, peer=PeerConfig(username="alice", password=password),
                           mppe=policy, fsm=_fast_fsm())
    return server, client


def _fast_fsm() -> FsmConfig:
    return FsmConfig(restart_interval=0.2)


def pair(server_cfg: SessionConfig, client_cfg: SessionConfig, *, server_plane: MemoryPlane | None,
         client_plane: MemoryPlane | None,
         source_check: bool = False) -> tuple[PppLink, PppLink, Wire, Wire, list[SessionEvent]]:
    to_client, to_server = Wire(), Wire()
    events: list[SessionEvent] = []

    def on_event(link: PppLink, event: SessionEvent) -> None:
        events.append(event)
        if isinstance(event, LinkUp) and server_plane is not None:
            # LinkUp is passed on only once the data plane is attached.
            assert link.interface == "mem0" and link.up is event

    server = PppLink(server_cfg, to_client, server_plane, name="server", on_event=on_event,
                     source_check=source_check)
    client = PppLink(client_cfg, to_server, client_plane, name="client")
    to_client.peer = client.frame_received
    to_server.peer = server.frame_received
    # A transport that closes takes the other side's lower layer with it, as a cleared call does.
    to_client.on_close = lambda: client.lower_down("call cleared")
    to_server.on_close = lambda: server.lower_down("call cleared")
    return server, client, to_client, to_server, events


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


@pytest.mark.parametrize("mppe", [True, False])
def test_up_packets_both_ways_and_clean_close(mppe: bool) -> None:
    async def main() -> None:
        sp, cp = MemoryPlane(), MemoryPlane()
        server, client, _, to_server, events = pair(*configs(mppe=mppe), server_plane=sp,
                                                             client_plane=cp)
        server.start()
        client.start()
        up_s, up_c = await server.wait_up(), await client.wait_up()
        assert up_s.peer_address == CLIENT_IP and up_c.local_address == CLIENT_IP
        assert up_s.username == "alice"
        assert (up_s.mppe != "none") is mppe
        assert up_s.mtu == 1500 - (4 if mppe else 0)
        assert server.interface == "mem0" and server.up is up_s
        # LinkUp reaches on_event only after the data plane attached.
        assert sum(isinstance(e, LinkUp) for e in events) == 1
        assert to_server.link_info and all(len(x) == 2 for x in to_server.link_info)
        assert any(isinstance(e, AccmChanged) for e in events)
        for i in range(50):
            assert client.send_ip(PING + bytes([i]))
            assert server.send_ip(PING[:-1] + bytes([i, 0xAA]))
        for _ in range(100):
            if len(sp.received) == 50 and len(cp.received) == 50:
                break
            await asyncio.sleep(0.01)
        assert sp.received == [PING + bytes([i]) for i in range(50)]
        assert cp.received == [PING[:-1] + bytes([i, 0xAA]) for i in range(50)]
        assert server.stats.packets_in == 50 and server.stats.packets_out == 50
        assert client.stats.octets_out == 50 * (len(PING) + 1)
        down = await client.aclose("bye")
        assert down.outcome is Outcome.LOCAL_CLOSE
        assert client.closed.done() and cp.detached == 1 and to_server.closes == 1
        sdown = await asyncio.wait_for(asyncio.shield(server.closed), 5)
        assert sdown.outcome in (Outcome.PEER_TERMINATED, Outcome.LOWER_LAYER_DOWN)
        assert sp.detached == 1
        assert isinstance(events[-1], LinkDown)
        # After the end nothing goes out any more.
        assert not server.send_ip(PING)
        assert server.stats.refused_by_session == 1

    run(main())


def test_wrong_password_ends_before_up() -> None:
    async def main() -> None:
        sp = MemoryPlane()
        server, client, *_ = pair(*configs(password="wrong"), server_plane=sp, client_plane=None)
        server.start()
        client.start()
        with pytest.raises(LinkDownError) as info:
            await server.wait_up()
        assert info.value.down.outcome is Outcome.PEER_AUTH_FAILED
        cdown = await asyncio.wait_for(asyncio.shield(client.closed), 5)
        assert cdown.outcome is Outcome.AUTH_TOPEER_FAILED and cdown.exit_status == 19
        assert sp.attached == [] and sp.detached == 0

    run(main())


def test_data_plane_failure_closes_the_session() -> None:
    async def main() -> None:
        server, client, *_ = pair(*configs(), server_plane=MemoryPlane(fail=True), client_plane=None)
        server.start()
        client.start()
        down = await asyncio.wait_for(asyncio.shield(server.closed), 5)
        assert down.outcome is Outcome.LOCAL_CLOSE
        assert down.reason.startswith("data plane failed: no TUN for you")
        assert server.up is None

    run(main())


async def _both_up(server: PppLink, client: PppLink) -> None:
    server.start()
    client.start()
    await server.wait_up()
    await client.wait_up()


def test_lower_down_and_no_data_plane_drops() -> None:
    async def main() -> None:
        server, client, to_client, _, _ = pair(*configs(mppe=False), server_plane=None,
                                               client_plane=MemoryPlane())
        await _both_up(server, client)
        client.send_ip(PING)
        for _ in range(100):
            if server.stats.dropped_no_data_plane:
                break
            await asyncio.sleep(0.01)
        assert server.stats.dropped_no_data_plane == 1 and server.stats.packets_in == 0
        server.lower_down("gone")
        down = await asyncio.wait_for(asyncio.shield(server.closed), 5)
        assert down.outcome is Outcome.LOWER_LAYER_DOWN and down.exit_status == 16
        # The link hangs up its transport, which here takes the client's lower layer along.
        cdown = await asyncio.wait_for(asyncio.shield(client.closed), 5)
        assert cdown.outcome is Outcome.LOWER_LAYER_DOWN and to_client.closes == 1

    run(main())


def test_peer_silence_times_out_with_one_timer() -> None:
    async def main() -> None:
        wire = Wire()  # nobody answers
        server_cfg, _ = configs()
        link = PppLink(server_cfg, wire, None)
        link.start()
        down = await asyncio.wait_for(asyncio.shield(link.closed), 10)
        # LCP gave up after its Configure-Requests (max-configure 10 at 0.2 s).
        assert down.outcome is Outcome.NEGOTIATION_FAILED
        assert wire.sent >= 5 and wire.closes == 1
        with pytest.raises(Exception, match="twice"):
            link.start()

    run(main())


def test_frames_before_start_are_kept_for_it() -> None:
    """The peer speaks first and the link is started a little later: its Configure-Request is
    answered from start(), not after the peer's restart timer (default 3 s)."""

    async def main() -> None:
        server_cfg, client_cfg = configs()
        slow = FsmConfig(restart_interval=3.0)
        server_cfg = dataclasses.replace(server_cfg, fsm=slow)
        client_cfg = dataclasses.replace(client_cfg, fsm=slow)
        server, client, _, _, _ = pair(server_cfg, client_cfg, server_plane=MemoryPlane(),
                                               client_plane=MemoryPlane())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        server.start()
        await asyncio.sleep(0.05)  # the server's Configure-Request is waiting at the client
        assert client.stats.early_frames_dropped == 0
        client.start()
        await asyncio.wait_for(client.wait_up(), 2.0)
        # Up well inside one restart interval: nothing had to be sent twice.
        assert loop.time() - t0 < 1.0
        await client.aclose("bye")
        await asyncio.wait_for(asyncio.shield(server.closed), 5)

    run(main())


def test_frames_before_start_are_capped() -> None:
    async def main() -> None:
        _, client_cfg = configs()
        client = PppLink(client_cfg, Wire(), None, name="client")
        for _ in range(MAX_EARLY_FRAMES + 5):
            client.frame_received(b"\xff\x03\xc0\x21\x01\x01\x00\x04")
        assert client.stats.early_frames_dropped == 5
        client.lower_down("gone")
        await asyncio.wait_for(asyncio.shield(client.closed), 5)

    run(main())



def _ipv4(src: IPv4Address, dst: IPv4Address) -> bytes:
    return bytes([0x45, 0, 0, 28]) + bytes(8) + src.packed + dst.packed + bytes(8)


@pytest.mark.parametrize("mppe", [True, False])
def test_source_check_drops_packets_not_from_the_peer_address(mppe: bool) -> None:
    async def main() -> None:
        sp = MemoryPlane()
        server, client, *_ = pair(*configs(mppe=mppe), server_plane=sp, client_plane=MemoryPlane(),
                                  source_check=True)
        await _both_up(server, client)
        good = _ipv4(CLIENT_IP, SERVER_IP)
        spoofed = _ipv4(IPv4Address("192.0.2.77"), SERVER_IP)  # another user's address
        for packet in (good, spoofed, good[:12], good):
            client.send_ip(packet)
        for _ in range(100):
            if server.stats.packets_in + server.stats.source_refused >= 3:
                break
            await asyncio.sleep(0.01)
        assert sp.received == [good, good]
        # A truncated packet has no source to check: refused too (if the client sent it at all).
        assert server.stats.source_refused in (1, 2)
        await client.aclose("bye")

    run(main())


def test_without_source_check_any_source_passes() -> None:
    async def main() -> None:
        sp = MemoryPlane()
        server, client, *_ = pair(*configs(mppe=False), server_plane=sp, client_plane=MemoryPlane())
        await _both_up(server, client)
        spoofed = _ipv4(IPv4Address("192.0.2.77"), SERVER_IP)
        assert client.send_ip(spoofed)
        for _ in range(100):
            if sp.received:
                break
            await asyncio.sleep(0.01)
        assert sp.received == [spoofed] and server.stats.source_refused == 0
        await client.aclose("bye")

    run(main())


def test_policers_drop_over_the_rate_each_way_and_can_be_lifted() -> None:
    """The shared TUN's shaper: a bucket per direction in the link; over-rate packets are
    dropped (counted in the bucket, not in the link's counters) before they are encrypted."""

    async def main() -> None:
        sp, cp = MemoryPlane(), MemoryPlane()
        server, client, *_ = pair(*configs(), server_plane=sp, client_plane=cp)
        await _both_up(server, client)
        assert server.policers == (None, None)
        now = server.loop.time()
        # Two packets of burst and a rate that refills nothing within the test.
        down = TokenBucket(rate=0.001, burst=2 * len(PING), now=now)
        up = TokenBucket(rate=0.001, burst=2 * len(PING), now=now)
        server.set_policers(down, up)
        assert server.policers == (down, up)
        assert [server.send_ip(PING) for _ in range(5)] == [True, True, False, False, False]
        for _ in range(5):
            assert client.send_ip(PING)
        for _ in range(100):
            if len(sp.received) + up.dropped >= 5 and len(cp.received) >= 2:
                break
            await asyncio.sleep(0.01)
        assert (len(sp.received), up.dropped, up.dropped_octets) == (2, 3, 3 * len(PING))
        assert (len(cp.received), down.dropped) == (2, 3)
        assert server.stats.packets_in == 2 and server.stats.packets_out == 2
        server.set_policers(None, None)
        assert server.send_ip(PING) and client.send_ip(PING)
        for _ in range(100):
            if len(sp.received) == 3 and len(cp.received) == 3:
                break
            await asyncio.sleep(0.01)
        assert (len(sp.received), len(cp.received)) == (3, 3)
        await client.aclose("bye")

    run(main())


class SlowPlane(MemoryPlane):
    """A data plane whose attach (the TUN's configuration) waits until ``ready`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.Event()

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        await self.ready.wait()
        return await super().attach(link, up)


@pytest.mark.parametrize("mppe", [True, False])
def test_packets_while_the_data_plane_attaches_are_held_not_dropped(mppe: bool) -> None:
    # The client is up as soon as IPCP is, and may send before the server's TUN is configured.
    async def main() -> None:
        plane = SlowPlane()
        server, client, *_ = pair(*configs(mppe=mppe), server_plane=plane, client_plane=MemoryPlane())
        server.start()
        client.start()
        await client.wait_up()
        sent = MAX_HELD_PACKETS + 5
        for _ in range(sent):
            client.send_ip(PING)
        for _ in range(200):
            if server.session.stats.rx_packets == sent:
                break
            await asyncio.sleep(0.01)
        assert server.session.stats.rx_packets == sent
        assert plane.received == [] and server.up is None
        plane.ready.set()
        await server.wait_up()
        # As many as the cap, in order; the rest counted.
        assert plane.received == [PING] * MAX_HELD_PACKETS
        assert server.stats.dropped_no_data_plane == 5
        client.send_ip(PING)
        for _ in range(100):
            if len(plane.received) > MAX_HELD_PACKETS:
                break
            await asyncio.sleep(0.01)
        assert len(plane.received) == MAX_HELD_PACKETS + 1
        await client.aclose()

    run(main())


class BatchWire(Wire):
    """A :class:`Wire` with the batch entry point; the frames numbered in ``refuse`` (counting
    every frame offered, batched or not) are refused, so a batch stops there as a closing
    window stops ``GreChannel.send_frames``."""

    def __init__(self, refuse: set[int]) -> None:
        super().__init__()
        self.refuse = refuse
        self.offered = 0
        self.batches: list[int] = []

    def send_frame(self, frame: bytes) -> bool:
        n = self.offered
        self.offered += 1
        return n not in self.refuse and super().send_frame(frame)

    def send_frames(self, frames: list[bytes]) -> int:
        k = 0
        while k < len(frames) and self.offered not in self.refuse:
            assert self.send_frame(frames[k])
            k += 1
        self.batches.append(k)
        return k


@pytest.mark.parametrize("mppe", [True, False])
@pytest.mark.parametrize("policed", [False, True])
def test_send_ips_is_send_ip_in_turn(mppe: bool, policed: bool) -> None:
    """Batches with packets the session refuses (empty, not IP) and frames the transport
    refuses mid-batch: the same packets reach the peer and every counter matches one by one."""
    packets = [PING[:2] + bytes([0, 28 + i]) + PING[4:] + bytes(i) for i in range(40)]
    packets[5] = b""
    packets[17] = b"\x50" + bytes(30)
    refuse = {3, 4, 20, 30, 31, 32}

    async def one(batched: bool) -> tuple[object, list[bytes], list[int]]:
        sp, cp = MemoryPlane(), MemoryPlane()
        server, client, *_ = pair(*configs(mppe=mppe), server_plane=sp, client_plane=cp)
        wire = BatchWire(set())
        wire.peer = client.frame_received
        server._transport = wire
        await _both_up(server, client)
        wire.refuse = {wire.offered + n for n in refuse}
        if policed:
            server.set_policers(TokenBucket(rate=0.001, burst=25 * 40, now=server.loop.time()), None)
        if batched:
            accepted = server.send_ips(packets[:25]) + server.send_ips(packets[25:])
        else:
            accepted = sum(server.send_ip(p) for p in packets)
        for _ in range(100):
            if len(cp.received) >= accepted:
                break
            await asyncio.sleep(0.01)
        assert len(cp.received) == accepted
        stats = dataclasses.replace(server.stats)
        await client.aclose("bye")
        return stats, cp.received, wire.batches

    async def main() -> None:
        b_stats, b_got, batches = await one(True)
        s_stats, s_got, _ = await one(False)
        assert (b_stats, b_got) == (s_stats, s_got)
        assert b_stats.refused_by_session == 2 and b_stats.refused_by_transport > 0  # type: ignore[attr-defined]
        if not policed:
            assert batches[0] == 3  # the batch stopped at the first refused frame

    run(main())


class BatchPlane(MemoryPlane):
    """A data plane whose sink is a device's ``write`` with a ``write_many`` beside it (as a
    TUN's): the link's batch path must find it and hand it whole runs."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []

    def write(self, packet: bytes) -> None:
        self.received.append(packet)

    def write_many(self, packets: list[bytes]) -> None:
        self.runs.append(len(packets))
        self.received.extend(packets)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        await super().attach(link, up)
        return self.write


@pytest.mark.parametrize("mppe", [True, False])
def test_frames_received_delivers_runs_as_frame_received_would(mppe: bool) -> None:
    """A run with a control frame and a spoofed source inside: same packets, order and counters
    as frame by frame, the clean stretches in one data-plane call each (stateless MPPE)."""

    async def main() -> None:
        plane = BatchPlane()
        server, client, *_ = pair(*configs(mppe=mppe), server_plane=plane, client_plane=MemoryPlane(),
                                  source_check=True)
        await _both_up(server, client)
        good = [_ipv4(CLIENT_IP, SERVER_IP)[:-1] + bytes([i]) for i in range(12)]
        spoofed = _ipv4(IPv4Address("192.0.2.77"), SERVER_IP)
        now = client.loop.time()
        frames = [client.session.send_packet(p, now) for p in good[:5]]
        frames.append(b"\xff\x03\xc0\x21" + bytes([9, 7, 0, 8]) + bytes(4))  # LCP Echo-Request
        frames += [client.session.send_packet(p, now) for p in good[5:9]]
        frames.append(client.session.send_packet(spoofed, now))
        frames += [client.session.send_packet(p, now) for p in good[9:]]
        assert all(f is not None for f in frames)
        sent_before = server.transport.sent  # type: ignore[attr-defined]
        rx_before = server.session.stats.rx_frames
        server.frames_received([f for f in frames if f is not None])
        assert plane.received == good
        assert (server.stats.packets_in, server.stats.source_refused) == (12, 1)
        assert server.stats.octets_in == sum(map(len, good))
        assert server.session.stats.rx_frames == rx_before + len(frames)
        assert server.transport.sent == sent_before + 1  # type: ignore[attr-defined]  # echo reply
        # Stateless MPPE: the stretch before the echo in one call; the one after it holds the
        # spoofed packet and goes packet by packet.  Without MPPE, frame by frame.
        assert plane.runs == ([5] if mppe else [])
        await client.aclose("bye")

    run(main())


def test_frames_received_before_start_are_kept_like_single_frames() -> None:
    async def main() -> None:
        server, client, *_ = pair(*configs(mppe=False), server_plane=None, client_plane=None)
        echo = b"\xff\x03\xc0\x21" + bytes([9, 1, 0, 8]) + bytes(4)
        server.frames_received([echo] * (MAX_EARLY_FRAMES + 2))
        assert server.stats.early_frames_dropped == 2
        server.close()
        client.close()

    run(main())
