"""The RFC 1661 automaton: the table cell by cell, and the generic engine in pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ppp_harness import Pair

from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import (
    ACK,
    FOOTNOTES,
    REJECT,
    TRANSITIONS,
    Action,
    CodeRejected,
    ControlProtocol,
    Event,
    FsmConfig,
    Judgement,
    LayerDown,
    LayerFinished,
    LayerStarted,
    LayerUp,
    NegotiationFailed,
    State,
    TerminateReceived,
    nak,
)
from pptpkit.ppp.packet import Code, Option, Packet, decode_options

TABLE_FILE = Path(__file__).parents[2] / "vectors" / "rfc1661_table.txt"


def load_rfc_table() -> dict[tuple[int, str], tuple[tuple[str, ...], int, str] | None]:
    """The transcribed RFC table: (state number, event name) -> (actions, state, footnote)."""
    cells: dict[tuple[int, str], tuple[tuple[str, ...], int, str] | None] = {}
    for line in TABLE_FILE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        event, *row = line.split()
        assert len(row) == 10, line
        for state, cell in enumerate(row):
            if cell == "-":
                cells[(state, event)] = None
                continue
            actions, _, target = cell.rpartition("/")
            note = target.lstrip("0123456789")
            number = int(target[: len(target) - len(note)])
            cells[(state, event)] = (tuple(actions.split(",")) if actions else (), number, note)
    return cells


def test_transition_table_matches_rfc_1661_cell_by_cell() -> None:
    rfc = load_rfc_table()
    assert len(rfc) == 10 * 16
    assert {e for _, e in rfc} == {e.value for e in Event}
    for state in State:
        for event in Event:
            expected = rfc[(int(state), event.value)]
            ours = TRANSITIONS.get((state, event))
            if expected is None:
                assert ours is None, (state, event)
                assert (state, event) not in FOOTNOTES
                continue
            assert ours is not None, (state, event)
            actions, target, note = expected
            assert tuple(a.value for a in ours.actions) == actions, (state, event)
            assert int(ours.next_state) == target, (state, event)
            assert FOOTNOTES.get((state, event), "") == note, (state, event)


def test_table_uses_every_action() -> None:
    used = {a for t in TRANSITIONS.values() for a in t.actions}
    assert used == set(Action)


# --- a toy protocol on the generic engine ------------------------------------------------------

VALUE = 1


class Toy(ControlProtocol):
    """Option 1 is a one-byte value: we request ``want``; we ack peer values in ``accept``."""

    def __init__(
        self,
        *,
        want: int | None = 5,
        accept: frozenset[int] = frozenset(range(256)),
        suggest: int = 7,
        adopt: bool = True,
        fsm: FsmConfig | None = None,
    ) -> None:
        super().__init__(0x80FF, fsm or FsmConfig())
        self.want, self.accept, self.suggest, self.adopt = want, accept, suggest, adopt
        self.current: int | None = want
        self.mine: int | None = None
        self.peers: int | None = None
        self.resets = 0

    def reset_negotiation(self) -> None:
        self.resets += 1
        self.current = self.want

    def build_request(self) -> list[Option]:
        return [] if self.current is None else [Option(type=VALUE, data=bytes([self.current]))]

    def judge_option(self, option: Option) -> Judgement:
        if option.type != VALUE or len(option.data) != 1:
            return REJECT
        return ACK if option.data[0] in self.accept else nak(Option(type=VALUE, data=bytes([self.suggest])))

    def peer_request_acked(self, options: Sequence[Option]) -> None:
        self.peers = next((o.data[0] for o in options if o.type == VALUE), None)

    def our_request_acked(self, options: Sequence[Option]) -> None:
        self.mine = next((o.data[0] for o in options if o.type == VALUE), None)

    def our_request_naked(self, options: Sequence[Option]) -> None:
        for o in options:
            if o.type == VALUE and self.adopt:
                self.current = o.data[0]

    def our_request_rejected(self, options: Sequence[Option]) -> None:
        if any(o.type == VALUE for o in options):
            self.current = None


def state_of(eng: ControlProtocol) -> State:
    """The state through a call, so that mypy does not carry narrowing across engine calls."""
    return eng.state


def start(pair: Pair) -> None:
    for eng in (pair.a, pair.b):
        eng.open(pair.now)
        eng.up(pair.now)


def codes(packets: list[bytes]) -> list[int]:
    return [p[0] for p in packets]


def test_pair_opens_and_agrees() -> None:
    pair = Pair(Toy(want=5), Toy(want=9))
    start(pair)
    pair.run(until=1)
    assert state_of(pair.a) is State.OPENED and state_of(pair.b) is State.OPENED
    assert (pair.a.mine, pair.a.peers, pair.b.mine, pair.b.peers) == (5, 9, 9, 5)
    assert [type(e) for e in pair.events["a"]] == [LayerStarted, LayerUp]
    assert pair.a.get_timer() is None


def test_open_before_up_and_up_before_open() -> None:
    eng = Toy()
    eng.up(0.0)
    assert state_of(eng) is State.CLOSED and eng.packets_to_send() == []
    eng.open(0.0)
    assert state_of(eng) is State.REQ_SENT
    assert codes(eng.packets_to_send()) == [Code.CONFIGURE_REQUEST]
    assert eng.get_timer() == 3.0


def test_lost_requests_are_retransmitted_on_the_restart_timer() -> None:
    dropped: list[bytes] = []

    def keep(direction: str, pkt: bytes) -> bool:
        if direction == "ab" and pkt[0] == Code.CONFIGURE_REQUEST and len(dropped) < 2:
            dropped.append(pkt)
            return False
        return True

    pair = Pair(Toy(), Toy(), keep=keep)
    start(pair)
    pair.run(until=5.9)
    assert state_of(pair.a) is not State.OPENED
    pair.run(until=6.0)
    assert state_of(pair.a) is State.OPENED and state_of(pair.b) is State.OPENED
    requests = [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REQUEST]
    assert len(requests) == 3
    # An unchanged retransmission keeps its Identifier, so a late answer still matches.
    assert len({p[1] for p in requests}) == 1


def test_max_configure_then_finished() -> None:
    pair = Pair(Toy(), Toy(), keep=lambda d, p: d != "ab")
    start(pair)
    pair.run(until=100)
    requests = [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REQUEST]
    assert len(requests) == 10
    assert state_of(pair.a) is State.STOPPED
    assert pair.of_type("a", LayerFinished)
    assert pair.a.get_timer() is None


def test_passive_option_waits_without_finishing() -> None:
    pair = Pair(Toy(fsm=FsmConfig(passive=True, max_configure=3)), Toy(), keep=lambda d, p: d != "ab")
    start(pair)
    pair.run(until=100)
    assert state_of(pair.a) is State.STOPPED
    assert not pair.of_type("a", LayerFinished)


def test_max_failure_turns_naks_into_a_reject() -> None:
    # b refuses every value but 7 and a insists on 5: b Naks max-failure times, then Rejects.
    pair = Pair(Toy(want=5, adopt=False), Toy(accept=frozenset({7}), suggest=7))
    start(pair)
    pair.run(until=1)
    naks = [p for p in pair.sent["ba"] if p[0] == Code.CONFIGURE_NAK]
    rejects = [p for p in pair.sent["ba"] if p[0] == Code.CONFIGURE_REJECT]
    assert len(naks) == 5
    assert len(rejects) == 1
    assert decode_options(Packet.decode(rejects[0]).data) == [Option(type=VALUE, data=b"\x05")]
    assert state_of(pair.a) is State.OPENED and pair.a.current is None and pair.b.peers is None


def test_nak_suggestion_is_adopted() -> None:
    pair = Pair(Toy(want=5), Toy(accept=frozenset({7}), suggest=7))
    start(pair)
    pair.run(until=1)
    assert pair.a.mine == 7 and pair.b.peers == 7
    assert len([p for p in pair.sent["ba"] if p[0] == Code.CONFIGURE_NAK]) == 1


def test_endless_naks_from_the_peer_are_capped() -> None:
    class Flipper(Toy):
        def judge_option(self, option: Option) -> Judgement:
            return nak(Option(type=VALUE, data=bytes([(option.data[0] + 1) & 0xFF])))

    pair = Pair(Toy(fsm=FsmConfig(max_nak_received=8)), Flipper(fsm=FsmConfig(max_failure=1000)))
    start(pair)
    pair.run(until=60)
    failures = pair.of_type("a", NegotiationFailed)
    assert len(failures) == 1
    assert state_of(pair.a) in (State.CLOSED, State.STOPPED, State.CLOSING)
    assert pair.of_type("a", LayerFinished)


def test_terminate_both_sides_finish() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    pair.a.close(pair.now, "bye")
    pair.run(until=10)
    assert state_of(pair.a) is State.CLOSED
    # The peer waits one restart interval in Stopping (zrc) before finishing.
    assert state_of(pair.b) is State.STOPPED
    assert pair.of_type("b", TerminateReceived)[0].reason == b"bye"
    assert pair.of_type("a", LayerDown) and pair.of_type("a", LayerFinished)
    assert pair.of_type("b", LayerDown) and pair.of_type("b", LayerFinished)


def test_terminate_without_answer_gives_up_after_max_terminate() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    pair.keep = lambda d, p: d != "ab"
    pair.a.close(pair.now)
    pair.run(until=30)
    terms = [p for p in pair.sent["ab"] if p[0] == Code.TERMINATE_REQUEST]
    assert len(terms) == 2 and terms[0][1] == terms[1][1]
    assert state_of(pair.a) is State.CLOSED and pair.of_type("a", LayerFinished)


def test_renegotiation_when_request_arrives_in_opened() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    pair.b.receive_packet(Packet(code=1, identifier=77, data=b"\x01\x03\x09").encode(), pair.now)
    assert state_of(pair.b) is State.ACK_SENT
    assert pair.of_type("b", LayerDown) == [] and pair.b.next_event() == LayerDown(protocol=0x80FF)
    out = pair.b.packets_to_send()
    assert codes(out) == [Code.CONFIGURE_REQUEST, Code.CONFIGURE_ACK]
    assert Packet.decode(out[1]).identifier == 77
    assert pair.b.peers == 9
    pair.a.receive_packet(out[0], pair.now)
    assert state_of(pair.a) is State.ACK_SENT  # a renegotiates too: its own request goes out again
    for pkt in pair.a.packets_to_send():
        pair.b.receive_packet(pkt, pair.now)
    pair.pump()
    assert state_of(pair.a) is State.OPENED and state_of(pair.b) is State.OPENED


def test_stale_and_mismatched_acks_are_ignored() -> None:
    eng = Toy()
    eng.open(0)
    eng.up(0)
    req = Packet.decode(eng.packets_to_send()[0])
    eng.receive_packet(Packet(code=2, identifier=(req.identifier + 1) & 0xFF, data=req.data).encode(), 0)
    assert state_of(eng) is State.REQ_SENT and eng.counters["rx_stale_reply"] == 1
    eng.receive_packet(Packet(code=2, identifier=req.identifier, data=b"\x01\x03\x06").encode(), 0)
    assert state_of(eng) is State.REQ_SENT and eng.counters["rx_bad_ack"] == 1
    eng.receive_packet(Packet(code=4, identifier=req.identifier, data=b"\x02\x02").encode(), 0)
    assert state_of(eng) is State.REQ_SENT and eng.counters["rx_bad_reject"] == 1
    eng.receive_packet(Packet(code=2, identifier=req.identifier, data=req.data).encode(), 0)
    assert state_of(eng) is State.ACK_RCVD
    # A duplicate of the same Ack must not count again.
    eng.receive_packet(Packet(code=2, identifier=req.identifier, data=req.data).encode(), 0)
    assert state_of(eng) is State.ACK_RCVD and eng.counters["rx_stale_reply"] == 2


def test_unknown_code_is_code_rejected_with_the_packet() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    weird = Packet(code=42, identifier=3, data=b"hello").encode()
    pair.b.receive_packet(weird + b"\0\0", pair.now)  # padding after Length is not echoed
    out = pair.b.packets_to_send()
    assert len(out) == 1
    rej = Packet.decode(out[0])
    assert rej.code == Code.CODE_REJECT and rej.data == weird
    assert state_of(pair.b) is State.OPENED
    pair.b.peer_mru = 8
    pair.b.receive_packet(weird, pair.now)
    assert Packet.decode(pair.b.packets_to_send()[0]).data == weird[:4]


def test_code_reject_of_an_essential_code_terminates() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    rejected = Packet(code=5, identifier=1).encode()
    pair.a.receive_packet(Packet(code=7, identifier=9, data=rejected).encode(), pair.now)
    assert state_of(pair.a) is State.STOPPING
    assert codes(pair.a.packets_to_send()) == [Code.TERMINATE_REQUEST]
    assert pair.a.next_event() == CodeRejected(protocol=0x80FF, code=5)


def test_code_reject_of_an_optional_code_is_harmless() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    pair.a.receive_packet(Packet(code=7, identifier=9, data=b"\x09\x01\x00\x04").encode(), pair.now)
    assert state_of(pair.a) is State.OPENED and pair.a.packets_to_send() == []


def test_illegal_events_are_counted_not_raised() -> None:
    eng = Toy()
    eng.down(0)
    eng.handle_timer(100)
    eng.receive_packet(Packet(code=5, identifier=1).encode(), 0)
    assert state_of(eng) is State.INITIAL
    assert eng.counters["illegal_Down_in_initial"] == 1
    assert eng.packets_to_send() == []


def test_restart_option_bounces_the_link_on_open() -> None:
    pair = Pair(Toy(fsm=FsmConfig(restart_on_open=True)), Toy())
    start(pair)
    pair.run(until=1)
    pair.a.open(pair.now)
    assert state_of(pair.a) is State.REQ_SENT
    assert pair.of_type("a", LayerDown) == []
    assert LayerDown(protocol=0x80FF) in list(iter(pair.a.next_event, None))
    plain = Pair(Toy(), Toy())
    start(plain)
    plain.run(until=1)
    plain.a.open(plain.now)
    assert state_of(plain.a) is State.OPENED


def test_down_in_opened_and_back_up() -> None:
    pair = Pair(Toy(), Toy())
    start(pair)
    pair.run(until=1)
    pair.a.down(pair.now)
    assert state_of(pair.a) is State.STARTING
    pair.a.up(pair.now)
    pair.run(until=2)
    assert state_of(pair.a) is State.OPENED and state_of(pair.b) is State.OPENED
    assert pair.a.resets == 2


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        FsmConfig(max_configure=0)
    with pytest.raises(ConfigError):
        FsmConfig(restart_interval=0)


def _engine_in(state_steps: int) -> Toy:
    eng = Toy()
    steps: list[Callable[[], None]] = [
        lambda: eng.open(0),
        lambda: eng.up(0),
        lambda: eng.receive_packet(Packet(code=1, identifier=1, data=b"\x01\x03\x05").encode(), 0),
        lambda: eng.receive_packet(Packet(code=2, identifier=eng._req_id, data=eng._req_data).encode(), 0),
        lambda: eng.close(0),
    ]
    for step in steps[:state_steps]:
        step()
    eng.packets_to_send()
    return eng


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.lists(st.binary(max_size=40), max_size=6), st.floats(0, 50))
def test_receive_path_never_raises(steps: int, packets: list[bytes], when: float) -> None:
    eng = _engine_in(steps)
    for data in packets:
        eng.receive_packet(data, when)
        eng.handle_timer(when)
    for out in eng.packets_to_send():
        Packet.decode(out)
    while eng.next_event() is not None:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 5),
    st.lists(
        st.tuples(st.integers(1, 16), st.integers(0, 255), st.binary(max_size=12)),
        max_size=8,
    ),
)
def test_well_formed_packets_in_any_state_never_raise(
    steps: int, packets: list[tuple[int, int, bytes]]
) -> None:
    eng = _engine_in(steps)
    for code, ident, data in packets:
        eng.receive_packet(Packet(code=code, identifier=ident, data=data).encode(), 1.0)
    assert state_of(eng) in State
