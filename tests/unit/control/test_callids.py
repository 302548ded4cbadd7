"""Our call IDs: unique, bounded, unpredictable, and not reused at once."""

from __future__ import annotations

import itertools
import random

import pytest

from pptpkit.control import CallIdAllocator, CallIdExhausted
from pptpkit.control.callids import REUSE_DELAY
from pptpkit.errors import ConfigError


def test_allocator_properties() -> None:
    ids = CallIdAllocator(rng=random.Random(3), low=10, high=14, max_in_use=5)
    got = [ids.allocate() for _ in range(5)]
    assert sorted(got) == [10, 11, 12, 13, 14]
    with pytest.raises(CallIdExhausted):
        ids.allocate()
    ids.release(got[2])
    assert ids.allocate() == got[2]
    ids.release(got[0])
    ids.release(got[1])
    # A full range gives back what was released longest ago first, never the latest.
    assert ids.allocate() == got[0]
    first = CallIdAllocator(rng=random.Random(3)).allocate()
    assert first == CallIdAllocator(rng=random.Random(3)).allocate()  # seeded: deterministic
    with pytest.raises(ConfigError):
        CallIdAllocator(low=5, high=70000)
    with pytest.raises(ConfigError):
        CallIdAllocator(low=1, high=3, max_in_use=4)


def test_ids_are_not_sequential() -> None:
    """Opening one call must not reveal the IDs of the calls opened next to it."""
    ids = CallIdAllocator()
    got = [ids.allocate() for _ in range(200)]
    steps = [(b - a) & 0xFFFF for a, b in itertools.pairwise(got)]
    assert sum(step == 1 for step in steps) < 5
    assert len(set(got)) == 200


def test_a_released_id_is_not_handed_out_again_soon() -> None:
    ids = CallIdAllocator(rng=random.Random(1), low=1, high=20000)
    first = ids.allocate()
    ids.release(first)
    later = {ids.allocate() for _ in range(REUSE_DELAY // 2)}
    assert first not in later


def test_a_small_busy_range_still_works() -> None:
    ids = CallIdAllocator(rng=random.Random(5), low=1, high=8, max_in_use=8)
    for _ in range(100):
        got = [ids.allocate() for _ in range(8)]
        assert sorted(got) == list(range(1, 9))
        for call_id in got:
            ids.release(call_id)
