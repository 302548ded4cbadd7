"""``Deadline``: one loop handle, re-armed only when the deadline moves earlier."""

from __future__ import annotations

import asyncio

from pptpkit.io.deadline import Deadline


def _timers(loop: asyncio.AbstractEventLoop) -> int:
    return sum(1 for h in loop._scheduled if not h.cancelled())  # type: ignore[attr-defined]


async def _run() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    d = Deadline(loop, fired.append)
    t0 = loop.time()
    d.arm(t0 + 0.05)
    scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
    # Later deadlines and "no deadline" keep the one handle: no new loop timers per call.
    for i in range(100):
        d.arm(t0 + 0.06 + i * 0.0001)
        d.arm(None)
    d.arm(t0 + 0.08)
    assert len(loop._scheduled) == scheduled  # type: ignore[attr-defined]
    assert d.at == t0 + 0.08
    await asyncio.sleep(0.06)
    assert fired == []  # the early handle re-armed itself instead of calling back
    assert _timers(loop) == 1
    await asyncio.sleep(0.04)
    assert len(fired) == 1 and fired[0] >= t0 + 0.08
    assert d.at is None and _timers(loop) == 0

    # An earlier deadline replaces the handle at once.
    t1 = loop.time()
    d.arm(t1 + 1.0)
    d.arm(t1 + 0.01)
    assert _timers(loop) == 1
    await asyncio.sleep(0.03)
    assert len(fired) == 2

    # Dropped deadline: the early handle fires silently and nothing is left armed.
    d.arm(loop.time() + 0.01)
    d.arm(None)
    await asyncio.sleep(0.03)
    assert len(fired) == 2 and _timers(loop) == 0

    # cancel() really cancels.
    d.arm(loop.time() + 0.01)
    d.cancel()
    assert _timers(loop) == 0 and d.at is None
    await asyncio.sleep(0.02)
    assert len(fired) == 2


def test_deadline_rearms_lazily() -> None:
    asyncio.run(_run())
