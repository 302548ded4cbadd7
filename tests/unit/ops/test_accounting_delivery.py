"""RadiusAccounting's delivery, against a fake AAA (no sockets): which records go out for which
notices, in what order, what an outage queues and how much, what comes back afterwards, and the
log lines an operator gets."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from pptpkit.ops import accounting
from pptpkit.ops.accounting import RadiusAccounting
from pptpkit.radius.access import AccessResult, NasInfo
from pptpkit.radius.client import (
    AccountingResponded,
    AttributeSpec,
    RadiusBusyError,
    RadiusClientConfig,
    RadiusServer,
    RequestTimedOut,
)
from pptpkit.radius.settings import RadiusSetup
from pptpkit.vpn.notices import SessionDown, SessionUp, TerminateCause

NAS = NasInfo(nas_identifier="gw1", nas_ip_address=None)
ACCT = RadiusClientConfig(servers=(RadiusServer(address="192.0.2.10", port=1813, secret=b"s"),),
                          timeout=0.01, retries=0)


class FakeAaa:
    """Answers every Accounting-Request sent while ``up``; ``gate`` (when set) holds each answer."""

    def __init__(self) -> None:
        self.up = True
        self.busy = False
        self.gate: asyncio.Event | None = None
        self.got: list[dict[str, Any]] = []
        self.closed = False

    async def accounting_request(self, attributes: Sequence[AttributeSpec]
                                 ) -> AccountingResponded | RequestTimedOut:
        if self.busy:
            raise RadiusBusyError("full")
        answered = self.up  # decided when the request is sent, as its Acct-Delay-Time is
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if not answered:
            return RequestTimedOut(request_id=1, servers=("192.0.2.10:1813",))
        self.got.append({name: value for name, value in attributes})  # type: ignore[misc]
        return AccountingResponded(request_id=1, server="192.0.2.10:1813", code=5, attributes=(), rtt=0.0)

    def close(self) -> None:
        self.closed = True


def fake_session(n: int, loop: asyncio.AbstractEventLoop, access: AccessResult | None = None) -> Any:
    stats = SimpleNamespace(octets_in=1000 * n, octets_out=2000 * n, packets_in=n, packets_out=2 * n)
    link = SimpleNamespace(finished=False, loop=loop, stats=stats, up_at=loop.time() - 61)
    return SimpleNamespace(id=f"5F0000000000000{n}", user=f"user{n}", source="203.0.113.9",
                           call=SimpleNamespace(call_id=100 + n, local_address="192.0.2.2"), access=access,
                           address=ipaddress.IPv4Address(f"198.51.100.{n}"), up=None, link=link)


def up(session: Any) -> SessionUp:
    return SessionUp(session, session.up)


def down(session: Any, cause: TerminateCause = TerminateCause.USER_REQUEST) -> SessionDown:
    return SessionDown(session, cause, "test", 12.7, 5, 6, 7, 8)


async def started(aaa: FakeAaa, interim: float = 0.0) -> tuple[RadiusAccounting, Any]:
    acct = RadiusAccounting(RadiusSetup(nas=NAS, acct=ACCT, interim=interim))

    async def open_fake(config: RadiusClientConfig) -> FakeAaa:
        return aaa

    acct._open = open_fake  # type: ignore[assignment]
    table = SimpleNamespace(id_prefix="5F000000", observers=[])
    await acct.start(table, None)  # type: ignore[arg-type]
    return acct, table


async def settle(until: Any, limit: float = 2.0) -> None:
    end = asyncio.get_running_loop().time() + limit
    while not until():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.005)


def statuses(aaa: FakeAaa) -> list[tuple[str, str]]:
    return [(r["Acct-Status-Type"], r["Acct-Session-Id"]) for r in aaa.got]


def test_one_start_and_one_stop_per_session_between_on_and_off() -> None:
    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)
        loop = asyncio.get_running_loop()
        a, never = fake_session(1, loop), fake_session(2, loop)
        [observe] = table.observers
        observe(up(a))
        observe(up(a))  # IPCP again: the same session goes on
        observe(down(never))  # it never came up: no Start, so no Stop
        observe(down(a, TerminateCause.ADMIN_RESET))
        await settle(lambda: len(aaa.got) == 3)
        await acct.stop()
        assert statuses(aaa) == [("Accounting-On", "5F00000000000000"), ("Start", a.id), ("Stop", a.id),
                                 ("Accounting-Off", "5F00000000000000")]
        stop = aaa.got[2]
        assert (stop["Acct-Terminate-Cause"], stop["Acct-Session-Time"], stop["Acct-Input-Octets"],
                stop["Acct-Output-Octets"], stop["NAS-Port"]) == (6, 12, 5, 6, 101)
        assert aaa.closed and table.observers == []
        assert acct.stats["answered"] == 4 and acct.stats["queued"] == 0

    asyncio.run(main())


def test_an_outage_queues_in_order_and_late_records_say_how_late(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(accounting, "RETRY_INTERVAL", 0.02)
    late = [0.0]  # added to the clock the records are sent by (not to the one they were made by)
    monkeypatch.setattr(accounting, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + late[0]))

    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)
        await settle(lambda: len(aaa.got) == 1)
        aaa.up = False
        loop = asyncio.get_running_loop()
        sessions = [fake_session(n, loop) for n in (1, 2, 3)]
        [observe] = table.observers
        for s in sessions:
            observe(up(s))
        for s in sessions:
            observe(down(s))
        await settle(lambda: acct.queued == 6)
        late[0] = 42.2  # the AAA comes back 42 s later
        aaa.up = True
        await settle(lambda: acct.queued == 0 and len(aaa.got) == 7)
        assert statuses(aaa)[1:] == [(kind, s.id) for kind in ("Start", "Stop") for s in sessions]
        assert {r["Acct-Delay-Time"] for r in aaa.got[1:]} == {42}
        assert "Acct-Delay-Time" not in aaa.got[0]  # sent in time
        await acct.stop()

    with caplog.at_level(logging.WARNING, logger="pptpkit.ops.accounting"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert sum("no answer from 192.0.2.10:1813; records are queued" in m for m in lines) == 1, lines
    assert sum("a server answers again" in m for m in lines) == 1, lines


def test_a_full_queue_drops_the_oldest_and_counts_them(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(accounting, "RETRY_INTERVAL", 0.02)
    monkeypatch.setattr(accounting, "MAX_QUEUED", 3)

    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)
        await settle(lambda: len(aaa.got) == 1)
        aaa.up = False
        loop = asyncio.get_running_loop()
        sessions = [fake_session(n, loop) for n in range(1, 6)]
        for s in sessions:
            table.observers[0](up(s))
        await settle(lambda: acct.stats["queued"] == 5)
        assert acct.queued == 3 and acct.stats["dropped"] == 2
        aaa.up = True
        await settle(lambda: acct.queued == 0)
        assert statuses(aaa)[1:] == [("Start", s.id) for s in sessions[2:]]
        await acct.stop()

    with caplog.at_level(logging.WARNING, logger="pptpkit.ops.accounting"):
        asyncio.run(main())
    assert any("queue full, 1 oldest records dropped" in r.getMessage() for r in caplog.records)


def test_the_record_being_retried_is_not_lost_when_the_queue_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry sends the head; meanwhile a new record arrives at a full-minus-one queue.  The
    head must be delivered once and every other record kept (nothing silently lost)."""
    monkeypatch.setattr(accounting, "RETRY_INTERVAL", 0.02)
    monkeypatch.setattr(accounting, "MAX_QUEUED", 3)

    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)
        await settle(lambda: len(aaa.got) == 1)
        aaa.up = False
        loop = asyncio.get_running_loop()
        sessions = [fake_session(n, loop) for n in range(1, 5)]
        for s in sessions[:3]:
            table.observers[0](up(s))
        await settle(lambda: acct.queued == 3)
        aaa.gate = asyncio.Event()
        aaa.up = True
        await settle(lambda: acct.queued == 2)  # the retry took the head and waits for its answer
        table.observers[0](up(sessions[3]))
        assert acct.queued == 3 and acct.stats["dropped"] == 0
        aaa.gate.set()
        await settle(lambda: acct.queued == 0 and len(aaa.got) == 5)
        assert statuses(aaa)[1:] == [("Start", s.id) for s in sessions]
        await acct.stop()

    asyncio.run(main())


