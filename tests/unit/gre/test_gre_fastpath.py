"""The in-order fast paths of ``GreCall`` against the general path.

Two engines get the same packets, one through ``receive_datagram`` (fast path where it applies)
or, as ``GreChannel`` does, ``receive_next`` first, and one through ``GrePacket.decode`` +
``receive`` (always the general path); one sends through ``send`` or ``send_header`` first,
the other through ``send``, read back with ``GrePacket.decode``.  Every output, counter, timer
and the state the next packet depends on must stay identical.
"""

from __future__ import annotations

import dataclasses
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import PptpkitError
from pptpkit.gre import GreCall, GreCallConfig, GrePacket
from pptpkit.gre.packet import data_header, encode_gre

MASK = 0xFFFFFFFF


def general(call: GreCall, data: bytes, now: float) -> list[bytes]:
    try:
        packet = GrePacket.decode(data)
    except PptpkitError:
        call.count_malformed()
        return []
    return call.receive(packet, now)


def snapshot(call: GreCall) -> tuple[object, ...]:
    return (
        dataclasses.astuple(call.stats), call.get_timer(), call.in_flight, call.queued, call.held,
        call.last_delivered, call.ack_pending, call.next_seq, call.datagrams_to_send(),
    )


# One step: (kind, seq offset from the last delivered, ack offset from our last sent, size).
step = st.tuples(
    st.sampled_from(["data", "data_noack", "ack_only", "mangle", "other_call", "short_data"]),
    st.integers(-3, 4), st.integers(-3, 3), st.integers(1, 300),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=60), first=st.integers(0, MASK), ack_delay=st.sampled_from([0.0, 0.1]),
       sends=st.lists(st.booleans(), max_size=60), window=st.integers(1, 4), channel=st.booleans(),
       respect=st.booleans())
def test_fast_path_matches_general_path(
    steps: list[tuple[str, int, int, int]], first: int, ack_delay: float, sends: list[bool], window: int,
    channel: bool, respect: bool,
) -> None:
    cfg = GreCallConfig(call_id=7, peer_call_id=9, ack_delay=ack_delay, peer_window=window, our_window=2,
                        reorder_buffer=3, send_queue=2, respect_peer_window=respect)
    fast, slow = GreCall(cfg), GreCall(cfg)
    seq = first
    now = 0.0
    for i, (kind, dseq, dack, size) in enumerate(steps):
        now += 0.03
        if i < len(sends) and sends[i]:
            frame = bytes([i & 0xFF]) * (i % 7 + 1)
            seq_before, started = slow.next_seq, slow.last_delivered is not None
            want = slow.send(frame, now)
            if want:  # what the spec says, read back independently of the engine's header code
                sent = GrePacket.decode(want[0])
                assert (sent.call_id, sent.seq, sent.payload, sent.ack is not None) == (
                    9, seq_before, frame, started)
            header = fast.send_header(frame, now) if channel else None
            if header is not None:
                assert [header + frame] == want
            else:
                assert fast.send(frame, now) == want
            assert snapshot(fast) == snapshot(slow)
        last = fast.last_delivered
        seq = ((last if last is not None else first) + dseq) & MASK
        ack = (fast.next_seq - 1 + dack) & MASK
        payload = bytes([i & 0xFF]) * size
        call_id = 8 if kind == "other_call" else 7
        if kind == "ack_only":
            raw = encode_gre(call_id, b"", None, ack)
        elif kind == "data_noack":
            raw = encode_gre(call_id, payload, seq, None)
        elif kind == "short_data":
            raw = encode_gre(call_id, payload[:3], seq, None)
        else:
            raw = encode_gre(call_id, payload, seq, ack)
        if kind == "mangle":
            raw = raw[:-1] if size % 2 else raw[:4] + struct.pack("!H", len(raw)) + raw[6:]
        got = fast.receive_next(raw, now) if channel else None
        if got is not None:
            assert [got] == general(slow, raw, now)
        else:
            assert fast.receive_datagram(raw, now) == general(slow, raw, now)
        assert snapshot(fast) == snapshot(slow)
        if (t := fast.get_timer()) is not None and size % 5 == 0:
            assert fast.handle_timer(t) == slow.handle_timer(t)
            assert snapshot(fast) == snapshot(slow)


