"""The per-call GRE engine, in pairs on a virtual clock."""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import ConfigError
from pptpkit.gre import GreCall, GreCallConfig, GrePacket

WRAP = 1 << 32


def make_pair(**kw: Any) -> tuple[GreCall, GreCall]:
    a = GreCall(GreCallConfig(call_id=100, peer_call_id=200, **kw))
    b = GreCall(GreCallConfig(call_id=200, peer_call_id=100, **kw))
    return a, b


def dec(raw: bytes) -> GrePacket:
    return GrePacket.decode(raw)


def send_all(call: GreCall, payloads: list[bytes], now: float) -> list[bytes]:
    out: list[bytes] = []
    for p in payloads:
        out += call.send(p, now)
    return out


def feed(call: GreCall, datagrams: list[bytes], now: float) -> list[bytes]:
    got: list[bytes] = []
    for d in datagrams:
        got += call.receive_datagram(d, now)
    return got


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bad",
    [
        {"call_id": -1},
        {"peer_call_id": 0x10000},
        {"peer_window": 70000},
        {"our_window": -1},
        {"reorder_buffer": 0},
        {"reorder_buffer": 5000},
        {"send_queue": -1},
        {"first_seq": 1 << 32},
        {"ack_delay": -0.1},
        {"ack_delay": float("nan")},
        {"reorder_timeout": -1.0},
        {"ack_timeout": 0.0},
    ],
)
def test_config_validation(bad: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"call_id": 1, "peer_call_id": 2, **bad}
    with pytest.raises(ConfigError):
        GreCallConfig(**kw)


# ---------------------------------------------------------------- sending


def test_sequence_numbers_start_at_first_seq_and_ack_is_piggybacked() -> None:
    a, b = make_pair()
    out = send_all(a, [b"p0", b"p1"], 0.0)
    pkts = [dec(d) for d in out]
    assert [(p.call_id, p.seq, p.ack, p.payload) for p in pkts] == [
        (200, 0, None, b"p0"),  # nothing received yet: no A bit
        (200, 1, None, b"p1"),
    ]
    assert feed(b, out, 0.01) == [b"p0", b"p1"]
    reply = dec(b.send(b"r0", 0.02)[0])
    assert (reply.call_id, reply.seq, reply.ack) == (100, 0, 1)
    assert feed(a, [reply.encode()], 0.03) == [b"r0"]
    assert a.in_flight == 0
    # Every later data packet of a carries its latest ack.
    assert dec(a.send(b"p2", 0.04)[0]).ack == 0
    assert a.stats.sent == 3 and b.stats.sent == 1


def test_first_seq_one_like_pptp_linux_is_accepted() -> None:
    a, b = make_pair(first_seq=1)
    out = send_all(a, [b"x", b"y"], 0.0)
    assert [dec(d).seq for d in out] == [1, 2]
    c = GreCall(GreCallConfig(call_id=200, peer_call_id=100))  # expects nothing in particular
    assert feed(c, out, 0.0) == [b"x", b"y"]
    assert c.stats.lost == 0 and c.held == 0
    assert feed(b, out, 0.0) == [b"x", b"y"]


def test_oversized_payload_is_a_caller_error() -> None:
    a, _ = make_pair()
    with pytest.raises(ValueError):
        a.send(b"x" * 65536, 0.0)


# ---------------------------------------------------------------- window


def test_window_limits_in_flight_and_queue_releases_on_ack() -> None:
    a, b = make_pair(peer_window=2, send_queue=2)
    out = send_all(a, [b"0", b"1", b"2", b"3", b"4"], 0.0)
    assert [dec(d).seq for d in out] == [0, 1]
    assert (a.in_flight, a.queued, a.stats.window_drops) == (2, 2, 1)  # "4" dropped at the tail
    # b acks seq 0 only: exactly one queued packet may go.
    assert feed(b, out[:1], 0.1) == [b"0"]
    b.handle_timer(0.2)
    ack0 = b.datagrams_to_send()
    assert [(dec(d).seq, dec(d).ack) for d in ack0] == [(None, 0)]
    assert feed(a, ack0, 0.3) == []
    released = a.datagrams_to_send()
    assert [(dec(d).seq, dec(d).payload) for d in released] == [(2, b"2")]
    assert (a.in_flight, a.queued) == (2, 1)
    # A cumulative ack for 1 and 2 lets the last queued one out.
    assert feed(b, out[1:] + released, 0.4) == [b"1", b"2"]
    b.handle_timer(0.5)
    assert feed(a, b.datagrams_to_send(), 0.6) == []
    last = a.datagrams_to_send()
    assert [(dec(d).seq, dec(d).payload, dec(d).ack) for d in last] == [(3, b"3", None)]
    assert (a.in_flight, a.queued) == (1, 0)


