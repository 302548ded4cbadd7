"""The call manager's connection accounting: which control connection a call goes on, when
another is opened and when one is closed, for PACs allowing 1, 2 and "0" calls per connection,
with calls opening and closing in any order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.compat.callmgr.pool import ConnectionPool, ConnState, Plan, call_limit
from pptpkit.errors import StateError


def up(pool: ConnectionPool[str], conn: int, max_channels: int) -> Plan:
    assert pool.state(conn) is ConnState.CONNECTING
    return pool.connected(conn, max_channels)


def test_call_limit() -> None:
    assert call_limit(1, 64) == 1
    assert call_limit(2, 64) == 2
    assert call_limit(0, 64) == 1  # a PAC's 0 says nothing: the safe choice
    assert call_limit(65535, 64) == 64  # our own per-connection cap wins
    assert call_limit(5, 1) == 1


def test_pptpd_one_call_per_connection() -> None:
    """pptpd answers Maximum Channels 1: the second call gets its own connection, and the
    first call's connection is neither shared nor closed by it."""
    pool: ConnectionPool[str] = ConnectionPool()
    assert pool.place("a") == Plan(open=(1,))
    assert up(pool, 1, 1) == Plan()
    assert pool.place("b") == Plan(open=(2,))
    assert pool.connection_of("a") == 1 and pool.connection_of("b") == 2
    assert up(pool, 2, 1) == Plan()
    # The first call ends first: only its connection goes.
    assert pool.release("a") == Plan(close=(1,))
    assert pool.connections == (2,) and pool.calls_on(2) == ("b",)
    assert pool.place("c") == Plan(open=(3,))
    assert pool.release("b") == Plan(close=(2,))
    assert pool.release("c") == Plan()  # connection 3 is not up yet: closed once it is
    assert up(pool, 3, 1) == Plan(close=(3,))
    assert not pool.connections


def test_calls_asked_together_move_on_when_the_limit_is_small() -> None:
    pool: ConnectionPool[str] = ConnectionPool()
    assert pool.place("a") == Plan(open=(1,))
    # No limit known yet: wait for the same set-up rather than open a second connection.
    assert pool.place("b") == Plan()
    assert pool.place("c") == Plan()
    assert pool.calls_on(1) == ("a", "b", "c")
    # The reply says 1: the first call stays, the others each need a connection of their own
    # (the limit just learnt applies to connections being set up too).
    assert up(pool, 1, 1) == Plan(open=(2, 3))
    assert pool.calls_on(1) == ("a",)
    assert [pool.connection_of(k) for k in "bc"] == [2, 3]
    assert pool.place("d") == Plan(open=(4,))


def test_two_calls_per_connection() -> None:
    pool: ConnectionPool[str] = ConnectionPool()
    pool.place("a")
    up(pool, 1, 2)
    assert pool.place("b") == Plan()
    assert pool.place("c") == Plan(open=(2,))
    assert pool.place("d") == Plan()  # joins the set-up: this server allows 2
    assert pool.calls_on(2) == ("c", "d")
    assert up(pool, 2, 2) == Plan()
    assert pool.limit(1) == pool.limit(2) == 2
    # A connection stays while one call is left on it; a freed slot is reused, oldest first.
    assert pool.release("a") == Plan()
    assert pool.release("d") == Plan()
    assert pool.place("e") == Plan() and pool.connection_of("e") == 1
    assert pool.release("c") == Plan(close=(2,))
    assert pool.release("e") == Plan()
    assert pool.release("b") == Plan(close=(1,))
    assert not pool.connections


def test_maximum_channels_zero_is_one_call_per_connection() -> None:
    pool: ConnectionPool[str] = ConnectionPool()
    pool.place("a")
    pool.place("b")
    assert up(pool, 1, 0) == Plan(open=(2,))
    assert pool.limit(1) == 1
    assert pool.place("c") == Plan(open=(3,))


def test_a_server_allowing_many_calls_gets_them_on_one_connection() -> None:
    pool: ConnectionPool[str] = ConnectionPool(own_limit=64)
    pool.place("a")
    pool.place("b")  # asked together
    assert up(pool, 1, 16) == Plan()
    for key in "cdefg":
        assert pool.place(key) == Plan()
    assert pool.connections == (1,) and len(pool.calls_on(1)) == 7


