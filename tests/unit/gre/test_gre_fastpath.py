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