def test_fast_path_counts_like_the_general_path_on_a_long_in_order_run() -> None:
    cfg = GreCallConfig(call_id=7, peer_call_id=9, our_window=4)
    call = GreCall(cfg)
    out = []
    for i in range(100):
        out += call.receive_datagram(encode_gre(7, bytes([i]) * 100, (MASK - 50 + i) & MASK, None), i * 0.001)
    assert out == [bytes([i]) * 100 for i in range(100)]
    assert call.stats.received == call.stats.delivered == 100
    assert call.stats.window_overruns == 0  # nothing acked yet: no window to overrun
    assert call.get_timer() == 0.1  # armed by the first packet, not pushed back by the others
    assert call.last_delivered == (MASK - 50 + 99) & MASK


def test_send_header_declines_what_send_would_queue_or_refuse() -> None:
    call = GreCall(GreCallConfig(call_id=7, peer_call_id=9, peer_window=1))
    assert call.send_header(b"a", 0.0) == encode_gre(9, b"a", 0, None)[:12]
    assert call.send_header(b"b", 0.0) is None  # the window (1) is full: send() queues it
    assert call.stats.sent == 1 and call.queued == 0
    assert GreCall(GreCallConfig(call_id=7, peer_call_id=9)).send_header(bytes(0x10000), 0.0) is None


def send_one_by_one(call: GreCall, frames: list[bytes], now: float) -> list[bytes]:
    """What ``GreChannel.send_frame`` puts on the wire for each frame in turn (an oversized
    frame is refused before the engine sees it)."""
    out = []
    for frame in frames:
        if len(frame) > 0xFFFF:
            out.append(b"oversized")
            continue
        header = call.send_header(frame, now)
        out += [header + frame] if header is not None else call.send(frame, now)
    return out


def send_batch(call: GreCall, frames: list[bytes], now: float) -> list[bytes]:
    """``GreChannel.send_frames``: ``send_run`` for the first k (headers as ``send_gre_many``
    numbers them), the rest handed to the per-frame path."""
    k, seq, ack = call.send_run(frames, now)
    out = [data_header(9, len(f), seq + i, ack) + f for i, f in enumerate(frames[:k])]
    return out + send_one_by_one(call, frames[k:], now)


@settings(max_examples=300, deadline=None)
@given(rounds=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["none", "data", "ack", "timer"]),
                                 st.integers(-2, 6)), max_size=25),
       first=st.one_of(st.integers(0, MASK), st.integers(MASK - 20, MASK)), window=st.integers(1, 8),
       respect=st.booleans(), big=st.integers(0, 30))
def test_send_run_matches_send_header_one_by_one(rounds: list[tuple[int, str, int]], first: int, window: int,
                                                  respect: bool, big: int) -> None:
    """Batches through ``send_run`` and the same frames one by one: the window closing
    mid-batch (and queued frames released by acks and timeouts), sequence numbers wrapping, an
    oversized frame, acks piggybacked or not: same datagrams, counters, timers and state."""
    cfg = GreCallConfig(call_id=7, peer_call_id=9, peer_window=window, send_queue=3,
                        respect_peer_window=respect, first_seq=first)
    batch, single = GreCall(cfg), GreCall(cfg)
    now = 0.0
    rx = 100
    for r, (count, event, dack) in enumerate(rounds):
        now += 0.05
        frames = [bytes([r, i]) * (i + 1) for i in range(count)]
        if count and big == r:
            frames[count // 2] = bytes(0x10000)
        assert send_batch(batch, frames, now) == send_one_by_one(single, frames, now)
        assert snapshot(batch) == snapshot(single)
        if event == "data":
            rx += 1
            raw = encode_gre(7, b"x", rx, (single.next_seq - 1 + dack) & MASK)
        elif event == "ack":
            raw = encode_gre(7, b"", None, (single.next_seq - 1 - dack) & MASK)
        else:
            raw = b""
        if raw:
            assert batch.receive_datagram(raw, now) == single.receive_datagram(raw, now)
        if event == "timer" and (t := single.get_timer()) is not None:
            assert batch.handle_timer(t) == single.handle_timer(t)
        assert snapshot(batch) == snapshot(single)


def test_send_run_stops_where_the_window_closes() -> None:
    call = GreCall(GreCallConfig(call_id=7, peer_call_id=9, peer_window=3))
    assert call.send_run([b"a", b"b", b"c", b"d", b"e"], 1.0) == (3, 0, -1)
    assert call.next_seq == 3 and call.in_flight == 3 and call.stats.sent == 3
    assert call.send_run([b"d"], 1.0) == (0, 3, -1)
    assert call.send(b"d", 1.0) == [] and call.queued == 1
    assert call.send_run([b"e"], 1.0) == (0, 3, -1)  # something is queued: never ahead of it


# -- the batch entry point: receive_run over a run, then the rest one by one -------------------

# One packet of a run: (kind, size).  Sequence numbers follow a stream the test keeps: "next"
# continues it, "gap" skips ahead, "dup" repeats the last, "old" goes back, "far" jumps past
# max_seq_jump; the others carry no new number or are not for this call.
run_step = st.tuples(
    st.sampled_from(["next"] * 6 + ["next_noack", "gap", "dup", "old", "far", "ack_only", "mangle",
                                    "other_call"]),
    st.integers(1, 200), st.integers(-2, 2),
)


def receive_as_channel(call: GreCall, packets: list[bytes], now: float) -> list[bytes]:
    """What GreChannel.receive_packets hands up: the run's in-order prefix in one call, then
    the first packet it did not take and everything after it one by one."""
    frames = call.receive_run(packets, now)
    for data in packets[len(frames):]:
        frames += call.receive_datagram(data, now)
    return frames


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.lists(run_step, min_size=1, max_size=12), max_size=12),
       first=st.sampled_from([0, 1, MASK - 5, MASK, 1 << 31]), ack_delay=st.sampled_from([0.0, 0.1]),
       sends=st.lists(st.integers(0, 3), max_size=12), window=st.integers(1, 4), respect=st.booleans(),
       nobuffer=st.booleans())