def test_queued_data_carries_ack_current_at_release() -> None:
    a, b = make_pair(peer_window=1)
    first = a.send(b"a", 0.0)
    assert a.send(b"b", 0.0) == []
    feed(b, first, 0.0)
    reply = b.send(b"r", 0.1)  # data from b acks seq 0
    assert feed(a, reply, 0.2) == [b"r"]
    released = [dec(d) for d in a.datagrams_to_send()]
    assert [(p.seq, p.ack, p.payload) for p in released] == [(1, 0, b"b")]


def test_window_not_respected_when_switched_off() -> None:
    a, _ = make_pair(peer_window=3, respect_peer_window=False)
    out = send_all(a, [bytes([i]) for i in range(10)], 0.0)
    assert len(out) == 10
    assert (a.in_flight, a.queued, a.stats.window_drops) == (10, 0, 0)
    assert a.get_timer() is None


def test_zero_peer_window_means_one() -> None:
    a, _ = make_pair(peer_window=0)
    assert len(send_all(a, [b"a", b"b"], 0.0)) == 1
    assert a.queued == 1


def test_send_queue_zero_drops_everything_beyond_window() -> None:
    a, _ = make_pair(peer_window=1, send_queue=0)
    assert len(send_all(a, [b"a", b"b", b"c"], 0.0)) == 1
    assert (a.queued, a.stats.window_drops) == (0, 2)


def test_ack_timeout_writes_off_in_flight_and_releases_queue() -> None:
    a, _ = make_pair(peer_window=1, ack_timeout=1.0)
    a.send(b"a", 5.0)
    assert a.send(b"b", 5.5) == []
    assert a.get_timer() == 6.0
    assert a.handle_timer(5.99) == []
    assert a.datagrams_to_send() == []
    a.handle_timer(6.0)
    released = [dec(d) for d in a.datagrams_to_send()]
    assert [(p.seq, p.payload) for p in released] == [(1, b"b")]
    assert a.stats.ack_timeouts == 1
    assert (a.in_flight, a.queued) == (1, 0)
    assert a.get_timer() is None  # nothing queued: no stall to watch for


def test_one_way_flow_with_slow_acks_completes() -> None:
    """pptp-linux's behaviour (window 3, ack-only after 0.5 s) with strict window: no stall."""
    a, b = make_pair(peer_window=3, send_queue=100)
    b2 = GreCall(dataclasses.replace(b.config, ack_delay=0.5))
    net: list[tuple[float, int, str, bytes]] = []  # (arrival, order, destination, datagram)
    order = 0
    got: list[bytes] = []
    latency = 0.01

    def push(dst: str, datagrams: list[bytes], now: float) -> None:
        nonlocal order
        for d in datagrams:
            heapq.heappush(net, (now + latency, order, dst, d))
            order += 1

    payloads = [b"%d" % i for i in range(30)]
    push("b", send_all(a, payloads, 0.0), 0.0)
    now = 0.0
    for _ in range(1000):
        timers = [t for t in (a.get_timer(), b2.get_timer()) if t is not None]
        if net and (not timers or net[0][0] <= min(timers)):
            now, _, dst, d = heapq.heappop(net)
            if dst == "b":
                got += b2.receive_datagram(d, now)
                push("a", b2.datagrams_to_send(), now)
            else:
                a.receive_datagram(d, now)
                push("b", a.datagrams_to_send(), now)
        elif timers:
            now = min(timers)
            got += b2.handle_timer(now)
            a.handle_timer(now)
            push("a", b2.datagrams_to_send(), now)
            push("b", a.datagrams_to_send(), now)
        else:
            break
    assert got == payloads
    assert a.stats.window_drops == 0 and a.stats.ack_timeouts == 0
    # 3 packets per ack round trip of 0.5 s + 2 * latency: 10 rounds.
    assert b2.stats.acks_sent == 10
    assert now == pytest.approx(10 * 0.52)  # the last ack reaches a


