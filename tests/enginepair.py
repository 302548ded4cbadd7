"""Two sans-IO engines joined back to back on a virtual clock (a helper module, not a test file).

Every engine pair in the unit tests - PPP control protocols, whole PPP sessions, the PPTP
control connection, the authentication engines - is driven by :class:`EnginePair`: it moves
what one engine emits into the other in both directions until both go quiet (:meth:`pump`),
then advances time straight to the next due timer (:meth:`advance`), never sleeping.  Engines
differ only in the names of "what do you want to send" and "here is what arrived", so each kind
gets an :class:`End` (a few callables) rather than its own loop; ``tests/unit/*/..._harness.py``
are thin subclasses that keep the vocabulary their tests were written in.

The wire is where tests interfere, through two hooks a subclass (or a test) overrides:
:meth:`EnginePair.transform` sees every unit as it is sent and returns what actually travels
(``[]`` loses it, ``[x, x]`` duplicates it, ``[y]`` rewrites it); :meth:`EnginePair.reorder_batch`
sees each direction's batch before delivery.  Each :class:`Wire` keeps what was sent (before
the hooks), what arrived, and what the receiving engine handed up; :attr:`EnginePair.log` keeps
every arrival of both directions in order.

Two delivery orders exist because the transports differ.  Packet links (``lockstep=False``)
hand one direction's output over before the other side is asked for its own, so a reply can
travel in the same round.  A byte stream (``lockstep=True``) takes both sides' output first,
as two sockets written at once; an end that reports itself closed then makes its peer see
``lost`` once, after its last bytes - the order a TCP FIN keeps.

Only timers that are due fire: an engine whose deadline is later is not called, so a test
sees exactly the timeouts the engine asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _never() -> bool:
    return False


@dataclass
class End:
    """One engine as the wire sees it.  ``output`` drains what it wants to send (as wire units);
    ``deliver(unit, now)`` hands it one unit and may return something the engine passed up;
    ``closed``/``lost`` give stream semantics; ``busy`` says output is still being produced."""

    engine: Any
    output: Callable[[], Sequence[bytes]]
    deliver: Callable[[bytes, float], object]
    closed: Callable[[], bool] = _never
    lost: Callable[[float], object] | None = None
    busy: Callable[[], bool] = _never

    def events(self) -> list[object]:
        found = []
        while (event := self.engine.next_event()) is not None:
            found.append(event)
        return found

    def get_timer(self) -> float | None:
        timer: float | None = self.engine.get_timer()
        return timer

    def handle_timer(self, now: float) -> None:
        self.engine.handle_timer(now)


def packet_end(engine: Any, receive: str = "receive_packet", send: str = "packets_to_send") -> End:
    """An engine that exchanges whole packets (PPP control protocols, auth engines, sessions)."""
    return End(engine, getattr(engine, send), getattr(engine, receive))


def stream_end(engine: Any) -> End:
    """An engine on a byte stream: ``data_to_send``/``receive_data``/``closed``/``connection_lost``."""

    def output() -> list[bytes]:
        data: bytes = engine.data_to_send()
        return [data] if data else []

    return End(engine, output, engine.receive_data, closed=lambda: bool(engine.closed),
               lost=engine.connection_lost)


@dataclass
class Wire:
    """One direction: every unit sent (before loss), those still in flight, those that arrived,
    and whatever the receiving engine returned for them (e.g. IP packets out of a session)."""

    sent: list[bytes] = field(default_factory=list)
    in_flight: list[bytes] = field(default_factory=list)
    arrived: list[bytes] = field(default_factory=list)
    delivered: list[Any] = field(default_factory=list)

    @property
    def frames(self) -> list[bytes]:
        """:attr:`sent`, in the words of wires that carry frames."""
        return self.sent


class EnginePair:
    """Ends ``names[0]`` and ``names[1]``, joined by wires ``directions[0]`` (first to second)
    and ``directions[1]`` (back)."""

    def __init__(
        self,
        first: End,
        second: End,
        *,
        names: tuple[str, str] = ("a", "b"),
        directions: tuple[str, str] = ("ab", "ba"),
        now: float = 0.0,
        rounds: int | None = 500,
        lockstep: bool = False,
    ) -> None:
        self.ends = {names[0]: first, names[1]: second}
        self.names = names
        self.directions = directions
        self.now = now
        self.rounds = rounds
        self.lockstep = lockstep
        self.wires = {d: Wire() for d in directions}
        self.events: dict[str, list[Any]] = {n: [] for n in names}
        self.log: list[tuple[str, bytes]] = []
        # Ends whose output never reaches the wire (not even its record): a peer gone mute.
        self.silent: set[str] = set()
        self._lost_reported: set[str] = set()

    # -- hooks ------------------------------------------------------------------------------------

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        """What travels when ``unit`` is sent in ``direction``; by default, the unit itself."""
        return (unit,)

    def reorder_batch(self, direction: str, batch: list[bytes]) -> list[bytes]:
        """The order in which one round's units arrive; by default, the order they were sent."""
        return batch

    # -- driving ----------------------------------------------------------------------------------

    def offer(self, direction: str, unit: bytes) -> None:
        """Put ``unit`` on the wire ``direction`` (recorded, then through :meth:`transform`)."""
        wire = self.wires[direction]
        wire.sent.append(unit)
        wire.in_flight.extend(self.transform(direction, unit))

    def _legs(self) -> list[tuple[str, str, str]]:
        (a, b), (ab, ba) = self.names, self.directions
        return [(ab, a, b), (ba, b, a)]

    def _collect(self, direction: str, src: str) -> bool:
        units = self.ends[src].output()
        if src not in self.silent:
            for unit in units:
                self.offer(direction, unit)
        return bool(units)

    def _deliver(self, direction: str, dst: str) -> bool:
        wire = self.wires[direction]
        batch, wire.in_flight = wire.in_flight, []
        if len(batch) > 1:
            batch = self.reorder_batch(direction, batch)
        for unit in batch:
            wire.arrived.append(unit)
            self.log.append((direction, unit))
        wire.delivered += self.hand_over(dst, batch)
        return bool(batch)

    def hand_over(self, dst: str, units: list[Any]) -> list[Any]:
        """What end ``dst`` delivers of one round's units: here one unit at a time; a subclass
        may hand the round over as one batch."""
        out = []
        for unit in units:
            result = self.ends[dst].deliver(unit, self.now)
            if result is not None:
                out.append(result)
        return out

    def pump(self, rounds: int | None = None) -> None:
        """Exchange output until neither engine has anything more to say."""
        limit = rounds if rounds is not None else self.rounds
        done = 0
        while limit is None or done < limit:
            done += 1
            moved = False
            if self.lockstep:
                for direction, src, _ in self._legs():
                    moved |= self._collect(direction, src)
                # Sampled after draining: a closed end's last bytes are on the wire already.
                closed = [n for n in self.names if self.ends[n].closed()]
                for direction, _, dst in self._legs():
                    moved |= self._deliver(direction, dst)
                moved |= self._report_lost(closed)
            else:
                for direction, src, dst in self._legs():
                    moved |= self._collect(direction, src)
                    moved |= self._deliver(direction, dst)
            self._drain()
            if not moved and not any(end.busy() for end in self.ends.values()):
                return
        raise AssertionError("engines never went quiet")

    def _report_lost(self, closed: list[str]) -> bool:
        reported = False
        for name in closed:
            if name in self._lost_reported:
                continue
            self._lost_reported.add(name)
            other = self.ends[self.names[1] if name == self.names[0] else self.names[0]]
            if other.lost is not None:
                other.lost(self.now)
            reported = True
        return reported

    def _drain(self) -> None:
        for name, end in self.ends.items():
            self.events[name] += end.events()

    def next_timer(self) -> float | None:
        timers = [t for end in self.ends.values() if (t := end.get_timer()) is not None]
        return min(timers) if timers else None

    def advance(self, until: float) -> None:
        """Fire due timers in time order up to and including ``until``, pumping after each."""
        while (due := self.next_timer()) is not None and due <= until:
            self.now = max(self.now, due)
            for end in self.ends.values():
                timer = end.get_timer()
                if timer is not None and timer <= self.now:
                    end.handle_timer(self.now)
            self.pump()
        self.now = max(self.now, until)

    def run(self, until: float) -> None:
        """Pump what is pending, then :meth:`advance` to ``until``."""
        self.pump()
        self.advance(until)

    def of_type(self, name: str, cls: type) -> list[Any]:
        return [e for e in self.events[name] if isinstance(e, cls)]
