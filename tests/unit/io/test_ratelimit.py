"""The shared TUN's token bucket on a virtual clock: the burst, the rate over time, the drops
counted, and a long run that must come out at the rate."""

from __future__ import annotations

import pytest

from pptpkit.io.ratelimit import MIN_BURST, TokenBucket, default_burst


def test_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=3000, now=0.0)
    # Full at the start: three 1000-octet packets at once, not a fourth.
    assert [bucket.allow(1000, 0.0) for _ in range(4)] == [True, True, True, False]
    assert (bucket.dropped, bucket.dropped_octets) == (1, 1000)
    # Half a second refills 500 octets: not enough for 1000, enough for 500.
    assert not bucket.allow(1000, 0.5)
    assert bucket.allow(500, 0.5)
    # A drop takes nothing: after one more second 1000 octets fit exactly.
    assert not bucket.allow(1000, 1.0)
    assert bucket.allow(1000, 1.5)
    assert bucket.dropped == 3


def test_an_idle_bucket_holds_no_more_than_the_burst() -> None:
    bucket = TokenBucket(rate=1000, burst=2000, now=0.0)
    assert bucket.allow(2000, 0.0)
    # An hour idle still gives only the burst.
    assert bucket.allow(2000, 3600.0)
    assert not bucket.allow(1, 3600.0)


def test_a_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(rate=1000, burst=1000, now=10.0)
    assert bucket.allow(1000, 10.0)
    assert not bucket.allow(500, 9.0)
    assert bucket.allow(500, 10.5)


def test_a_long_run_comes_out_at_the_rate() -> None:
    """Offered at 3x the rate for 60 s, 1400-octet packets: what passes is the rate times the
    time plus the burst, within a packet."""
    kbit = 2000
    bucket = TokenBucket.kbit(kbit, now=0.0)
    rate = kbit * 1000 / 8
    passed = 0
    step = 1400 / (3 * rate)
    now = 0.0
    while now < 60.0:
        if bucket.allow(1400, now):
            passed += 1400
        now += step
    expected = rate * 60 + bucket.burst
    assert abs(passed - expected) <= 1400
    assert bucket.dropped > 0 and bucket.dropped_octets == pytest.approx(3 * rate * 60 - passed, abs=2 * 1400)


def test_default_burst() -> None:
    assert default_burst(4000) == 4000 * 1000 // 8 * 3 // 10
    assert default_burst(1) == MIN_BURST
    assert TokenBucket.kbit(8, 0.0, burst=1500).burst == 1500


@pytest.mark.parametrize(("rate", "burst"), [(0, 100), (100, 0), (-1, 100)])
def test_bad_buckets(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)
