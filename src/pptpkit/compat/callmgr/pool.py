"""Which control connection a new call goes on: the call manager's connection accounting.

RFC 2637 defines the Maximum Channels of a Start-Control-Connection-Reply as the number of PPP
sessions the PAC supports.  The real pptpd answers 1 and tears down a control connection whose
PNS places a second call on it (taking the first call with it), so a manager that puts every
call on one connection breaks the first tunnel as soon as a second one starts.  The manager
therefore keeps a *pool* of control connections to its one server and places each call on a
connection that has room, opening another one when none has.

Decisions, and why:

* The limit of a connection is the PAC's Maximum Channels, capped by our own per-connection
  call limit.  A PAC announcing 0 (the RFC asks for 0 only in the PNS's request) tells us
  nothing: it counts as 1, the one choice no PAC can object to.
* A connection's limit is unknown until its reply arrives.  A call asked for meanwhile joins
  a connection that is still being set up when the limit last announced by this server (the
  pool serves one server) leaves room, or when no limit is known yet; a call that turns out to
  be over the limit moves on once the reply arrives.  So against a server allowing many calls,
  calls started together share one connection, and against pptpd, which allows one, they stop
  piling onto set-ups once its first reply is in.
* Calls go on the oldest connection with room, so later ones empty first and are closed: a
  connection is closed as soon as its last call is released.  One being set up whose calls
  all left is closed once it is up, not abandoned half-way: the manager then has one way of
  ending a connection (a Stop-Control-Connection exchange), not two.
* Calls of a connection that is lost are simply forgotten: their owners learn it from the
  connection, not from the pool.

The pool is sans-IO: it sees call keys and connection numbers, never sockets, and answers with
a :class:`Plan` of connections to open and to close, which the manager carries out.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pptpkit.errors import StateError

__all__ = ["ConnState", "ConnectionPool", "Plan", "call_limit"]

K = TypeVar("K", bound=Hashable)


def call_limit(max_channels: int, own_limit: int) -> int:
    """Calls one connection may carry: the PAC's Maximum Channels (0 meaning unknown: 1), at
    most ``own_limit``."""
    return max(1, min(max_channels or 1, own_limit))


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the manager must do after a pool decision: set up ``open``, stop ``close``."""

    open: tuple[int, ...] = ()
    close: tuple[int, ...] = ()

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.open + other.open, self.close + other.close)


@dataclass(slots=True)
class _Conn(Generic[K]):
    state: ConnState
    limit: int | None = None
    #: Insertion-ordered: the earliest calls keep their place when a limit turns out small.
    calls: dict[K, None] = field(default_factory=dict)


class ConnectionPool(Generic[K]):
    """Connections to one server and the calls on each.  ``own_limit``: our own cap on calls per
    connection (the control engine's ``max_calls``)."""

    def __init__(self, own_limit: int = 0xFFFF) -> None:
        if own_limit < 1:
            raise ValueError("own_limit must be at least 1")
        self.own_limit = own_limit
        #: The limit of the last reply from this server: a guess for connections being set up.
        self.known_limit: int | None = None
        self._conns: dict[int, _Conn[K]] = {}
        self._where: dict[K, int] = {}
        self._next = 1

    # -- queries ----------------------------------------------------------------------------------

    @property
    def connections(self) -> tuple[int, ...]:
        return tuple(self._conns)

    def state(self, conn: int) -> ConnState | None:
        c = self._conns.get(conn)
        return None if c is None else c.state

    def limit(self, conn: int) -> int | None:
        c = self._conns.get(conn)
        return None if c is None else c.limit

    def calls_on(self, conn: int) -> tuple[K, ...]:
        c = self._conns.get(conn)
        return () if c is None else tuple(c.calls)

    def connection_of(self, call: K) -> int | None:
        return self._where.get(call)

    # -- decisions --------------------------------------------------------------------------------

    def place(self, call: K) -> Plan:
        """Put a new call on a connection; :meth:`connection_of` says which."""
        if call in self._where:
            raise StateError(f"call {call!r} is placed already")
        return self._place(call)

    def connected(self, conn: int, max_channels: int) -> Plan:
        """``conn`` is up and its PAC announced ``max_channels``.  Calls over the limit move on."""
        c = self._get(conn)
        if c.state is not ConnState.CONNECTING:
            raise StateError(f"connection {conn} is up already")
        c.state = ConnState.UP
        c.limit = self.known_limit = call_limit(max_channels, self.own_limit)
        if not c.calls:
            del self._conns[conn]
            return Plan(close=(conn,))
        over = list(c.calls)[c.limit:]
        plan = Plan()
        for call in over:
            del c.calls[call]
            del self._where[call]
        for call in over:
            plan += self._place(call)
        return plan

    def release(self, call: K) -> Plan:
        """The call ended, failed or was given up.  Unknown calls are ignored (a lost
        connection forgot them already)."""
        conn = self._where.pop(call, None)
        if conn is None:
            return Plan()
        c = self._conns[conn]
        del c.calls[call]
        if c.calls or c.state is ConnState.CONNECTING:
            return Plan()
        del self._conns[conn]
        return Plan(close=(conn,))

    def lost(self, conn: int) -> tuple[K, ...]:
        """``conn`` ended (or never came up); returns the calls it carried, now forgotten."""
        c = self._conns.pop(conn, None)
        if c is None:
            return ()
        for call in c.calls:
            del self._where[call]
        return tuple(c.calls)

    # -- internals --------------------------------------------------------------------------------

    def _get(self, conn: int) -> _Conn[K]:
        c = self._conns.get(conn)
        if c is None:
            raise StateError(f"no connection {conn}")
        return c

    def _has_room(self, c: _Conn[K]) -> bool:
        limit = c.limit if c.state is ConnState.UP else self.known_limit
        return len(c.calls) < (self.own_limit if limit is None else limit)

    def _place(self, call: K) -> Plan:
        plan = Plan()
        # Oldest first (dicts keep insertion order), so the newest connections empty first.
        conn = next((n for n, c in self._conns.items() if self._has_room(c)), None)
        if conn is None:
            conn = self._next
            self._next += 1
            self._conns[conn] = _Conn(ConnState.CONNECTING)
            plan = Plan(open=(conn,))
        self._conns[conn].calls[call] = None
        self._where[call] = conn
        return plan
