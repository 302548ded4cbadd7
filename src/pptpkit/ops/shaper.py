"""Per-user rate limits of the built-in server (``--shaper``, accel-ppp's shaper).

Where a session's rate comes from, the first that has one: :meth:`Shaper.set_rate` (what RADIUS
or a CoA will call), the user's ``rate=DOWN/UP`` word in the secrets file
(:class:`~pptpkit.auth.secrets.RateLimit`), the server's default ``--shaper``.  A session with
none of them is not touched at all.

How it is applied depends on the TUN mode:

* per-session TUNs: ``tc`` on the session's interface when it comes up (:mod:`pptpkit.io.tc`:
  HTB on the egress for the download, an IFB with HTB for the upload).  ``tc`` runs as a
  subprocess on the loop; a failure is logged with the session ID and the session goes on
  unshaped, as pppd goes on when an ip-up script fails.  The qdiscs go with the interface; the
  IFB is deleted when the session ends, and IFBs a crashed server left are deleted at start.
* the shared TUN: one interface for every session, so tc cannot tell them apart; a token bucket
  per direction (:class:`~pptpkit.io.ratelimit.TokenBucket`) polices the session's packets in
  its own link (:meth:`~pptpkit.io.link.PppLink.set_policers`).  A session without a rate
  has no bucket and pays one ``None`` test per packet.

Changes to one session's shaping run one after the other (a rate set while the first ``tc`` is
still running, the end of the session), so an IFB is never created after its session's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pptpkit.auth.secrets import RateLimit, parse_rate
from pptpkit.io import tc
from pptpkit.io.ratelimit import TokenBucket
from pptpkit.vpn.notices import SessionDown, SessionNotice, SessionUp

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = ["Lister", "Runner", "Shaper"]

log = logging.getLogger(__name__)

#: Runs one batch: (argv, stdin) -> None, or what went wrong (:func:`pptpkit.io.tc.run`).
Runner = Callable[[list[str], str | None], Awaitable[str | None]]
#: Runs a command for its output: argv -> (error or None, stdout) (:func:`pptpkit.io.tc.output`).
Lister = Callable[[list[str]], Awaitable[tuple[str | None, str]]]


async def _run(argv: list[str], stdin: str | None) -> str | None:
    return await tc.run(argv, stdin)


async def _list(argv: list[str]) -> tuple[str | None, str]:
    return await tc.output(argv)


@dataclass(slots=True)
class _Shaped:
    """What is applied to one session (per-session TUN mode)."""

    interface: str
    rate: RateLimit | None = None
    ifb: str | None = None


class Shaper:
    """The shaping :class:`~pptpkit.ops.ServerExtension` (see the module docstring).

    ``default``: ``--shaper`` (None: only users with a rate of their own are shaped);
    ``shared``: the server runs ``--tun-mode shared``.  ``runner`` runs the ``tc``/``ip``
    batches and ``lister`` lists the IFBs (tests pass their own).
    """

    def __init__(self, default: RateLimit | None, *, shared: bool, runner: Runner = _run,
                 lister: Lister = _list) -> None:
        self.default = default
        self.shared = shared
        self._run = runner
        self._list = lister
        self._sessions: BuiltinSessions | None = None
        self._overrides: dict[str, RateLimit] = {}
        self._shaped: dict[str, _Shaped] = {}
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._pid = os.getpid()
        #: tc/ip batches that failed (each is logged).
        self.failures = 0

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        self._sessions = sessions
        sessions.observers.append(self._on_notice)
        sessions.rate_setter = self.set_rate  # RADIUS CoA changes rates through it
        if not self.shared:
            await self._delete_stale_ifbs()

    async def stop(self) -> None:
        if self._sessions is not None and self._on_notice in self._sessions.observers:
            self._sessions.observers.remove(self._on_notice)
        chains = list(self._chains.values())
        if chains:
            await asyncio.gather(*chains, return_exceptions=True)
        # Every session has ended by now; anything still here lost its SessionDown.
        for session_id, shaped in list(self._shaped.items()):
            await self._release(session_id, shaped)
        self._shaped.clear()

    # -- where a rate comes from ----------------------------------------------------------------

    def rate_for(self, session: Session) -> RateLimit | None:
        """The rate ``session`` gets: set by :meth:`set_rate` (a CoA), else its Access-Accept's
        (``Filter-Id``, :func:`radius_rate`), else its secrets entry's, else the default."""
        override = self._overrides.get(session.id)
        if override is not None:
            return override
        radius = radius_rate(session.access.filter_ids) if session.access is not None else None
        if radius is not None:
            return radius
        if self._sessions is not None and session.user:
            config = self._sessions.config
            with contextlib.suppress(Exception):
                match = config.secrets.lookup(session.user, config.name)
                if match is not None and match.rate is not None:
                    return match.rate
        return self.default

    async def set_rate(self, session: Session, down_kbit: int, up_kbit: int) -> bool:
        """Give ``session`` this rate (kbit/s; 0 leaves a direction unlimited) from now on,
        over the secrets file and the default - what RADIUS and CoA call.  Applied at once if
        the session is up; returns whether it was applied (False: tc failed, logged)."""
        if down_kbit < 0 or up_kbit < 0:
            raise ValueError("a rate cannot be negative")
        rate = RateLimit(down_kbit, up_kbit)
        self._overrides[session.id] = rate
        if session.up is None or session.link.finished:
            return True
        if self.shared:
            self._police(session, rate)
            return True
        failures = self.failures
        await self._chain(session.id, self._apply(session, rate))
        return self.failures == failures

    # -- notices ------------------------------------------------------------------------------

    def _on_notice(self, notice: SessionNotice) -> None:
        session = notice.session
        if isinstance(notice, SessionUp):
            rate = self.rate_for(session)
            if rate is None:
                return
            if self.shared:
                self._police(session, rate)
            else:
                self._schedule(session.id, self._apply(session, rate))
        elif isinstance(notice, SessionDown):
            self._overrides.pop(session.id, None)
            if self.shared:
                self._report_drops(session)
            elif session.id in self._shaped or session.id in self._chains:
                self._schedule(session.id, self._end(session.id))

    # -- shared TUN ----------------------------------------------------------------------------

    def _police(self, session: Session, rate: RateLimit) -> None:
        now = session.link.loop.time()
        down = TokenBucket.kbit(rate.down, now) if rate.down else None
        up = TokenBucket.kbit(rate.up, now) if rate.up else None
        session.link.set_policers(down, up)
        log.info("[%s] shaper: %s (policed on the shared interface)", session.id, rate)

    @staticmethod
    def _report_drops(session: Session) -> None:
        down, up = session.link.policers
        dropped = [f"{what} {bucket.dropped} packets ({bucket.dropped_octets} octets)"
                   for what, bucket in (("down", down), ("up", up)) if bucket is not None and bucket.dropped]
        if dropped:
            log.info("[%s] shaper dropped %s", session.id, ", ".join(dropped))

    # -- per-session TUN -----------------------------------------------------------------------

    def _schedule(self, session_id: str, coro: Awaitable[None]) -> None:
        self._chain(session_id, coro)

    def _chain(self, session_id: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        previous = self._chains.get(session_id)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._chains[session_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._chains.get(session_id) is finished:
                del self._chains[session_id]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("[%s] shaper task failed", session_id, exc_info=finished.exception())

        task.add_done_callback(done)
        return task

    async def _batch(self, session_id: str, program: str, commands: list[tc.Command], what: str) -> bool:
        if not commands:
            return True
        error = await self._run([program, "-batch", "-"], tc.batch_text(commands))
        if error is None:
            return True
        self.failures += 1
        log.warning("[%s] shaper: %s failed, the session goes on: %s", session_id, what, error)
        return False

    async def _apply(self, session: Session, rate: RateLimit) -> None:
        if session.link.finished:
            return
        interface = session.link.interface
        if interface is None:
            return
        shaped = self._shaped.get(session.id)
        if shaped is None:
            shaped = self._shaped[session.id] = _Shaped(interface)
        old = shaped.rate
        commands: list[tc.Command] = []
        # A direction that goes unlimited loses its qdisc; the IFB goes after the redirect.
        commands += tc.unshape_commands(interface, down=bool(old and old.down and not rate.down),
                                        up=bool(old and old.up and not rate.up))
        if rate.down:
            commands += tc.htb_commands(interface, rate.down, tc.htb_burst(rate.down))
        if rate.up:
            if shaped.ifb is None:
                try:
                    ifb = tc.ifb_name(socket.if_nametoindex(interface))
                except (OSError, ValueError) as exc:
                    self.failures += 1
                    log.warning("[%s] shaper: no upload shaping, interface %s: %s", session.id,
                                interface, exc)
                else:
                    if await self._batch(session.id, "ip", tc.ifb_add_commands(ifb, self._pid),
                                         f"creating {ifb}"):
                        shaped.ifb = ifb
                        commands += tc.redirect_commands(interface, ifb)
            if shaped.ifb is not None:
                commands += tc.htb_commands(shaped.ifb, rate.up, tc.htb_burst(rate.up))
        ok = await self._batch(session.id, "tc", commands, f"tc on {interface}")
        if not rate.up and shaped.ifb is not None:
            await self._delete_ifb(session.id, shaped)
        if ok:
            shaped.rate = rate
            log.info("[%s] shaper: %s on %s%s", session.id, rate, interface,
                     f" (upload through {shaped.ifb})" if shaped.ifb and rate.up else "")

    async def _delete_ifb(self, session_id: str, shaped: _Shaped) -> None:
        ifb, shaped.ifb = shaped.ifb, None
        if ifb is not None:
            await self._batch(session_id, "ip", tc.ifb_del_commands(ifb), f"deleting {ifb}")

    async def _end(self, session_id: str) -> None:
        shaped = self._shaped.pop(session_id, None)
        if shaped is not None:
            await self._release(session_id, shaped)

    async def _release(self, session_id: str, shaped: _Shaped) -> None:
        # The qdiscs went with the interface; only the IFB outlives it.
        await self._delete_ifb(session_id, shaped)

    async def _delete_stale_ifbs(self) -> None:
        error, listing = await self._list(["ip", "-o", "-d", "link", "show", "type", "ifb"])
        if error is not None:
            log.debug("shaper: cannot list IFB devices: %s", error)
            return
        for ifb in tc.stale_ifbs(listing, tc.pid_alive):
            log.info("shaper: deleting %s, left by a server that is gone", ifb)
            await self._batch("-", "ip", tc.ifb_del_commands(ifb), f"deleting {ifb}")


def radius_rate(filter_ids: tuple[str, ...]) -> RateLimit | None:
    """The rate a RADIUS answer gives, accel-ppp's convention: a ``Filter-Id`` of the form
    ``DOWN[/UP]`` (kbit/s, or with k/M/G).  Filter-Ids of other forms are no rate (the caller
    reports them as unused); the first rate wins."""
    for value in filter_ids:
        try:
            return parse_rate(value)
        except ValueError:
            continue
    return None