def test_the_clean_stop_delivers_what_waited_for_the_next_retry(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)  # RETRY_INTERVAL stays 10 s: no retry before the stop
        await settle(lambda: len(aaa.got) == 1)
        aaa.busy = True  # the engine's own queue is full: that fails a record too
        session = fake_session(1, asyncio.get_running_loop())
        table.observers[0](up(session))
        table.observers[0](down(session))
        await settle(lambda: acct.queued == 2)
        aaa.busy = False
        await acct.stop()
        assert statuses(aaa)[1:] == [("Start", session.id), ("Stop", session.id),
                                     ("Accounting-Off", "5F00000000000000")]
        assert acct.stats["busy"] == 2

    with caplog.at_level(logging.WARNING, logger="pptpkit.ops.accounting"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert any("too many requests waiting for an answer; records are queued" in m for m in lines), lines
    assert any("a server answers again" in m for m in lines) and not any("not delivered" in m for m in lines)


def test_an_aaa_that_stays_down_at_stop_costs_one_attempt_and_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa)
        await settle(lambda: len(aaa.got) == 1)
        aaa.up = False
        session = fake_session(1, asyncio.get_running_loop())
        table.observers[0](up(session))
        await settle(lambda: acct.queued == 1)
        await asyncio.wait_for(acct.stop(), 5)
        assert acct.queued == 2  # the Start and the Off, in order
        assert aaa.closed

    with caplog.at_level(logging.WARNING, logger="pptpkit.ops.accounting"):
        asyncio.run(main())
    assert any("2 records not delivered at shutdown" in r.getMessage() for r in caplog.records)


def test_interim_updates_carry_the_live_counters_and_the_floor_holds(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        aaa = FakeAaa()
        acct, table = await started(aaa, interim=300)
        loop = asyncio.get_running_loop()
        fast = fake_session(1, loop, AccessResult(accepted=True, acct_interim_interval=5))
        slow = fake_session(2, loop, AccessResult(accepted=True, acct_interim_interval=120))
        plain = fake_session(3, loop)
        assert [acct._interval(s) for s in (fast, slow, plain)] == [60.0, 120.0, 300.0]
        table.observers[0](up(plain))
        acct._interim(plain)  # what the timer does
        await settle(lambda: len(aaa.got) == 3)
        interim = aaa.got[2]
        assert interim["Acct-Status-Type"] == "Interim-Update"
        assert (interim["Acct-Input-Octets"], interim["Acct-Output-Octets"], interim["Acct-Input-Packets"],
                interim["Acct-Output-Packets"]) == (3000, 6000, 3, 6)
        assert interim["Acct-Session-Time"] in (61, 62) and "Acct-Terminate-Cause" not in interim
        table.observers[0](down(plain))
        await acct.stop()

    with caplog.at_level(logging.WARNING, logger="pptpkit.ops.accounting"):
        asyncio.run(main())
    assert sum("raised to 60 s" in r.getMessage() for r in caplog.records) == 1
