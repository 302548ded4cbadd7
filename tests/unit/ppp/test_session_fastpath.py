"""The session's one-call receive path for stateless MPPE (``MppeChannel.fast_rx``) against the
general path it short-cuts: two session pairs, identical but for the fast path being switched
off in one, are fed the same traffic (loss, reordering, duplicates, corrupted and rewritten
frames, IPv6, stateful resets) and must end identical - packets delivered, every counter, the
MPPE key state and coherency counts, and every control frame on the wire."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from session_harness import SessionPair, client_config, ipv4_packet, ipv6_packet, server_config

from pptpkit.crypto.mppe import MppeDecryptor
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import MppePolicy

Tamper = Callable[[str, bytes], "bytes | None"]


class _Counting:
    """Stands in for ``fast_rx``: the same decryptor, counting the packets it took."""

    def __init__(self, dec: MppeDecryptor) -> None:
        self.dec = dec
        self.taken = 0

    def open_frame(self, frame: bytes) -> tuple[int, bytes] | None:
        opened = self.dec.open_frame(frame)
        self.taken += opened is not None
        return opened

    def open_frames(self, frames: list[bytes]) -> tuple[list[bytes], list[int], int, int]:
        opened = self.dec.open_frames(frames)
        self.taken += len(opened[0])
        return opened


class _BatchPair(SessionPair):
    """Each round's frames arrive as one run, handed to the session as ``PppLink.frames_received``
    does: ``receive_frames`` takes the longest prefix it can, the frame after it goes to
    ``receive_frame``, and the batch path resumes after that."""

    def hand_over(self, dst: str, units: list[Any]) -> list[Any]:
        return receive_as_link(self.session(dst), units, self.now)


def receive_as_link(session: PppSession, frames: list[bytes], now: float) -> list[bytes]:
    packets: list[bytes] = []
    while frames:
        opened, taken = session.receive_frames(frames, now)
        assert taken >= len(opened)
        packets += opened
        if taken < len(frames):
            packet = session.receive_frame(frames[taken], now)
            if packet is not None:
                packets.append(packet)
        frames = frames[taken + 1:]
    return packets


def _pair(fast: bool, policy: MppePolicy | None, tamper: Tamper | None, batch: bool = False,
          **kw: object) -> SessionPair:
    kind = _BatchPair if batch else SessionPair
    pair = kind(client_config(mppe=policy, ipv6=True), server_config(mppe=policy, ipv6=True),
                tamper=tamper, **kw)  # type: ignore[arg-type]
    pair.start()
    pair.run(until=5.0)
    for session in (pair.client, pair.server):
        channel = session.mppe_channel
        assert channel is not None
        if fast:
            assert channel.fast_rx is not None or not channel.text.endswith("stateless")
            if channel.fast_rx is not None:
                channel.fast_rx = _Counting(channel.fast_rx)  # type: ignore[assignment]
        else:
            channel.fast_rx = None
    return pair


def _state(session: PppSession) -> object:
    channel = session.mppe_channel
    assert channel is not None
    dec, enc = channel.decryptor, channel.encryptor
    assert dec is not None and enc is not None
    return (session.stats, session.mppe_stats, dec.session_key, dec.expected_count, dec.last_drop,
            dec.discarding, enc.session_key, enc.coherency_count, channel.reset_deadline,
            session.get_timer(), session.finished)


def _run(fast: bool, policy: MppePolicy | None, tamper: Tamper | None, n: int, batch: bool = False,
         **kw: object) -> tuple[object, int]:
    pair = _pair(fast, policy, tamper, batch, **kw)
    for i in range(n):
        pair.send("client", ipv6_packet(i) if i % 7 == 3 else ipv4_packet(i, 60 + i % 50))
        pair.send("server", ipv4_packet(1000 + i))
        if i % 5 == 4:
            pair.pump()
            pair.run(until=pair.now + 0.5)  # reset timers (stateful) may fire
    pair.pump()
    pair.run(until=pair.now + 5.0)
    taken = 0
    for session in (pair.client, pair.server):
        channel = session.mppe_channel
        if channel is not None and isinstance(channel.fast_rx, _Counting):
            taken += channel.fast_rx.taken
    state = (pair.wires["cs"].delivered, pair.wires["sc"].delivered, pair.wires["cs"].frames,
             pair.wires["sc"].frames, _state(pair.client), _state(pair.server))
    return state, taken


def _tamper(seed: int) -> Tamper:
    """Data frames: now and then a flipped octet (header, count, encrypted protocol or payload),
    a cleared FLUSHED or set COMPRESSED bit, a truncation, an address/control field added."""
    import random

    rng = random.Random(seed)

    def tamper(direction: str, frame: bytes) -> bytes | None:
        if frame[0] != 0xFD or rng.random() > 0.2:
            return frame
        kind = rng.randrange(5)
        data = bytearray(frame)
        if kind == 0:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[1] ^= rng.choice([0x80, 0x20, 0x10])
        elif kind == 2:
            del data[rng.randrange(1, 5):]
        elif kind == 3:
            data[1:3] = bytes([data[1] & 0xF0 | rng.randrange(16), rng.randrange(256)])
        else:
            return b"\xff\x03\x00" + frame
        return bytes(data)

    return tamper


POLICIES = {
    "stateless": None,
    "stateful": MppePolicy(bits_40=False, stateful=True),
    "stateful-rfc": MppePolicy(bits_40=False, stateful=True, flushed_means_rekey=False),
}


@pytest.mark.parametrize("name", list(POLICIES))
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), loss=st.sampled_from([0.0, 0.1]), reorder=st.sampled_from([0.0, 0.2]),
       duplicate=st.sampled_from([0.0, 0.1]), tampered=st.booleans())
def test_fast_and_general_receive_paths_end_identical(name: str, seed: int, loss: float, reorder: float,
                                                      duplicate: float, tampered: bool) -> None:
    policy = POLICIES[name]
    kw = dict(loss=loss, reorder=reorder, duplicate=duplicate, seed=seed, lossy_data_only=True)
    fast, taken = _run(True, policy, _tamper(seed) if tampered else None, 60, **kw)
    slow, untaken = _run(False, policy, _tamper(seed) if tampered else None, 60, **kw)
    assert fast == slow
    assert untaken == 0
    if name == "stateless":
        assert taken > 0  # the common case really went the fast way
    else:
        assert taken == 0


def test_the_fast_path_takes_every_clean_in_order_stateless_packet() -> None:
    state, taken = _run(True, None, None, 40)
    assert taken == 80
    assert state == _run(False, None, None, 40)[0]


@pytest.mark.parametrize("name", list(POLICIES))
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), loss=st.sampled_from([0.0, 0.1]), reorder=st.sampled_from([0.0, 0.2]),
       duplicate=st.sampled_from([0.0, 0.1]), tampered=st.booleans())
def test_runs_through_receive_frames_end_as_frames_one_by_one(name: str, seed: int, loss: float,
                                                              reorder: float, duplicate: float,
                                                              tampered: bool) -> None:
    policy = POLICIES[name]
    kw = dict(loss=loss, reorder=reorder, duplicate=duplicate, seed=seed, lossy_data_only=True)
    batched, taken = _run(True, policy, _tamper(seed) if tampered else None, 60, batch=True, **kw)
    single, _ = _run(False, policy, _tamper(seed) if tampered else None, 60, **kw)
    assert batched == single
    assert (taken > 0) == (name == "stateless")


def test_a_run_with_control_frames_and_other_protocols_inside_ends_as_one_by_one() -> None:
    """LCP Echo-Request and CCP Reset-Request in the middle of a run, an IPv6 packet among IPv4
    ones, a late (replayed) frame and one for a protocol that is not open: the batch path stops
    at each and resumes after it."""
    frames: list[bytes] = []
    states = []
    for batch in (True, False):
        pair = _pair(True, None, None)
        sent = [pair.session("client").send_packet(
            ipv6_packet(i) if i == 5 else ipv4_packet(i, 100 + i), pair.now) for i in range(12)]
        assert all(frame is not None for frame in sent)
        frames = [f for f in sent if f is not None]
        echo = b"\xff\x03\xc0\x21" + bytes([9, 1, 0, 8]) + bytes(4)
        reset = b"\x80\xfd" + bytes([14, 3, 0, 4])
        run = [*frames[:3], echo, *frames[3:7], reset, frames[6], *frames[7:], b"\x00\x2b" + bytes(8)]
        server = pair.server
        got = receive_as_link(server, run, pair.now) if batch else [
            p for f in run if (p := server.receive_frame(f, pair.now)) is not None]
        states.append((got, server.frames_to_send(), _state(server), _state(pair.client)))
    assert states[0] == states[1]
    assert len(states[0][0]) == 12 and states[0][1]  # every packet delivered; the echo answered


# -- the batch send path (send_packets) against send_packet one by one ----------------------------

BATCH_POLICIES: dict[str, MppePolicy | None] = {**POLICIES, "none": MppePolicy(bits_40=False, bits_128=False)}


def _up(policy: MppePolicy | None) -> SessionPair:
    pair = SessionPair(client_config(mppe=policy, ipv6=True), server_config(mppe=policy, ipv6=True))
    pair.start()
    pair.run(until=5.0)
    assert pair.link_up("client") is not None
    return pair


def _tx_state(session: PppSession) -> object:
    channel = session.mppe_channel
    enc = channel.encryptor if channel is not None else None
    return (session.stats, session.mppe_stats, session.tx_overhead,
            None if enc is None else (enc.session_key, enc.coherency_count))


def _packet(kind: str, n: int) -> bytes:
    if kind == "v4":
        return ipv4_packet(n, 28 + n % 200)
    if kind == "v6":
        return ipv6_packet(n, 40 + n % 100)
    return b"" if kind == "empty" else bytes([0x50 + n % 16]) + bytes(30)


def _send_both(batched: SessionPair, single: SessionPair, packets: list[bytes]) -> list[bytes]:
    """The client of ``batched`` sends ``packets`` with send_packets, that of ``single`` one by
    one; the frames and the sender's state must match, and both go on the wire."""
    frames = batched.client.send_packets(packets, batched.now)
    one = [f for p in packets if (f := single.client.send_packet(p, single.now)) is not None]
    assert frames == one
    assert _tx_state(batched.client) == _tx_state(single.client)
    for pair in (batched, single):
        for frame in frames:
            pair.offer("cs", frame)
        pair.pump()
    return frames