def test_own_limit_caps_what_joins_an_unknown_set_up() -> None:
    pool: ConnectionPool[str] = ConnectionPool(own_limit=2)
    pool.place("a")
    pool.place("b")
    assert pool.place("c") == Plan(open=(2,))
    assert up(pool, 1, 65535) == Plan() and pool.limit(1) == 2


def test_lost_connection_forgets_its_calls() -> None:
    pool: ConnectionPool[str] = ConnectionPool()
    pool.place("a")
    pool.place("b")
    up(pool, 1, 2)
    assert pool.lost(1) == ("a", "b")
    assert not pool.connections and pool.connection_of("a") is None
    assert pool.release("a") == Plan()  # its owner noticing later is harmless
    assert pool.lost(1) == ()
    assert pool.place("c") == Plan(open=(2,))  # never reuses a number


def test_misuse() -> None:
    pool: ConnectionPool[str] = ConnectionPool()
    pool.place("a")
    with pytest.raises(StateError):
        pool.place("a")
    up(pool, 1, 1)
    with pytest.raises(StateError):
        pool.connected(1, 1)
    with pytest.raises(StateError):
        pool.connected(7, 1)
    with pytest.raises(ValueError):
        ConnectionPool(own_limit=0)


# A step: what happens, which one (an index, modulo what there is), and a Maximum Channels.
STEP = st.tuples(st.sampled_from(["place", "up", "release", "lose"]), st.integers(0, 20),
                 st.sampled_from([0, 1, 2, 3]))


@settings(max_examples=400, deadline=None)
@given(st.lists(STEP, max_size=60), st.sampled_from([1, 2, 64]))
def test_accounting_holds_in_any_order(steps: list[tuple[str, int, int]], own_limit: int) -> None:
    """A manager following the plans: connections it holds are exactly the pool's, no up
    connection is empty or over its limit, and a connection is opened only when none has room."""
    pool: ConnectionPool[int] = ConnectionPool(own_limit=own_limit)
    held: set[int] = set()  # connections opened and not closed/lost, as the manager sees them
    live: list[int] = []  # calls placed and not released (or lost)
    limits: dict[int, int] = {}
    next_key = 0

    def carry_out(plan: Plan) -> None:
        for conn in plan.open:
            assert conn not in held
            held.add(conn)
        for conn in plan.close:
            assert conn in held and pool.state(conn) is None and not pool.calls_on(conn)
            held.remove(conn)

    for what, which, max_channels in steps:
        if what == "place":
            room = [c for c in pool.connections
                    if len(pool.calls_on(c)) < (pool.limit(c) or pool.known_limit or own_limit)]
            plan = pool.place(next_key)
            assert bool(plan.open) == (not room)
            assert not plan.close
            if room:
                assert pool.connection_of(next_key) == room[0]  # the oldest with room
            live.append(next_key)
            next_key += 1
            carry_out(plan)
        elif what == "up":
            setting_up = [c for c in pool.connections if pool.state(c) is ConnState.CONNECTING]
            if setting_up:
                conn = setting_up[which % len(setting_up)]
                before = pool.calls_on(conn)
                plan = pool.connected(conn, max_channels)
                limit = call_limit(max_channels, own_limit)
                limits[conn] = limit
                if before:
                    assert pool.calls_on(conn) == before[:limit]  # the earliest keep their place
                else:
                    assert plan.close == (conn,)
                carry_out(plan)
        elif what == "release":
            if live:
                key = live.pop(which % len(live))
                carry_out(pool.release(key))
        elif pool.connections:
            conn = pool.connections[which % len(pool.connections)]
            gone = pool.lost(conn)
            held.discard(conn)
            live = [k for k in live if k not in gone]

        assert set(pool.connections) == held
        assert sorted(k for c in pool.connections for k in pool.calls_on(c)) == sorted(live)
        for key in live:
            assert pool.connection_of(key) in held
        for conn in pool.connections:
            if pool.state(conn) is ConnState.UP:
                assert 0 < len(pool.calls_on(conn)) <= limits[conn] == pool.limit(conn)