# ---------------------------------------------------------------- receiving


def test_in_order_delivery_is_immediate() -> None:
    a, b = make_pair()
    out = send_all(a, [b"a", b"b", b"c"], 0.0)
    assert [b.receive_datagram(d, 0.0) for d in out] == [[b"a"], [b"b"], [b"c"]]
    assert (b.stats.received, b.stats.delivered, b.stats.reordered, b.stats.lost) == (3, 3, 0, 0)


def test_reordered_packets_are_put_back_in_order() -> None:
    a, b = make_pair()
    out = send_all(a, [b"0", b"1", b"2", b"3"], 0.0)
    assert [b.receive_datagram(out[i], 0.0) for i in (0, 2, 1, 3)] == [[b"0"], [], [b"1", b"2"], [b"3"]]
    assert (b.stats.delivered, b.stats.reordered, b.stats.lost, b.held) == (4, 1, 0, 0)
    assert b.get_timer() == pytest.approx(0.1)  # only the ack timer remains


def test_gap_filled_in_the_middle_of_held_packets() -> None:
    a, b = make_pair()
    out = send_all(a, [b"%d" % i for i in range(6)], 0.0)
    results = [b.receive_datagram(out[i], 0.0) for i in (0, 3, 5, 2, 1, 4)]
    assert results == [[b"0"], [], [], [], [b"1", b"2", b"3"], [b"4", b"5"]]
    assert b.stats.reordered == 3  # 2, 1 and 4 each arrived after a higher number


def test_loss_released_by_reorder_timeout() -> None:
    a, b = make_pair(reorder_timeout=0.25)
    out = send_all(a, [b"%d" % i for i in range(5)], 0.0)
    assert feed(b, out[:2], 1.0) == [b"0", b"1"]
    assert b.receive_datagram(out[3], 1.125) == []
    assert b.receive_datagram(out[4], 1.25) == []
    assert b.held == 2
    assert b.get_timer() == pytest.approx(1.1)  # the ack timer comes first (ack_delay 0.1)
    b.handle_timer(1.1)
    assert [dec(d).ack for d in b.datagrams_to_send()] == [4]
    assert b.get_timer() == 1.375
    assert b.handle_timer(1.37) == []
    assert b.handle_timer(1.375) == [b"3", b"4"]
    assert (b.stats.lost, b.stats.delivered, b.held, b.last_delivered) == (1, 4, 0, 4)
    assert b.get_timer() is None
    # The missing packet turns up late: older than the last delivered.
    assert b.receive_datagram(out[2], 1.5) == []
    assert b.stats.too_old == 1


def test_reorder_timeout_releases_only_expired_packets() -> None:
    a, b = make_pair(reorder_timeout=0.5, ack_delay=10.0)
    out = send_all(a, [b"%d" % i for i in range(8)], 0.0)
    feed(b, out[:1], 0.0)
    assert b.receive_datagram(out[3], 1.0) == []  # gap 1-2
    assert b.receive_datagram(out[6], 1.3) == []  # gap 4-5
    assert b.receive_datagram(out[4], 1.4) == []
    # Only 3 has waited long enough; 4 follows it without a gap; 6 (after a gap) keeps waiting.
    assert b.handle_timer(1.5) == [b"3", b"4"]
    assert (b.stats.lost, b.last_delivered) == (2, 4)
    assert b.get_timer() == pytest.approx(1.8)
    assert b.receive_datagram(out[5], 1.6) == [b"5", b"6"]
    assert b.stats.lost == 2


def test_reorder_buffer_cap_forces_release() -> None:
    a, b = make_pair(reorder_buffer=3)
    out = send_all(a, [b"%d" % i for i in range(7)], 0.0)
    feed(b, out[:1], 0.0)
    assert [b.receive_datagram(out[i], 0.0) for i in (2, 3, 4)] == [[], [], []]
    assert b.held == 3
    assert b.receive_datagram(out[6], 0.0) == [b"2", b"3", b"4"]  # 1 given up
    assert (b.held, b.stats.lost, b.last_delivered) == (1, 1, 4)
    assert b.receive_datagram(out[5], 0.0) == [b"5", b"6"]