@pytest.mark.parametrize("name", list(BATCH_POLICIES))
@settings(max_examples=15, deadline=None)
@given(batches=st.lists(st.lists(st.sampled_from(["v4", "v4", "v4", "v6", "empty", "junk"]), max_size=50),
                        max_size=12))
def test_send_packets_is_send_packet_in_turn(name: str, batches: list[list[str]]) -> None:
    """Runs of IPv4 and IPv6 mixed, empty and non-IP packets refused in between: the same frames,
    counters (drops included), MPPE key and coherency count as one by one, under every mode."""
    batched, single = _up(BATCH_POLICIES[name]), _up(BATCH_POLICIES[name])
    n = 0
    for kinds in batches:
        packets = [_packet(kind, n + i) for i, kind in enumerate(kinds)]
        n += len(packets)
        _send_both(batched, single, packets)
    assert batched.wires["cs"].delivered == single.wires["cs"].delivered
    assert _tx_state(batched.server) == _tx_state(single.server)


@pytest.mark.parametrize("name", list(BATCH_POLICIES))
def test_send_packets_across_the_coherency_count_wrap(name: str) -> None:
    """4,200 packets in batches of 47 (a TSO read's worth): the count wraps past 4095 inside a
    batch (and stateful flag packets fall mid-batch); the peer decrypts every one."""
    batched, single = _up(BATCH_POLICIES[name]), _up(BATCH_POLICIES[name])
    packets = [ipv4_packet(i, 100) for i in range(4200)]
    for at in range(0, len(packets), 47):
        _send_both(batched, single, packets[at:at + 47])
    assert batched.wires["cs"].delivered == single.wires["cs"].delivered == packets
    channel = batched.client.mppe_channel
    if channel is not None and channel.encryptor is not None:
        assert channel.encryptor.coherency_count == 4199 % 4096


def test_send_packets_refuses_everything_before_the_link_is_up() -> None:
    pair = SessionPair(client_config(ipv6=True), server_config(ipv6=True))
    packets = [ipv4_packet(1), ipv6_packet(2), b"", b"\x50junk"]
    assert pair.client.send_packets(packets, 0.0) == []
    assert pair.client.stats.dropped == {"tx_not_open": 2, "tx_empty": 1, "tx_not_ip": 1}