def test_a_run_ends_exactly_as_its_packets_one_by_one(
    runs: list[list[tuple[str, int, int]]], first: int, ack_delay: float, sends: list[int], window: int,
    respect: bool, nobuffer: bool,
) -> None:
    cfg = GreCallConfig(call_id=7, peer_call_id=9, ack_delay=ack_delay, peer_window=window, our_window=3,
                        reorder_buffer=3, send_queue=2, respect_peer_window=respect, nobuffer=nobuffer,
                        max_seq_jump=8)
    batch, single = GreCall(cfg), GreCall(cfg)
    seq = first
    now = 0.0
    # The first packet sets the receive baseline (never the batch path's case): sent alone.
    opening = encode_gre(7, b"first", seq, None)
    assert batch.receive_datagram(opening, now) == single.receive_datagram(opening, now)
    for r, run in enumerate(runs):
        now += 0.03
        for i in range(sends[r] if r < len(sends) else 0):  # acks in the run then mean something
            frame = bytes([r, i])
            assert batch.send(frame, now) == single.send(frame, now)
        packets = []
        for i, (kind, size, dack) in enumerate(run):
            if kind in ("next", "next_noack"):
                seq = (seq + 1) & MASK
            elif kind == "gap":
                seq = (seq + 2 + size % 3) & MASK
            elif kind == "old":
                seq = (seq - 2) & MASK
            elif kind == "far":
                seq = (seq + 100) & MASK
            ack = (batch.next_seq - 1 + dack) & MASK
            payload = bytes([r & 0xFF, i]) * size
            if kind == "ack_only":
                raw = encode_gre(7, b"", None, ack)
            elif kind == "next_noack":
                raw = encode_gre(7, payload, seq, None)
            else:
                raw = encode_gre(8 if kind == "other_call" else 7, payload, seq, ack)
            if kind == "mangle":
                raw = raw[:-1]
            packets.append(raw)
        want = []
        for data in packets:
            want += single.receive_datagram(data, now)
        assert receive_as_channel(batch, packets, now) == want
        assert snapshot(batch) == snapshot(single)
        if (t := batch.get_timer()) is not None and r % 3 == 2:
            assert batch.handle_timer(t) == single.handle_timer(t)
            assert snapshot(batch) == snapshot(single)


def test_receive_run_takes_a_clean_run_whole_and_stops_at_the_first_other_packet() -> None:
    call = GreCall(GreCallConfig(call_id=7, peer_call_id=9))
    assert call.receive_run([encode_gre(7, b"x", 5, None)], 0.0) == []  # no baseline yet
    call.receive_datagram(encode_gre(7, b"a", MASK - 1, None), 0.0)
    run = [encode_gre(7, bytes([i]) * 20, (MASK + i) & MASK, None) for i in range(4)]
    assert call.receive_run(run, 0.0) == [bytes([i]) * 20 for i in range(4)]
    assert call.last_delivered == 2 and call.stats.delivered == 5
    stop = [encode_gre(7, octet * 9, seq, None) for octet, seq in ((b"b", 3), (b"c", 5), (b"d", 6))]
    assert call.receive_run(stop, 0.0) == [b"b" * 9]  # 5 leaves a gap: the rest is receive_datagram's
    assert call.last_delivered == 3 and call.stats.received == 6
