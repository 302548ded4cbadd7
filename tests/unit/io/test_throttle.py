"""LogThrottle: one line per interval, the rest counted and reported with the next line."""

from __future__ import annotations

from pptpkit.io.throttle import LogThrottle, left_out_text


def test_first_passes_then_quiet_then_reports_the_count() -> None:
    throttle = LogThrottle(10.0)
    assert throttle(0.0) == 0
    assert [throttle(t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle(10.0) == 3
    assert throttle(10.5) is None
    assert throttle(25.0) == 1
    assert throttle.total == 7


def test_a_flood_costs_one_line_per_interval() -> None:
    throttle = LogThrottle(10.0)
    lines = [n for i in range(100_000) if (n := throttle(i * 0.001)) is not None]
    assert len(lines) == 10  # 100 s of events, one line per 10 s
    # Every event is a line, or counted in one, or still waiting for the next line.
    assert sum(lines) + len(lines) + throttle.suppressed == 100_000


def test_left_out_text() -> None:
    assert left_out_text(0) == ""
    assert left_out_text(5) == " (and 5 more since the last such line)"
