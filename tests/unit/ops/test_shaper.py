"""The shaping extension with its notices and a recording runner: where a rate comes from,
the tc/ip batches per session (IFB created, changed, deleted), failures that leave the
session alone, the shared TUN's buckets, and stale IFBs deleted at start."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from pptpkit.auth.secrets import RateLimit, StaticSecrets
from pptpkit.io.ratelimit import TokenBucket
from pptpkit.ops.shaper import Shaper
from pptpkit.vpn.notices import SessionDown, SessionUp, TerminateCause

LO_IFB = f"pkifb{socket.if_nametoindex('lo')}"


@dataclass
class FakeLink:
    interface: str | None = "lo"
    finished: bool = False
    policers: tuple[TokenBucket | None, TokenBucket | None] = (None, None)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def set_policers(self, down: TokenBucket | None, up: TokenBucket | None) -> None:
        self.policers = (down, up)


@dataclass
class FakeSession:
    id: str
    user: str
    link: FakeLink = field(default_factory=FakeLink)
    up: object | None = "up"
    access: object | None = None


@dataclass
class FakeConfig:
    secrets: StaticSecrets
    name: str = "pptpd"


@dataclass
class FakeSessions:
    config: FakeConfig
    observers: list[Any] = field(default_factory=list)
    rate_setter: Any = None

    def notify(self, notice: object) -> None:
        for observer in self.observers:
            observer(notice)


SECRETS = StaticSecrets.from_text("alice pptpd pw * rate=4M/2M\nbob pptpd pw *\n")


class Recorder:
    def __init__(self, fail: str | None = None) -> None:
        self.batches: list[tuple[str, str]] = []
        self.fail = fail

    async def __call__(self, argv: list[str], stdin: str | None) -> str | None:
        assert argv[1:] == ["-batch", "-"] and stdin is not None
        self.batches.append((argv[0], stdin))
        if self.fail is not None and self.fail in stdin:
            return "tc -batch exited with status 1: Error: something"
        return None


async def no_ifbs(argv: list[str]) -> tuple[str | None, str]:
    return None, ""


def up(session: FakeSession) -> SessionUp:
    return SessionUp(session, session.up)  # type: ignore[arg-type]


def down(session: FakeSession) -> SessionDown:
    return SessionDown(session, TerminateCause.USER_REQUEST, "bye", 1.0, 0, 0, 0, 0)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


def test_where_the_rate_comes_from() -> None:
    async def main() -> None:
        sessions = FakeSessions(FakeConfig(SECRETS))
        shaper = Shaper(RateLimit(1000, 1000), shared=True)
        await shaper.start(sessions, None)  # type: ignore[arg-type]
        alice, bob, carol = FakeSession("A", "alice"), FakeSession("B", "bob"), FakeSession("C", "carol")
        assert shaper.rate_for(alice) == RateLimit(4000, 2000)  # the secrets entry over the default
        assert shaper.rate_for(bob) == RateLimit(1000, 1000)  # an entry without rate=: the default
        assert shaper.rate_for(carol) == RateLimit(1000, 1000)
        alice.up = None
        assert await shaper.set_rate(alice, 8000, 0)  # RADIUS over everything, kept for later
        assert shaper.rate_for(alice) == RateLimit(8000, 0)
        sessions.notify(down(alice))
        assert shaper.rate_for(alice) == RateLimit(4000, 2000)
        assert Shaper(None, shared=True).rate_for(bob) is None
        with pytest.raises(ValueError):
            await shaper.set_rate(bob, -1, 0)
        await shaper.stop()
        assert sessions.observers == []

    run(main())


def test_per_session_tun_batches(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO, "pptpkit.ops.shaper")
        sessions = FakeSessions(FakeConfig(SECRETS))
        runner = Recorder()
        shaper = Shaper(None, shared=False, runner=runner, lister=no_ifbs)
        await shaper.start(sessions, None)  # type: ignore[arg-type]
        alice = FakeSession("A", "alice")
        sessions.notify(up(alice))
        await settle()
        assert runner.batches == [
            ("ip", f"link add name {LO_IFB} type ifb\nlink set dev {LO_IFB} up alias pptpkit-shaper:"
                   f"{os.getpid()}\n"),
            ("tc", "qdisc replace dev lo root handle 1: htb default 1\n"
                   "class replace dev lo parent 1: classid 1:1 htb rate 4000kbit ceil 4000kbit burst 10000 "
                   "cburst 10000\n"
                   "qdisc replace dev lo handle ffff: ingress\n"
                   "filter add dev lo parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred "
                   f"egress redirect dev {LO_IFB}\n"
                   f"qdisc replace dev {LO_IFB} root handle 1: htb default 1\n"
                   f"class replace dev {LO_IFB} parent 1: classid 1:1 htb rate 2000kbit ceil 2000kbit "
                   "burst 5000 cburst 5000\n"),
        ]
        assert "[A] shaper: 4000/2000 kbit/s on lo (upload through" in caplog.text
        runner.batches.clear()
        # A CoA: the download changes, the upload goes unlimited (its redirect and IFB go).
        assert await shaper.set_rate(alice, 1000, 0)
        assert runner.batches == [
            ("tc", "qdisc del dev lo ingress\n"
                   "qdisc replace dev lo root handle 1: htb default 1\n"
                   "class replace dev lo parent 1: classid 1:1 htb rate 1000kbit ceil 1000kbit burst 3000 "
                   "cburst 3000\n"),
            ("ip", f"link del dev {LO_IFB}\n"),
        ]
        runner.batches.clear()
        # Upload limited again: a new IFB; then the session ends and the IFB with it.
        assert await shaper.set_rate(alice, 1000, 500)
        assert [program for program, _ in runner.batches] == ["ip", "tc"]
        assert "redirect dev" in runner.batches[1][1] and "root" in runner.batches[1][1]
        runner.batches.clear()
        sessions.notify(down(alice))
        await settle()
        assert runner.batches == [("ip", f"link del dev {LO_IFB}\n")]
        # A session without any rate is not touched.
        runner.batches.clear()
        sessions.notify(up(FakeSession("B", "bob")))
        await settle()
        assert runner.batches == []
        await shaper.stop()

    run(main())


def test_a_tc_failure_is_logged_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sessions = FakeSessions(FakeConfig(SECRETS))
        runner = Recorder(fail="qdisc replace dev lo root")
        shaper = Shaper(RateLimit(500, 0), shared=False, runner=runner, lister=no_ifbs)
        await shaper.start(sessions, None)  # type: ignore[arg-type]
        bob = FakeSession("B", "bob")
        sessions.notify(up(bob))
        await settle()
        assert shaper.failures == 1 and not bob.link.finished
        assert ("[B] shaper: tc on lo failed, the session goes on: tc -batch exited with status 1"
                in caplog.text)
        assert not await shaper.set_rate(bob, 600, 0)
        assert shaper.failures == 2
        await shaper.stop()

    run(main())


def test_an_ifb_left_until_stop_is_deleted() -> None:
    async def main() -> None:
        sessions = FakeSessions(FakeConfig(SECRETS))
        runner = Recorder()
        shaper = Shaper(None, shared=False, runner=runner, lister=no_ifbs)
        await shaper.start(sessions, None)  # type: ignore[arg-type]
        sessions.notify(up(FakeSession("A", "alice")))
        await shaper.stop()
        assert runner.batches[-1] == ("ip", f"link del dev {LO_IFB}\n")

    run(main())


def test_stale_ifbs_are_deleted_at_start() -> None:
    async def main() -> None:
        async def listing(argv: list[str]) -> tuple[str | None, str]:
            assert argv == ["ip", "-o", "-d", "link", "show", "type", "ifb"]
            return None, ("7: pkifb7: <BROADCAST,NOARP> mtu 1500 \\    ifb \\    alias pptpkit-shaper:1\n"
                          "8: pkifb8: <BROADCAST,NOARP> mtu 1500 \\    ifb \\    alias pptpkit-shaper:"
                          "1073741823\n")

        runner = Recorder()
        shaper = Shaper(None, shared=False, runner=runner, lister=listing)
        await shaper.start(FakeSessions(FakeConfig(SECRETS)), None)  # type: ignore[arg-type]
        # pid 1 lives; no process has that other pid.
        assert runner.batches == [("ip", "link del dev pkifb8\n")]
        await shaper.stop()

    run(main())


def test_shared_tun_buckets(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        caplog.set_level(logging.INFO, "pptpkit.ops.shaper")
        sessions = FakeSessions(FakeConfig(SECRETS))
        runner = Recorder()
        shaper = Shaper(RateLimit(0, 256), shared=True, runner=runner)
        await shaper.start(sessions, None)  # type: ignore[arg-type]
        alice, bob = FakeSession("A", "alice"), FakeSession("B", "bob")
        sessions.notify(up(alice))
        sessions.notify(up(bob))
        down_a, up_a = alice.link.policers
        assert down_a is not None and up_a is not None
        assert (down_a.rate, up_a.rate) == (4000 * 125, 2000 * 125)
        # bob: only the upload limited, the download has no bucket at all.
        assert bob.link.policers[0] is None and bob.link.policers[1] is not None
        assert await shaper.set_rate(alice, 0, 64)
        assert alice.link.policers[0] is None and alice.link.policers[1] is not None
        bucket = alice.link.policers[1]
        assert bucket is not None
        while bucket.allow(1500, 0.0):
            pass
        sessions.notify(down(alice))
        assert "[A] shaper dropped up 1 packets (1500 octets)" in caplog.text
        assert runner.batches == []  # no tc in shared mode
        await shaper.stop()

    run(main())


def test_a_radius_filter_id_rate_wins_over_the_secrets_file() -> None:
    from pptpkit.ops.shaper import radius_rate
    from pptpkit.radius.access import AccessResult

    assert radius_rate(("acl-3", "8M/1M")) == RateLimit(8000, 1000)
    assert radius_rate(("acl-3",)) is None
    shaper = Shaper(None, shared=True)
    sessions = FakeSessions(FakeConfig(SECRETS))
    shaper._sessions = sessions  # type: ignore[assignment]
    alice = FakeSession("1", "alice", access=AccessResult(accepted=True, filter_ids=("8M/1M",)))
    assert shaper.rate_for(alice) == RateLimit(8000, 1000)  # type: ignore[arg-type]
    assert shaper.rate_for(FakeSession("2", "alice")) == RateLimit(4000, 2000)  # type: ignore[arg-type]