def test_reorder_cap_releases_lowest_even_if_newest() -> None:
    a, b = make_pair(reorder_buffer=2)
    out = send_all(a, [b"%d" % i for i in range(10)], 0.0)
    feed(b, out[:1], 0.0)
    feed(b, [out[8], out[9]], 0.0)
    # 5 lands below both held packets and overflows the buffer: it is the lowest, so it goes.
    assert b.receive_datagram(out[5], 0.0) == [b"5"]
    assert (b.stats.lost, b.held, b.last_delivered) == (4, 2, 5)


def test_duplicates_and_too_old_dropped_and_counted() -> None:
    a, b = make_pair()
    out = send_all(a, [b"0", b"1", b"2", b"3"], 0.0)
    assert feed(b, [out[0], out[1], out[1], out[0]], 0.0) == [b"0", b"1"]
    assert feed(b, [out[3], out[3]], 0.0) == []  # second copy while held
    assert (b.stats.duplicates, b.stats.too_old) == (2, 1)
    assert feed(b, [out[2]], 0.0) == [b"2", b"3"]
    assert b.stats.delivered == 4


def test_nobuffer_delivers_newer_at_once_and_drops_older() -> None:
    a, b = make_pair(nobuffer=True)
    out = send_all(a, [b"%d" % i for i in range(5)], 0.0)
    results = [b.receive_datagram(out[i], 0.0) for i in (0, 2, 1, 4, 4, 3)]
    assert results == [[b"0"], [b"2"], [], [b"4"], [], []]
    s = b.stats
    assert (s.delivered, s.lost, s.too_old, s.duplicates, s.reordered, b.held) == (3, 2, 2, 1, 0, 0)
    assert b.get_timer() == pytest.approx(0.1)  # no reorder timer in nobuffer mode


def test_wrong_call_id_and_malformed_counted() -> None:
    a, b = make_pair()
    other = GreCall(GreCallConfig(call_id=7, peer_call_id=9))
    assert b.receive_datagram(other.send(b"x", 0.0)[0], 0.0) == []
    assert b.receive_datagram(b"\x30\x81garbage", 0.0) == []
    b.count_malformed()
    assert (b.stats.wrong_call_id, b.stats.malformed, b.stats.received) == (1, 2, 0)
    assert feed(b, a.send(b"ok", 0.0), 0.0) == [b"ok"]


def test_window_overrun_counted_not_dropped() -> None:
    a, b = make_pair(our_window=2, ack_delay=5.0)
    out = send_all(a, [b"%d" % i for i in range(4)], 0.0)
    feed(b, out[:1], 0.0)
    b.handle_timer(5.0)
    assert [dec(d).ack for d in b.datagrams_to_send()] == [0]
    # Seq 1 and 2 fit in a window of 2 after ack 0; seq 3 does not, but is still delivered.
    assert feed(b, out[1:3], 5.0) == [b"1", b"2"]
    assert b.stats.window_overruns == 0
    assert feed(b, out[3:], 5.0) == [b"3"]
    assert b.stats.window_overruns == 1
    # Before we ever acked there is nothing to measure against.
    _, fresh = make_pair(our_window=1, ack_delay=5.0)
    assert feed(fresh, out, 0.0) == [b"0", b"1", b"2", b"3"]
    assert fresh.stats.window_overruns == 0


# ---------------------------------------------------------------- acks


def test_ack_only_after_ack_delay() -> None:
    a, b = make_pair(ack_delay=0.5)
    out = send_all(a, [b"a", b"b"], 0.0)
    feed(b, out[:1], 1.0)
    assert b.get_timer() == 1.5
    feed(b, out[1:], 1.2)
    assert b.get_timer() == 1.5  # the first unacked packet sets the deadline
    b.handle_timer(1.49)
    assert b.datagrams_to_send() == []
    b.handle_timer(1.5)
    acks = [dec(d) for d in b.datagrams_to_send()]
    assert [(p.call_id, p.seq, p.ack, p.payload) for p in acks] == [(100, None, 1, b"")]
    assert acks[0].encode() == bytes.fromhex("2081880b0000006400000001")
    assert (b.stats.acks_sent, b.get_timer(), b.ack_pending) == (1, None, False)
    b.handle_timer(5.0)
    assert b.datagrams_to_send() == []  # nothing new to ack


