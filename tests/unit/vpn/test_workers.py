"""The supervisor's ledger and the framing between supervisor and workers (sans-IO), and the
asyncio port on a real socketpair."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pptpkit.vpn.pool import AddressPool
from pptpkit.vpn.workers import (
    Framer,
    Ledger,
    LedgerClient,
    LedgerLimits,
    LedgerRefusal,
    Port,
    PortClosed,
    frame,
)


def _ledger(n: int = 4, **limits: int) -> Ledger:
    lim = {"max_sessions": 100, "max_per_source": 100, "max_preauth": 100, "max_preauth_per_source": 100,
           **limits}
    pool = AddressPool(["192.0.2.1"], [f"198.51.100.{i}" for i in range(10, 10 + n)])
    return Ledger(pool, LedgerLimits(**lim))


def test_framer_splits_and_joins() -> None:
    data = frame({"op": "a", "q": 1}) + frame({"r": 1, "ok": True})
    f = Framer()
    got = []
    for i in range(len(data)):  # one byte at a time
        got += f.feed(data[i:i + 1])
    assert got == [{"op": "a", "q": 1}, {"r": 1, "ok": True}]


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x01{", b"\xff\xff\xff\xff"])
def test_framer_refuses_what_is_not_the_protocol(bad: bytes) -> None:
    with pytest.raises(PortClosed):
        Framer(max_frame=1000).feed(bad)


def test_no_address_twice_across_workers_and_all_back_when_one_dies() -> None:
    ledger = _ledger(4)
    pairs = [ledger.admit(w, f"s{w}{i}", f"203.0.113.{i}") for w in (0, 1) for i in range(2)]
    assert all(p["ok"] for p in pairs)
    assert len({p["pair"][1] for p in pairs}) == 4
    # The pool is empty: admitted without an address (a static one may come), never a taken one.
    assert ledger.admit(0, "late", "203.0.113.9") == {"ok": True, "pair": None}
    assert ledger.claim(0, "late", pairs[0]["pair"][1])["ok"] is False
    assert ledger.claim(0, "late", "198.51.100.99") == {"ok": True}
    ledger.release(0, "late")
    assert ledger.forget_worker(1) == 2
    assert ledger.sessions == 2 and ledger.preauth == 2
    again = [ledger.admit(2, f"n{i}", "203.0.113.1") for i in range(2)]
    assert {p["pair"][1] for p in again} == {p["pair"][1] for p in pairs[2:]}


def test_limits_hold_across_workers() -> None:
    ledger = _ledger(10, max_sessions=2, max_per_source=3, max_preauth=3, max_preauth_per_source=2)
    assert ledger.admit(0, "a", "203.0.113.1")["ok"]
    assert ledger.admit(1, "b", "203.0.113.1")["ok"]
    assert ledger.admit(0, "c", "203.0.113.1")["kind"] == "preauth"  # 2 authenticating from .1
    assert ledger.admit(1, "c", "203.0.113.2")["ok"]
    assert ledger.admit(1, "d", "203.0.113.3")["kind"] == "preauth"  # 3 authenticating in all
    assert ledger.authenticated(0, "a") == {"ok": True}
    assert ledger.authenticated(1, "b") == {"ok": True}
    assert ledger.authenticated(1, "c")["ok"] is False  # the third for two places: ended
    ledger.release(1, "c")
    assert ledger.admit(0, "e", "203.0.113.4")["kind"] == "max_sessions"
    ledger.release(0, "a")
    assert ledger.admit(0, "e", "203.0.113.1")["ok"]
    assert ledger.admit(1, "f", "203.0.113.1")["ok"]
    assert ledger.admit(1, "g", "203.0.113.1")["kind"] == "per_source"  # b, e, f from .1 already
    assert ledger.established == 1 and ledger.preauth == 2


def test_static_addresses_are_exclusive_and_kept_from_the_pool() -> None:
    ledger = _ledger(3)
    a = ledger.admit(0, "a", "203.0.113.1")
    b = ledger.admit(1, "b", "203.0.113.1")
    assert (a["pair"][1], b["pair"][1]) == ("198.51.100.10", "198.51.100.11")
    # b's peer is given a's reserved address (a static one from the secrets): refused.
    assert ledger.claim(1, "b", a["pair"][1])["ok"] is False
    # A static address from the pool's range: b's own reserved pair goes back to the pool.
    assert ledger.claim(1, "b", "198.51.100.12") == {"ok": True, "released": True}
    c = ledger.admit(0, "c", "203.0.113.1")
    assert c["pair"][1] == "198.51.100.11"  # .12 is b's now
    assert ledger.admit(0, "d", "203.0.113.1") == {"ok": True, "pair": None}
    assert ledger.claim(0, "a", "198.51.100.12")["ok"] is False
    ledger.unclaim(1, "b")
    assert ledger.admit(0, "e", "203.0.113.1")["pair"][1] == "198.51.100.12"
    assert ledger.claim(0, "a", a["pair"][1]) == {"ok": True}  # its own pair: nothing to do


def test_handle_answers_requests_and_ignores_notices() -> None:
    ledger = _ledger(2)
    assert ledger.handle(0, {"op": "admit", "q": 1, "key": "k", "source": "203.0.113.1"})["ok"]  # type: ignore[index]
    assert ledger.handle(0, {"op": "release", "key": "k"}) is None
    assert ledger.sessions == 0
    assert ledger.handle(0, {"op": "nonsense", "q": 2, "key": "k"}) == {
        "ok": False, "why": "unknown request 'nonsense'"}
    assert ledger.handle(0, {"op": "admit", "q": 3}) == {"ok": False, "why": "no session key"}


def test_ports_on_a_socketpair_burst_of_admissions() -> None:
    async def main() -> None:
        ledger = _ledger(50)
        a, b = socket.socketpair()
        notices: list[dict[str, Any]] = []

        async def on_request(message: dict[str, Any]) -> dict[str, Any]:
            reply = ledger.handle(1, message)
            assert reply is not None
            return reply

        def on_notice(message: dict[str, Any]) -> None:
            notices.append(message)
            ledger.handle(1, message)

        supervisor = Port(on_request, on_notice)
        worker = Port()
        await supervisor.open(a)
        await worker.open(b)
        client = LedgerClient(worker)
        pairs = await asyncio.gather(*(client.admit(f"s{i}", "203.0.113.5") for i in range(50)))
        assert len(set(pairs)) == 50
        assert await client.admit("s50", "203.0.113.5") is None  # the pool is empty
        with pytest.raises(LedgerRefusal) as refused:
            await client.admit("s50", "203.0.113.5")
        assert refused.value.kind == "duplicate"
        client.release("s50")
        client.release("s0")
        assert await client.admit("s51", "203.0.113.5") == pairs[0]
        assert notices == [{"op": "release", "key": "s50"}, {"op": "release", "key": "s0"}]
        await supervisor.close()
        await asyncio.wait_for(worker.closed, 2)
        with pytest.raises(PortClosed):
            await client.admit("s52", "203.0.113.5")
        await worker.close()

    asyncio.run(main())


def test_prefix_pools_of_workers_never_overlap() -> None:
    from pptpkit.vpn.pool import PrefixPool

    pools = [PrefixPool("2001:db8:100::/61", share=(i, 3)) for i in range(3)]
    got = [[p.allocate() for _ in range(4)] for p in pools]
    assert [pool.size for pool in pools] == [3, 3, 2]
    handed = [str(x) for g in got for x in g if x is not None]
    assert len(handed) == 8 and len(set(handed)) == 8  # all eight /64s, each once
    assert got[2][2] is None and got[0][3] is None
    first = got[1][0]
    assert first is not None
    pools[1].release(first)
    pools[0].release(first)  # not its own: ignored
    assert pools[1].allocate() == first and pools[0].allocate() is None


def test_connection_limits_of_the_whole_server() -> None:
    pool = AddressPool(["192.0.2.1"], ["198.51.100.10"])
    ledger = Ledger(pool, LedgerLimits(max_sessions=9, max_per_source=9, max_preauth=9,
                                       max_preauth_per_source=9, max_connections=3,
                                       max_connections_per_source=2))
    assert ledger.connect(0, "a:1", "a") == {"ok": True}
    assert ledger.connect(1, "a:2", "a") == {"ok": True}
    assert ledger.connect(1, "a:2", "a") == {"ok": True}  # asked twice: still one
    assert ledger.connect(0, "a:3", "a")["ok"] is False  # 2 from that address, on any worker
    assert ledger.connect(0, "b:1", "b") == {"ok": True}
    assert ledger.connect(1, "c:1", "c")["ok"] is False  # 3 in all
    ledger.handle(1, {"op": "disconnect", "key": "a:2"})
    assert ledger.handle(0, {"op": "connect", "q": 1, "key": "a:3", "source": "a"}) == {"ok": True}
    ledger.forget_worker(0)
    assert ledger.connections == 0


def test_paired_local_addresses_refuse_a_call_when_the_pool_is_empty() -> None:
    ledger = Ledger(AddressPool(["192.0.2.1", "192.0.2.2"], ["198.51.100.10", "198.51.100.11"]),
                    LedgerLimits(max_sessions=9, max_per_source=9, max_preauth=9, max_preauth_per_source=9))
    assert ledger.admit(0, "a", "s")["pair"] == ["192.0.2.1", "198.51.100.10"]
    assert ledger.admit(1, "b", "s")["pair"] == ["192.0.2.2", "198.51.100.11"]
    assert ledger.admit(0, "c", "s")["kind"] == "pool"
