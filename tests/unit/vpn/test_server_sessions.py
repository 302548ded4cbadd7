"""BuiltinSessions on a real loop with in-memory calls: notices, session IDs, kill, limits."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from typing import Any

from pptpkit.auth.secrets import StaticSecrets
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.vpn.notices import (
    SessionAuthenticated,
    SessionAuthFailed,
    SessionDown,
    SessionNotice,
    SessionStarted,
    SessionUp,
    TerminateCause,
)
from pptpkit.vpn.pool import AddressPool
from pptpkit.vpn.server import BuiltinConfig, BuiltinSessions
from sessionlab import FakeCall, MemoryPlane, dial, run, until


def sessions(**kw: Any) -> tuple[BuiltinSessions, list[SessionNotice]]:
    cfg = BuiltinConfig(pool=AddressPool(["198.51.100.1"], ["198.51.100.10", "198.51.100.11"]),
                        secrets=StaticSecrets({("alice", "pptpd"): "pw"}), mppe=MppePolicy.nomppe(),
                        **kw)
    table = BuiltinSessions(cfg, MemoryPlane())
    notices: list[SessionNotice] = []
    table.observers.append(notices.append)
    return table, notices


def test_notices_in_order_ids_and_kill_is_admin_reset() -> None:
    async def main() -> None:
        table, notices = sessions()
        _, client = await dial(table, 1)
        await client.wait_up()
        await until(lambda: any(isinstance(n, SessionUp) for n in notices))
        session = notices[0].session
        assert [type(n) for n in notices] == [SessionStarted, SessionAuthenticated, SessionUp]
        assert len(session.id) == 16 and table.find(session.id) is session and table.all() == [session]
        assert session.user == "alice" and session.address == IPv4Address("198.51.100.10")
        assert table.established == 1 and table.preauth == 0
        table.kill(session)
        await until(lambda: any(isinstance(n, SessionDown) for n in notices))
        down = notices[-1]
        assert isinstance(down, SessionDown) and down.cause is TerminateCause.ADMIN_RESET
        assert down.cause.text == "Admin-Reset"
        await asyncio.wait_for(asyncio.shield(client.closed), 5)
        await until(lambda: table.sessions == 0)
        assert table.find(session.id) is None and table.established == 0

    run(main())


def test_a_failed_login_names_the_user_tried_and_is_a_user_error() -> None:
    async def main() -> None:
        table, notices = sessions()
        _, client = await dial(table, 2, password="wrong")
        await asyncio.wait_for(asyncio.shield(client.closed), 10)
        await until(lambda: any(isinstance(n, SessionDown) for n in notices))
        failed = [n for n in notices if isinstance(n, SessionAuthFailed)]
        assert failed and failed[0].user == "alice"
        down = notices[-1]
        assert isinstance(down, SessionDown) and down.cause is TerminateCause.USER_ERROR
        assert down.duration == 0.0
        await until(lambda: table.sessions == 0 and table.preauth == 0)

    run(main())


def test_ids_are_unique_and_admission_hooks_refuse() -> None:
    async def main() -> None:
        table, _ = sessions()
        table.admission.append(lambda call: "blocked for a while" if call.call_id == 9 else None)
        _, ca = await dial(table, 3)
        _, cb = await dial(table, 4)
        await ca.wait_up()
        await cb.wait_up()
        ids = {s.id for s in table.all()}
        assert len(ids) == 2
        from pptpkit.pptp.server import RejectCall

        try:
            await table(FakeCall(9, "192.0.2.9"))  # type: ignore[arg-type]
        except RejectCall as exc:
            assert "blocked for a while" in str(exc) and exc.result == 4
        else:
            raise AssertionError("the admission hook did not refuse")
        assert table.refused_by_admission == 1
        await table.close_all()
        assert all(s.cause is TerminateCause.NAS_REBOOT for s in table.all())

    run(main())


def test_an_observer_that_raises_does_not_break_the_session() -> None:
    async def main() -> None:
        table, notices = sessions()

        def broken(notice: SessionNotice) -> None:
            raise RuntimeError("observer bug")

        table.observers.insert(0, broken)
        _, client = await dial(table, 5)
        await client.wait_up()
        await until(lambda: any(isinstance(n, SessionUp) for n in notices))
        await client.aclose("bye")

    run(main())
