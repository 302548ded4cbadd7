"""The HDLC <-> frame bridge on a real fd pair, and the per-call GRE channel adapter on a fake
socket (no root needed)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.gre import GreCallConfig, encode_gre
from pptpkit.io.grechannel import GreChannel
from pptpkit.io.hdlcstream import HdlcStreamBridge
from pptpkit.io.pty import FdStream
from pptpkit.ppp.hdlc import HdlcDecoder, encode_frame

frames_st = st.lists(st.binary(min_size=2, max_size=300), max_size=12)


async def _through_bridge(wire: bytes, chunk: int) -> tuple[list[bytes], bool]:
    ours, theirs = socket.socketpair()
    got: list[bytes] = []
    ended = asyncio.Event()
    stream = FdStream(theirs.detach())
    bridge = HdlcStreamBridge(stream, on_frame=got.append, on_close=lambda exc: ended.set())
    bridge.start()
    loop = asyncio.get_running_loop()
    with ours:
        # Through the loop: a blocking sendall would stall once many tiny sends (each an skb of
        # its own) fill the socket buffer before the bridge, on this same loop, reads any.
        ours.setblocking(False)
        for i in range(0, len(wire), chunk):
            await loop.sock_sendall(ours, wire[i : i + chunk])
        ours.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(ended.wait(), 5)
    bridge.close()
    return got, stream.closed


@settings(max_examples=200, deadline=None)
@given(frames=frames_st, noise=st.lists(st.binary(max_size=40), max_size=12), chunk=st.integers(1, 700))
def test_bridge_delivers_exactly_the_good_frames(frames: list[bytes], noise: list[bytes], chunk: int) -> None:
    """Good frames interleaved with garbage, split at arbitrary points: every good frame comes
    out unchanged and in order; garbage never raises and never fakes a frame, unless it happens
    to carry a valid FCS, which the reference decoder then also reports."""
    wire = b""
    for i, frame in enumerate(frames):
        wire += encode_frame(frame)
        if i < len(noise):
            wire += noise[i]
    got, closed = asyncio.run(_through_bridge(wire, chunk))
    assert got == HdlcDecoder().feed(wire)
    for frame in frames:
        assert frame in got
    assert closed


def test_bridge_encodes_outgoing_frames_with_all_control_characters_escaped() -> None:
    async def run() -> bytes:
        ours, theirs = socket.socketpair()
        bridge = HdlcStreamBridge(FdStream(theirs.detach()), on_frame=lambda f: None)
        bridge.start()
        frame = b"\xff\x03\xc0\x21" + bytes(range(32)) + b"\x7d\x7e"
        assert bridge.send_frame(frame)
        await asyncio.sleep(0.01)
        data = ours.recv(4096)
        bridge.close()
        ours.close()
        assert HdlcDecoder().feed(data) == [frame]
        assert bridge.stats.frames_out == 1
        return data

    data = asyncio.run(run())
    body = data[1:-1]
    assert all(b >= 0x20 for b in body if b != 0x7D) and 0x7E not in body


class FakeGreSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.handlers: dict[tuple[str, int], object] = {}
        self.batches: dict[tuple[str, int], object] = {}

    def register(self, peer: str, call_id: int, handler: object, *, borrow: bool = False,
                 batch: object = None) -> None:
        assert borrow  # GreChannel copies what it keeps, so it takes views of the receive buffer
        self.handlers[(peer, call_id)] = handler
        self.batches[(peer, call_id)] = batch

    def unregister(self, peer: str, call_id: int) -> None:
        self.handlers.pop((peer, call_id), None)

    def send(self, peer: str, packet: bytes) -> bool:
        self.sent.append((peer, packet))
        return True

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), bytes(packet))


def test_gre_channel_sends_receives_acks_and_unregisters() -> None:
    async def run() -> None:
        sock = FakeGreSocket()
        got: list[bytes] = []
        channel = GreChannel(sock, "192.0.2.9", GreCallConfig(call_id=7, peer_call_id=9, first_seq=1,  # type: ignore[arg-type]
                                                              ack_delay=0.02), on_frame=got.append)
        assert ("192.0.2.9", 7) in sock.handlers
        assert channel.send_frame(b"\xff\x03hello")
        peer, packet = sock.sent[0]
        assert peer == "192.0.2.9" and packet == encode_gre(9, b"\xff\x03hello", 1, None)
        handler = sock.handlers[("192.0.2.9", 7)]
        loop = asyncio.get_running_loop()
        handler(encode_gre(7, b"\xff\x03back", 0, 1), loop.time())  # type: ignore[operator]
        assert got == [b"\xff\x03back"]
        # The ack for it goes out on the channel's own timer (no data to carry it).
        await asyncio.sleep(0.1)
        assert sock.sent[-1][1] == encode_gre(9, b"", None, 0)
        assert channel.stats.acks_sent == 1
        handler(b"\x00garbage", loop.time())  # type: ignore[operator]
        assert channel.stats.malformed == 1
        # A run through the batch handler: the in-order prefix at once, then the rest one by one
        # (4 before 3: held, then both).
        frames = [b"\xff\x03" + bytes([n]) * 20 for n in range(1, 5)]
        run_ = [encode_gre(7, frames[n - 1], n, 1) for n in (1, 2, 4, 3)]
        sock.batches[("192.0.2.9", 7)](run_, loop.time())  # type: ignore[operator]
        assert got[1:] == frames
        assert (channel.stats.delivered, channel.stats.reordered) == (5, 1)
        assert not channel.send_frame(b"x" * 70000)
        assert channel.adapter_stats.oversized_frames == 1
        channel.close()
        assert ("192.0.2.9", 7) not in sock.handlers
        assert not channel.send_frame(b"\xff\x03late")
        assert channel.adapter_stats.frames_after_close == 1

    asyncio.run(run())


def test_fdstream_pair_is_closed_by_bridge() -> None:
    r, w = os.pipe()
    os.close(w)

    async def run() -> None:
        ended = asyncio.Event()
        bridge = HdlcStreamBridge(FdStream(r), on_frame=lambda f: None, on_close=lambda exc: ended.set())
        bridge.start()
        await asyncio.wait_for(ended.wait(), 2)
        bridge.close()
        assert bridge.stream.closed

    asyncio.run(run())
