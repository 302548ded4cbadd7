"""Forged sequence numbers cannot desynchronise a call; a real jump in the peer's numbering is
followed after a short run (issue 14, item 1).  GRE is not authenticated: anyone who knows the
call ID and the peer's address can inject packets."""

from __future__ import annotations

from pptpkit.gre import GreCall, GreCallConfig
from pptpkit.gre.call import SEQ_RESYNC_RUN
from pptpkit.gre.packet import encode_gre

CALL_ID = 100
WRAP = 1 << 32


def receiver(**kw: object) -> GreCall:
    return GreCall(GreCallConfig(call_id=CALL_ID, peer_call_id=200, **kw))  # type: ignore[arg-type]


def packet(seq: int, payload: bytes = b"x") -> bytes:
    return encode_gre(CALL_ID, payload, seq % WRAP, None)


def deliver(call: GreCall, seqs: list[int], now: float = 0.0) -> list[bytes]:
    out: list[bytes] = []
    for seq in seqs:
        out += call.receive_datagram(packet(seq, seq.to_bytes(8, "big")), now)
        out += call.handle_timer(now)
    return out


def test_two_forged_packets_do_not_kill_the_stream() -> None:
    """X and X + 2**31 with the live call ID used to move the receive counter, after which
    every real packet counted as too old."""
    call = receiver()
    assert len(deliver(call, list(range(1, 101)))) == 100
    x = 100 + 50_000
    assert deliver(call, [x, x + (1 << 31)], now=0.0) == []
    # The reorder timeout passes: nothing was held, nothing moves.
    assert call.handle_timer(10.0) == []
    got = deliver(call, list(range(101, 201)), now=10.0)
    assert len(got) == 100 and call.stats.too_old == 0
    assert call.stats.seq_jumps_refused == 2 and call.stats.seq_resyncs == 0


def test_a_forged_run_interleaved_with_real_traffic_is_never_believed() -> None:
    call = receiver()
    deliver(call, list(range(1, 11)))
    forged = 10 + 1_000_000
    real = 11
    for i in range(50):
        deliver(call, [forged + i])
        assert len(deliver(call, [real])) == 1
        real += 1
    assert call.stats.seq_resyncs == 0 and call.stats.seq_jumps_refused == 50
    assert call.last_delivered == real - 1


def test_a_real_jump_is_followed_after_a_short_run() -> None:
    """A peer that really moved on (an outage far longer than the window) is followed after
    SEQ_RESYNC_RUN packets in a row; the ones before are lost, nothing after."""
    call = receiver()
    deliver(call, list(range(1, 11)))
    start = 10 + 20_000
    got = deliver(call, list(range(start, start + 100)))
    assert len(got) == 100 - (SEQ_RESYNC_RUN - 1)
    assert got[0] == (start + SEQ_RESYNC_RUN - 1).to_bytes(8, "big")
    assert call.stats.seq_resyncs == 1 and call.stats.seq_jumps_refused == SEQ_RESYNC_RUN - 1


def test_a_receiver_pushed_off_the_stream_finds_it_again() -> None:
    """Numbers far behind are treated alike: even if a forged run was believed while the real
    peer was silent, the real stream takes the receiver back after a short run."""
    call = receiver()
    deliver(call, list(range(1, 11)))
    forged = 10 + 300_000
    deliver(call, list(range(forged, forged + SEQ_RESYNC_RUN)))
    assert call.stats.seq_resyncs == 1
    got = deliver(call, list(range(11, 61)))
    assert len(got) == 50 - (SEQ_RESYNC_RUN - 1) and call.stats.seq_resyncs == 2


def test_jumps_within_the_bound_are_ordinary_loss() -> None:
    call = receiver(max_seq_jump=512)
    deliver(call, list(range(1, 11)))
    got = deliver(call, [10 + 500, 10 + 501], now=0.0) + call.handle_timer(1.0)
    assert len(got) == 2 and call.stats.lost == 499 and call.stats.seq_jumps_refused == 0


def test_wraparound_is_not_a_jump() -> None:
    call = receiver()
    base = WRAP - 5
    assert len(deliver(call, list(range(base, base + 10)))) == 10
    assert call.stats.seq_jumps_refused == 0
