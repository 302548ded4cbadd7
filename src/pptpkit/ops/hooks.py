"""pppd's hook scripts for every built-in session: ``ip-up``/``ip-down``, ``ipv6-up``/``ipv6-down``.

:class:`HookScripts` listens to the session table's notices and runs the scripts through a
:class:`~pptpkit.vpn.hooks.HookRunner` with what pppd under pptpd would pass
(:mod:`pptpkit.vpn.hooks` builds the arguments and environment):

* ``interface-name``: the session's TUN interface (in shared-TUN mode, the one shared
  interface: scripts tell sessions apart by the addresses or ``LINKNAME``).
* ``tty-device``: "" (and ``DEVICE=""``).  pptpd's pppd gets a pty that is only a pipe to
  pptpctrl; the built-in server has no tty and no device below the link at all.  An empty
  argument keeps the later ones at the positions scripts read them from ($4, $5, $6), and a
  made-up name would send a script that acts on the tty (stty, lock files) at something else.
* ``speed``: ``speed`` from pptpd.conf or ``--speed`` (pptpd passes it to pppd; 115200).
* ``ipparam``: the client's address, as pptpd passes it; left out with ``noipparam``.
* ``PEERNAME``: the authenticated user; ``LINKNAME``: the session ID (what ``pptpkit ctl``
  and the logs show - the built-in server names its links by it, see pptpd.conf's linkname).
* At ``ip-down``: ``CONNECT_TIME`` since the call's PPP negotiation started; ``BYTES_SENT``
  and ``BYTES_RCVD`` are the IP octets sent to and received from the client (pppd counts the
  serial line's octets, framing included; there is no serial line here).

When they run: ``ip-up`` when IPCP is up and the interface configured (:class:`SessionUp`);
``ip-down`` when the session ends (:class:`SessionDown`), after its ``ip-up`` finished.  One
difference from pppd: the session table reports the end after the data plane is released,
so ``ip-down`` starts once the session's interface is gone (pppd keeps its ``pppN`` until the
script exits).  Scripts that undo rules by interface name or address are unaffected; one that
queries the interface sees it missing.  An IPCP renegotiation inside a session runs neither
script again (the interface and addresses stay).  ``ipv6-up`` runs when IPV6CP is up and
IPCP is (the interface exists), ``ipv6-down`` when IPV6CP goes down or the session ends.

Scripts run only if they exist and are executable, checked each time (pppd's rule), so a
script installed while the server runs is used from the next session on.  The server's stop
waits for the hooks already started or queued, each bounded by the timeout, so the
``ip-down`` of the sessions a shutdown ends still run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pptpkit.io.dataplane import link_local
from pptpkit.vpn.hooks import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MAX_RUNNING,
    DEFAULT_SCRIPTS,
    HookContext,
    HookKind,
    HookRunner,
    hook_argv,
    hook_env,
    runnable,
)
from pptpkit.vpn.notices import SessionDown, SessionIpv6Down, SessionIpv6Up, SessionNotice, SessionUp

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = ["HookScripts", "HookSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class HookSettings:
    """Which scripts (None: that hook is off), how long each may run, and what pptpd would
    pass as ``speed`` and ``ipparam``."""

    scripts: Mapping[HookKind, str | None] = field(default_factory=lambda: dict(DEFAULT_SCRIPTS))
    timeout: float = DEFAULT_HOOK_TIMEOUT
    max_running: int = DEFAULT_MAX_RUNNING
    speed: int = 115200
    ipparam: bool = True


@dataclass(slots=True)
class _State:
    """What ran for one session: ``ip`` / ``ipv6`` hold the context ``*-up`` was given."""

    ip: HookContext | None = None
    ipv6: HookContext | None = None


class HookScripts:
    """The hook scripts as a :class:`~pptpkit.ops.ServerExtension` (see the module docstring)."""

    def __init__(self, settings: HookSettings) -> None:
        self.settings = settings
        self.runner: HookRunner | None = None
        self._sessions: dict[str, _State] = {}
        self._table: BuiltinSessions | None = None

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        self.runner = HookRunner(timeout=self.settings.timeout, max_running=self.settings.max_running)
        self._table = sessions
        sessions.observers.append(self.observe)
        active = [f"{k.value} {p}" for k, p in self.settings.scripts.items() if p is not None]
        log.info("hook scripts (when present): %s; timeout %g s", ", ".join(active) or "none",
                 self.settings.timeout)

    async def stop(self) -> None:
        if self._table is not None and self.observe in self._table.observers:
            self._table.observers.remove(self.observe)
        if self.runner is not None:
            if self.runner.pending:
                log.info("waiting for %d hook scripts", self.runner.pending)
            await self.runner.aclose()

    # -- notices -----------------------------------------------------------------------------

    def observe(self, notice: SessionNotice) -> None:
        if isinstance(notice, SessionUp):
            self._ip_up(notice.session)
        elif isinstance(notice, SessionIpv6Up):
            state = self._sessions.get(notice.session.id)
            if state is not None and state.ip is not None:
                self._ipv6_up(notice.session, state, notice.local_id, notice.peer_id)
        elif isinstance(notice, SessionIpv6Down):
            state = self._sessions.get(notice.session.id)
            if state is not None:
                self._ipv6_down(notice.session, state)
        elif isinstance(notice, SessionDown):
            state = self._sessions.pop(notice.session.id, None)
            if state is None:
                return
            self._ipv6_down(notice.session, state)
            if state.ip is not None:
                link = notice.session.link
                started = link.started_at if link.started_at is not None else link.loop.time()
                ctx = _with_down(state.ip, connect_time=int(link.loop.time() - started),
                                 bytes_sent=notice.octets_out, bytes_rcvd=notice.octets_in)
                self._run(notice.session, HookKind.IP_DOWN, ctx)

    def _context(self, session: Session, local: str, remote: str) -> HookContext:
        up = session.up
        peername = up.username if up is not None and up.auth_method is not None and up.username else None
        return HookContext(
            ifname=session.link.interface or "", local=local, remote=remote, speed=self.settings.speed,
            ipparam=session.source if self.settings.ipparam else None, peername=peername,
            linkname=session.id)

    def _ip_up(self, session: Session) -> None:
        up = session.up
        if up is None or session.id in self._sessions:
            return  # IPCP renegotiated: the scripts already ran for this session
        state = _State()
        self._sessions[session.id] = state
        state.ip = self._context(session, str(up.local_address or ""), str(up.peer_address or ""))
        self._run(session, HookKind.IP_UP, state.ip)
        if up.local_ipv6_id is not None and up.peer_ipv6_id is not None:
            # IPV6CP came up first: now the interface exists for it.
            self._ipv6_up(session, state, up.local_ipv6_id, up.peer_ipv6_id)

    def _ipv6_up(self, session: Session, state: _State, local_id: bytes, peer_id: bytes) -> None:
        if state.ipv6 is not None:
            return
        state.ipv6 = self._context(session, link_local(local_id), link_local(peer_id))
        self._run(session, HookKind.IPV6_UP, state.ipv6)

    def _ipv6_down(self, session: Session, state: _State) -> None:
        ctx, state.ipv6 = state.ipv6, None
        if ctx is None:
            return
        link = session.link
        started = link.started_at if link.started_at is not None else link.loop.time()
        stats = link.stats
        self._run(session, HookKind.IPV6_DOWN,
                  _with_down(ctx, connect_time=int(link.loop.time() - started),
                             bytes_sent=stats.octets_out, bytes_rcvd=stats.octets_in))

    def _run(self, session: Session, kind: HookKind, ctx: HookContext) -> None:
        path = self.settings.scripts.get(kind)
        if self.runner is None or not runnable(path):
            return
        assert path is not None
        # One chain per session and family: a *-down waits for its *-up (pppd's order).
        chain = (session.id, kind.ipv6)
        self.runner.submit(chain, session.id, kind, hook_argv(path, ctx), hook_env(kind, ctx))


def _with_down(ctx: HookContext, *, connect_time: int, bytes_sent: int, bytes_rcvd: int) -> HookContext:
    return replace(ctx, connect_time=connect_time, bytes_sent=bytes_sent, bytes_rcvd=bytes_rcvd)