def test_piggybacked_ack_cancels_ack_only() -> None:
    a, b = make_pair(ack_delay=0.5)
    feed(b, a.send(b"a", 0.0), 1.0)
    assert b.get_timer() == 1.5
    assert dec(b.send(b"reply", 1.2)[0]).ack == 0
    assert b.get_timer() is None
    b.handle_timer(2.0)
    assert b.datagrams_to_send() == []
    assert b.stats.acks_sent == 0


def test_zero_ack_delay_acks_immediately() -> None:
    a, b = make_pair(ack_delay=0.0)
    feed(b, a.send(b"a", 0.0), 1.0)
    assert [dec(d).ack for d in b.datagrams_to_send()] == [0]
    assert b.get_timer() is None


def test_duplicate_does_not_trigger_new_ack() -> None:
    a, b = make_pair(ack_delay=0.0)
    out = a.send(b"a", 0.0)
    feed(b, out, 0.0)
    b.datagrams_to_send()
    feed(b, out, 0.1)
    assert b.datagrams_to_send() == []


def test_ack_covers_highest_received_across_a_gap() -> None:
    a, b = make_pair(ack_delay=0.0)
    out = send_all(a, [b"0", b"1", b"2"], 0.0)
    feed(b, [out[0], out[2]], 0.0)
    # RFC 2637 4.3: acknowledge the highest number received, even with 1 still missing.
    assert [dec(d).ack for d in b.datagrams_to_send()] == [0, 2]


def test_bogus_and_stale_acks() -> None:
    a, _ = make_pair()
    send_all(a, [b"0", b"1", b"2"], 0.0)
    assert a.receive(GrePacket(100, ack=7), 0.1) == []
    assert (a.stats.bogus_acks, a.in_flight) == (1, 3)
    a.receive(GrePacket(100, ack=1), 0.1)
    assert a.in_flight == 1
    a.receive(GrePacket(100, ack=0), 0.1)  # reordered old ack
    a.receive(GrePacket(100, ack=1), 0.1)  # repeated ack
    assert (a.stats.stale_acks, a.stats.bogus_acks, a.in_flight, a.stats.acks_received) == (1, 1, 1, 4)
    # Before anything was sent every ack is for data we never sent.
    fresh = GreCall(GreCallConfig(call_id=1, peer_call_id=2))
    fresh.receive(GrePacket(1, ack=0), 0.0)
    assert fresh.stats.bogus_acks == 1


def test_rtt_estimate() -> None:
    a, _ = make_pair()
    a.send(b"0", 0.0)  # sampled
    a.send(b"1", 0.1)  # not sampled: one sample at a time
    a.receive(GrePacket(100, ack=0), 0.3)
    assert a.stats.srtt == pytest.approx(0.3)
    assert a.stats.rtt_samples == 1
    a.receive(GrePacket(100, ack=1), 0.35)
    assert a.stats.rtt_samples == 1
    a.send(b"2", 1.0)  # sampled
    a.send(b"3", 1.05)
    a.receive(GrePacket(100, ack=3), 1.2)  # covers 2: sample 0.2
    assert a.stats.srtt == pytest.approx(0.3 + 0.125 * (0.2 - 0.3))
    assert a.stats.rtt_samples == 2


def test_rtt_sample_dropped_on_ack_timeout() -> None:
    a, _ = make_pair(peer_window=1, ack_timeout=1.0)
    a.send(b"0", 0.0)
    a.send(b"1", 0.0)
    a.handle_timer(1.0)  # 0 written off; 1 goes out at 1.0 and becomes the sample
    a.receive(GrePacket(100, ack=1), 1.25)
    assert a.stats.srtt == pytest.approx(0.25)
    assert a.stats.rtt_samples == 1


# ---------------------------------------------------------------- wrap-around


