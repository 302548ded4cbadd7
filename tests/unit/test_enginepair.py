"""The shared engine-pair helper itself, on toy engines: delivery, hooks, timers, stream close."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from enginepair import EnginePair, packet_end, stream_end


class Pinger:
    """Sends ``ping`` at start and again every second until a ``pong`` arrives; answers pings."""

    def __init__(self, start: bool) -> None:
        self.out: list[bytes] = [b"ping"] if start else []
        self.events: list[object] = []
        self.retry: float | None = 1.0 if start else None
        self.fired: list[float] = []

    def packets_to_send(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def receive_packet(self, data: bytes, now: float) -> None:
        if data == b"ping":
            self.out.append(b"pong")
        elif data == b"pong":
            self.retry = None
        self.events.append((data, now))

    def next_event(self) -> object | None:
        return self.events.pop(0) if self.events else None

    def get_timer(self) -> float | None:
        return self.retry

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.out.append(b"ping")
        self.retry = now + 1.0


class Chatter(Pinger):
    """Answers every packet: two of them never go quiet."""

    def receive_packet(self, data: bytes, now: float) -> None:
        self.out.append(data)


def test_a_reply_travels_in_the_same_pump_and_events_are_collected() -> None:
    a, b = Pinger(start=True), Pinger(start=False)
    pair = EnginePair(packet_end(a), packet_end(b))
    pair.pump()
    assert pair.wires["ab"].arrived == [b"ping"] and pair.wires["ba"].arrived == [b"pong"]
    assert pair.events == {"a": [(b"pong", 0.0)], "b": [(b"ping", 0.0)]}
    assert pair.log == [("ab", b"ping"), ("ba", b"pong")]
    assert a.get_timer() is None


class Lossy(EnginePair):
    def __init__(self, drop: int) -> None:
        self.a, self.b = Pinger(start=True), Pinger(start=False)
        super().__init__(packet_end(self.a), packet_end(self.b))
        self.drop = drop

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        if direction == "ab" and self.drop:
            self.drop -= 1
            return ()
        return (unit, unit) if direction == "ba" else (unit,)


def test_lost_units_are_recorded_as_sent_and_timers_fire_in_time_order() -> None:
    pair = Lossy(drop=2)
    pair.run(10.0)
    assert pair.wires["ab"].sent == [b"ping"] * 3 and pair.wires["ab"].arrived == [b"ping"]
    # The duplicate hook doubled the one reply; the retry timer fired at 1 and 2 only.
    assert pair.wires["ba"].arrived == [b"pong", b"pong"]
    assert pair.a.fired == [1.0, 2.0] and pair.b.fired == []
    assert pair.now == 10.0


def test_only_due_timers_fire() -> None:
    a, b = Pinger(start=True), Pinger(start=True)
    b.retry = 5.0
    pair = EnginePair(packet_end(a), packet_end(b))
    pair.silent.add("a")
    pair.advance(2.0)
    assert a.fired == [1.0, 2.0] and b.fired == []
    assert pair.wires["ab"].sent == []


def test_reorder_hook_sees_each_batch() -> None:
    class Reversed(EnginePair):
        def reorder_batch(self, direction: str, batch: list[bytes]) -> list[bytes]:
            return batch[::-1]

    a, b = Pinger(start=False), Pinger(start=False)
    a.out = [b"one", b"two", b"three"]
    pair = Reversed(packet_end(a), packet_end(b))
    pair.pump()
    assert pair.wires["ab"].arrived == [b"three", b"two", b"one"]


def test_engines_that_never_go_quiet_fail() -> None:
    a, b = Chatter(start=True), Chatter(start=False)
    with pytest.raises(AssertionError, match="never went quiet"):
        EnginePair(packet_end(a), packet_end(b), rounds=20).pump()


class Stream:
    """A byte-stream engine that closes after sending ``bye``, and records ``lost``."""

    def __init__(self, say: bytes) -> None:
        self.buffer = say
        self.closed = False
        self.seen: list[bytes] = []

    def data_to_send(self) -> bytes:
        out, self.buffer = self.buffer, b""
        if out.endswith(b"bye"):
            self.closed = True
        return out

    def receive_data(self, data: bytes, now: float) -> None:
        self.seen.append(data)

    def connection_lost(self, now: float) -> None:
        self.seen.append(b"<lost>")

    def next_event(self) -> object | None:
        return None

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("no timer was asked for")


def test_a_closed_stream_delivers_its_last_bytes_before_lost_once() -> None:
    client, server = Stream(b"hello"), Stream(b"bye")
    pair = EnginePair(stream_end(client), stream_end(server), lockstep=True)
    pair.pump()
    pair.pump()
    assert client.seen == [b"bye", b"<lost>"]
    assert server.seen == [b"hello"]