def test_wrap_around_send_receive_ack_and_window() -> None:
    start = WRAP - 2
    a, b = make_pair(first_seq=start, peer_window=4, ack_delay=0.0)
    out = send_all(a, [b"%d" % i for i in range(5)], 0.0)
    assert [dec(d).seq for d in out] == [WRAP - 2, WRAP - 1, 0, 1]
    assert a.queued == 1
    # Reordered across the wrap.
    order = [0, 2, 1, 3]
    assert [b.receive_datagram(out[i], 0.0) for i in order] == [[b"0"], [], [b"1", b"2"], [b"3"]]
    acks = [dec(d).ack for d in b.datagrams_to_send()]
    assert acks == [WRAP - 2, 0, 1]  # highest received, wrapping
    assert a.in_flight == 4
    for ack in acks:
        a.receive(GrePacket(100, ack=ack), 0.1)
    # All four acknowledged across the wrap; the queued fifth went out at once.
    assert (a.in_flight, a.queued, a.stats.bogus_acks, a.stats.stale_acks) == (1, 0, 0, 0)
    released = [dec(d) for d in a.datagrams_to_send()]
    assert [(p.seq, p.payload) for p in released] == [(2, b"4")]
    assert feed(b, [r.encode() for r in released], 0.2) == [b"4"]
    assert b.last_delivered == 2


def test_wrap_around_loss_timeout_and_old_packets() -> None:
    a, b = make_pair(first_seq=WRAP - 3, reorder_timeout=0.1, ack_delay=9.0)
    out = send_all(a, [b"%d" % i for i in range(6)], 0.0)  # seqs -3 .. 2
    feed(b, out[:1], 0.0)
    assert feed(b, [out[4], out[5]], 0.0) == []  # 1 and 2 held; -2, -1, 0 missing
    assert b.handle_timer(0.1) == [b"4", b"5"]
    assert (b.stats.lost, b.last_delivered) == (3, 2)
    assert feed(b, [out[1], out[2], out[3]], 0.2) == []
    assert b.stats.too_old == 3


# ---------------------------------------------------------------- properties


@settings(max_examples=250, deadline=None)
@given(
    n=st.integers(1, 40),
    start=st.sampled_from([0, 1, WRAP - 5, 0x7FFFFFFE]),
    nobuffer=st.booleans(),
    cap=st.integers(1, 8),
    data=st.data(),
)
def test_random_network_delivery_invariants(
    n: int, start: int, nobuffer: bool, cap: int, data: st.DataObject
) -> None:
    a, b = make_pair(first_seq=start, respect_peer_window=False, nobuffer=nobuffer, reorder_buffer=cap)
    out = send_all(a, [i.to_bytes(2, "big") for i in range(n)], 0.0)
    # Keep the first packet first: the receiver takes its baseline from it.
    rest = data.draw(st.lists(st.integers(1, n - 1), max_size=2 * n)) if n > 1 else []
    schedule = [0, *rest]
    got: list[bytes] = []
    for t, i in enumerate(schedule):
        got += b.receive_datagram(out[i], t * 0.01)
    got += b.handle_timer(1e9)
    idx = [int.from_bytes(p, "big") for p in got]
    assert idx == sorted(set(idx))  # in order, no duplicates
    assert set(idx) <= set(schedule)
    s = b.stats
    assert s.delivered == len(idx)
    assert s.delivered + s.lost == idx[-1] + 1
    assert s.received == len(schedule)
    assert s.received == s.delivered + s.duplicates + s.too_old
    assert b.held == 0
    if not nobuffer and len(set(schedule)) == n and cap >= n:
        assert idx == list(range(n))  # nothing lost: everything delivered


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_fuzz_receive_datagram_never_raises(datagrams: list[bytes]) -> None:
    _, b = make_pair()
    for i, d in enumerate(datagrams):
        b.receive_datagram(d, float(i))
        b.handle_timer(float(i))
    b.datagrams_to_send()
    assert b.held <= b.config.reorder_buffer


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFFFFFF) | st.none(),
            st.integers(0, 0xFFFFFFFF) | st.none(),
        ),
        max_size=30,
    )
)
def test_fuzz_hostile_sequence_and_ack_numbers(fields: list[tuple[int | None, int | None]]) -> None:
    a, _ = make_pair(peer_window=4, send_queue=4, reorder_buffer=4)
    for i, (seq, ack) in enumerate(fields):
        now = i * 0.05
        a.send(b"x", now)
        packet = GrePacket(100, b"p" if seq is not None else b"", seq, ack)
        a.receive(packet, now)
        a.handle_timer(now)
        a.datagrams_to_send()
        assert a.in_flight <= 4
        assert a.queued <= 4
        assert a.held <= 4
    assert a.stats.sent + a.queued + a.stats.window_drops == len(fields)
