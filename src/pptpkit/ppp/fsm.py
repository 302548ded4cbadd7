"""The RFC 1661 option-negotiation automaton and a sans-IO engine built on it.

:data:`TRANSITIONS` is RFC 1661 section 4.1 as data: ``{(State, Event): Transition}``, one
entry per legal cell (a missing key is the RFC's "-", an illegal transition that is counted
and ignored).  :class:`ControlProtocol` runs that table for one protocol of the LCP family;
LCP, IPCP, IPV6CP and CCP subclass it and supply the option handling (the
:class:`OptionHandler` methods).

The engine is sans-IO: packets in through :meth:`ControlProtocol.receive_packet` with the
current time, control packets out through :meth:`ControlProtocol.packets_to_send` (without
the PPP frame header: the session frames them with :attr:`ControlProtocol.protocol`),
events through :meth:`ControlProtocol.next_event`, and the restart timer through
:meth:`ControlProtocol.get_timer` / :meth:`ControlProtocol.handle_timer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final, NamedTuple

from pptpkit.errors import ConfigError, DecodeError, PptpkitError
from pptpkit.ppp.packet import HEADER_SIZE, Code, Option, Packet, decode_options, encode_options


class State(IntEnum):
    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(Enum):
    """Automaton events; the value is the RFC's spelling."""

    # Every transition looks up (state, event) in TRANSITIONS: the identity hash, in C, instead
    # of Enum's, a Python call hashing the member's name.  Members are singletons, so equality
    # (identity) and hash still agree.
    __hash__ = object.__hash__

    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


class Action(Enum):
    """Automaton actions; the value is the RFC's spelling."""

    TLU = "tlu"
    TLD = "tld"
    TLS = "tls"
    TLF = "tlf"
    IRC = "irc"
    ZRC = "zrc"
    SCR = "scr"
    SCA = "sca"
    SCN = "scn"
    STR = "str"
    STA = "sta"
    SCJ = "scj"
    SER = "ser"


class Transition(NamedTuple):
    actions: tuple[Action, ...]
    next_state: State


# The table in the RFC's own notation, one row per event, columns are states 0..9.  Kept in
# this form so that it can be compared with the RFC by eye; it is parsed once at import.
_ROWS: Final[dict[Event, tuple[str, ...]]] = {
    Event.UP: ("2", "irc,scr/6", "-", "-", "-", "-", "-", "-", "-", "-"),
    Event.DOWN: ("-", "-", "0", "tls/1", "0", "1", "1", "1", "1", "tld/1"),
    Event.OPEN: ("tls/1", "1", "irc,scr/6", "3r", "5r", "5r", "6", "7", "8", "9r"),
    Event.CLOSE: ("0", "tlf/0", "2", "2", "4", "4", "irc,str/4", "irc,str/4", "irc,str/4", "tld,irc,str/4"),
    Event.TO_PLUS: ("-", "-", "-", "-", "str/4", "str/5", "scr/6", "scr/6", "scr/8", "-"),
    Event.TO_MINUS: ("-", "-", "-", "-", "tlf/2", "tlf/3", "tlf/3p", "tlf/3p", "tlf/3p", "-"),
    Event.RCR_PLUS: (
        "-", "-", "sta/2", "irc,scr,sca/8", "4", "5", "sca/8", "sca,tlu/9", "sca/8", "tld,scr,sca/8"
    ),
    Event.RCR_MINUS: (
        "-", "-", "sta/2", "irc,scr,scn/6", "4", "5", "scn/6", "scn/7", "scn/6", "tld,scr,scn/6"
    ),
    Event.RCA: ("-", "-", "sta/2", "sta/3", "4", "5", "irc/7", "scr/6x", "irc,tlu/9", "tld,scr/6x"),
    Event.RCN: ("-", "-", "sta/2", "sta/3", "4", "5", "irc,scr/6", "scr/6x", "irc,scr/8", "tld,scr/6x"),
    Event.RTR: ("-", "-", "sta/2", "sta/3", "sta/4", "sta/5", "sta/6", "sta/6", "sta/6", "tld,zrc,sta/5"),
    Event.RTA: ("-", "-", "2", "3", "tlf/2", "tlf/3", "6", "6", "8", "tld,scr/6"),
    Event.RUC: ("-", "-", "scj/2", "scj/3", "scj/4", "scj/5", "scj/6", "scj/7", "scj/8", "scj/9"),
    Event.RXJ_PLUS: ("-", "-", "2", "3", "4", "5", "6", "6", "8", "9"),
    Event.RXJ_MINUS: (
        "-", "-", "tlf/2", "tlf/3", "tlf/2", "tlf/3", "tlf/3", "tlf/3", "tlf/3", "tld,irc,str/5"
    ),
    Event.RXR: ("-", "-", "2", "3", "4", "5", "6", "7", "8", "ser/9"),
}


def _build_table() -> tuple[dict[tuple[State, Event], Transition], dict[tuple[State, Event], str]]:
    table: dict[tuple[State, Event], Transition] = {}
    notes: dict[tuple[State, Event], str] = {}
    for event, cells in _ROWS.items():
        for state, cell in zip(State, cells, strict=True):
            if cell == "-":
                continue
            actions_text, _, target = cell.rpartition("/")
            if target[-1].isalpha():
                notes[(state, event)] = target[-1]
                target = target[:-1]
            actions = tuple(Action(a) for a in actions_text.split(",")) if actions_text else ()
            table[(state, event)] = Transition(actions, State(int(target)))
    return table, notes


_TABLE, _NOTES = _build_table()
#: RFC 1661 4.1: every legal (state, event) cell.  Absent keys are illegal transitions.
TRANSITIONS: Final[Mapping[tuple[State, Event], Transition]] = _TABLE
#: The footnote letter of a cell: ``r`` restart option, ``p`` passive option, ``x`` crossed
#: connection.
FOOTNOTES: Final[Mapping[tuple[State, Event], str]] = _NOTES

#: States in which the restart timer runs (those with TO events in the table).
TIMER_STATES: Final = frozenset(
    {State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT}
)
_NEGOTIATING: Final = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT})

#: Codes whose rejection means the peer cannot run the protocol at all (RXJ-).
ESSENTIAL_CODES: Final = frozenset(range(1, 8))

#: Caps on what a peer can make us queue between two drains by the session.
MAX_QUEUED_PACKETS: Final = 64
MAX_QUEUED_EVENTS: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class FsmConfig:
    """Automaton parameters (RFC 1661 4.6), with the RFC's and pppd's defaults.

    ``max_nak_received`` bounds how many Configure-Nak/Reject packets the peer may send in one
    negotiation before we give up (RFC 1661 only bounds the Naks we send).  ``passive`` is the
    [p] option (after max-configure, wait in Stopped without This-Layer-Finished);
    ``restart_on_open`` the [r] option (an Open in Stopped/Closing/Stopping/Opened restarts
    the link with Down+Up).
    """

    restart_interval: float = 3.0
    max_configure: int = 10
    max_terminate: int = 2
    max_failure: int = 5
    max_nak_received: int = 30
    passive: bool = False
    restart_on_open: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.restart_interval <= 3600:
            raise ConfigError(f"restart_interval {self.restart_interval} must be in (0, 3600] seconds")
        for name in ("max_configure", "max_terminate", "max_failure", "max_nak_received"):
            value = getattr(self, name)
            if not 1 <= value <= 1000:
                raise ConfigError(f"{name} {value} must be between 1 and 1000")


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerUp:
    """This-Layer-Up: the protocol reached Opened; its negotiated result is now valid."""

    protocol: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerDown:
    """This-Layer-Down: the protocol left Opened."""

    protocol: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerStarted:
    """This-Layer-Started: the protocol wants the lower layer up."""

    protocol: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerFinished:
    """This-Layer-Finished: the protocol no longer needs the lower layer."""

    protocol: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminateReceived:
    """The peer sent a Terminate-Request; ``reason`` is its data (often text)."""

    protocol: int
    reason: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeRejected:
    """The peer Code-Rejected a packet of ours with code ``code``."""

    protocol: int
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationFailed:
    """Negotiation cannot succeed; the engine has already started closing the layer.

    ``reason`` is human-readable (it is also sent as the Terminate-Request data).
    Protocol modules subclass this for failures the session must tell apart.
    """

    protocol: int
    reason: str


# --- option handling ----------------------------------------------------------------------


class Verdict(Enum):
    ACK = "ack"
    NAK = "nak"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Judgement:
    """How we answer one option of the peer's Configure-Request; a Nak carries a suggestion."""

    verdict: Verdict
    suggestion: Option | None = None


ACK: Final = Judgement(Verdict.ACK)
REJECT: Final = Judgement(Verdict.REJECT)


def nak(suggestion: Option) -> Judgement:
    return Judgement(Verdict.NAK, suggestion)


class OptionHandler(ABC):
    """What a protocol module supplies to the automaton.

    All option lists are in wire order.  The methods may call :meth:`ControlProtocol.fail`
    (when mixed into the engine) to give up on the negotiation.
    """

    # Engines are per session; without slots anywhere in the hierarchy each would carry a dict.
    __slots__ = ()

    @abstractmethod
    def reset_negotiation(self) -> None:
        """A fresh negotiation starts: go back to the configured wishes."""

    @abstractmethod
    def build_request(self) -> list[Option]:
        """The options of our next Configure-Request."""

    @abstractmethod
    def judge_option(self, option: Option) -> Judgement:
        """Ack, Nak (with a suggestion) or Reject one option of the peer's request."""

    def request_hints(self, options: Sequence[Option]) -> list[Option]:
        """Options to add to a Nak because the peer left them out of ``options``."""
        return []

    @abstractmethod
    def peer_request_acked(self, options: Sequence[Option]) -> None:
        """We sent a Configure-Ack for ``options``: they are the peer's settings now."""

    @abstractmethod
    def our_request_acked(self, options: Sequence[Option]) -> None:
        """The peer acked our request ``options``: they are our settings now."""

    @abstractmethod
    def our_request_naked(self, options: Sequence[Option]) -> None:
        """Adjust the next request to the peer's Nak."""

    @abstractmethod
    def our_request_rejected(self, options: Sequence[Option]) -> None:
        """Leave the rejected options out of the next request."""

    def layer_up(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Hook for This-Layer-Up, before the :class:`LayerUp` event is queued."""

    def layer_down(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Hook for This-Layer-Down, before the :class:`LayerDown` event is queued."""


#: Every event the generic engine queues (protocol modules add their own).
FsmEvent = (
    LayerUp | LayerDown | LayerStarted | LayerFinished | TerminateReceived | CodeRejected | NegotiationFailed
)


class ControlProtocol(OptionHandler):
    """One protocol of the LCP family driven by :data:`TRANSITIONS`.

    The session calls :meth:`up`/:meth:`down` for the lower layer and :meth:`open`/
    :meth:`close` for administrative control, feeds every packet of :attr:`protocol` to
    :meth:`receive_packet`, sends what :meth:`packets_to_send` returns and drains events.
    Subclasses may handle codes beyond 1-7 by listing them in :attr:`extra_codes` and
    overriding :meth:`receive_extra`.
    """

    #: Codes beyond 1-7 that this protocol implements (anything else gets a Code-Reject).
    extra_codes: frozenset[int] = frozenset()

    __slots__ = (
        '_deadline', '_events', '_failure', '_last_id', '_naks_received', '_naks_sent', '_now', '_out',
        '_reply', '_reply_acked', '_req_answered', '_req_data', '_req_id', '_req_options',
        '_restart_count', '_state', '_term_id', '_term_reason', '_trigger', 'counters', 'fsm_config',
        'peer_mru', 'protocol',
    )

    def __init__(self, protocol: int, fsm: FsmConfig) -> None:
        self.protocol = int(protocol)
        self.fsm_config = fsm
        #: Size limit for packets we build from peer data (Code-Reject, Echo-Reply...): the
        #: session sets it to the peer's MRU once LCP is up.
        self.peer_mru = 1500
        self.counters: Counter[str] = Counter()
        self._state = State.INITIAL
        self._restart_count = 0
        self._deadline: float | None = None
        self._now = 0.0
        self._last_id = 0
        self._req_id = 0
        self._req_data = b""
        self._req_options: list[Option] = []
        self._req_answered = True
        self._term_id: int | None = None
        self._term_reason = b""
        self._naks_sent = 0
        self._naks_received = 0
        self._reply: Packet | None = None
        self._reply_acked: list[Option] | None = None
        self._trigger: Packet | None = None
        self._failure: NegotiationFailed | None = None
        self._out: list[bytes] = []
        self._events: list[object] = []

    # --- public API -----------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is State.OPENED

    def up(self, now: float) -> None:
        """The lower layer is up."""
        self._run(Event.UP, now)

    def down(self, now: float) -> None:
        """The lower layer went down."""
        self._run(Event.DOWN, now)

    def open(self, now: float) -> None:
        """Administrative Open: the layer may negotiate."""
        self._run(Event.OPEN, now)

    def close(self, now: float, reason: str | bytes = b"") -> None:
        """Administrative Close; ``reason`` goes into our Terminate-Request."""
        self._term_reason = reason.encode("utf-8", "replace") if isinstance(reason, str) else bytes(reason)
        self._run(Event.CLOSE, now)

    def receive_packet(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """One packet of this protocol (the PPP information field).  Never raises for bad input."""
        self._now = now
        self.counters["rx_packets"] += 1
        try:
            packet = Packet.decode(data)
            self._dispatch(packet)
        except PptpkitError:
            self.counters["rx_malformed"] += 1
        finally:
            self._trigger = None
            self._reply = None
            self._reply_acked = None
        self._check_failure()

    def packets_to_send(self) -> list[bytes]:
        """Control packets queued for the peer, oldest first (without the PPP frame header)."""
        out = self._out
        self._out = []
        return out

    def next_event(self) -> object | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if self._restart_count <= 0:
                self.counters["timed_out"] += 1
            self._run(Event.TO_PLUS if self._restart_count > 0 else Event.TO_MINUS, now)

    def fail(self, event: NegotiationFailed) -> None:
        """Give up: queue ``event`` and close the layer once the current input is handled.

        Only the first failure of a negotiation is reported.
        """
        if self._failure is None:
            self._failure = event

    # --- helpers for subclasses -----------------------------------------------------------

    def new_identifier(self) -> int:
        self._last_id = (self._last_id + 1) & 0xFF
        return self._last_id

    def send(self, packet: Packet) -> None:
        if len(self._out) >= MAX_QUEUED_PACKETS:
            self.counters["tx_dropped_queue_full"] += 1
            return
        self.counters["tx_packets"] += 1
        self._out.append(packet.encode())

    def emit(self, event: object) -> None:
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self.counters["events_dropped"] += 1
            return
        self._events.append(event)

    def fit(self, data: bytes, overhead: int) -> bytes:
        """``data`` truncated so that ``overhead`` + data fits the peer's MRU."""
        return data[: max(0, self.peer_mru - overhead)]

    def receive_extra(self, packet: Packet) -> bool:
        """Handle a code from :attr:`extra_codes`; return False to Code-Reject it instead."""
        return False

    def code_rejected(self, code: int) -> None:
        """Hook: the peer Code-Rejected ``code``."""

    def fire(self, event: Event, trigger: Packet | None = None) -> None:
        """Run one automaton event from a subclass's packet handler (for RXR, RXJ...)."""
        if trigger is not None:
            self._trigger = trigger
        self._transition(event)

    # --- the automaton ----------------------------------------------------------------------

    def _run(self, event: Event, now: float) -> None:
        self._now = now
        self._transition(event)
        self._check_failure()

    def _check_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is None:
            return
        self.emit(failure)
        self._term_reason = failure.reason.encode("utf-8", "replace")
        self._transition(Event.CLOSE)

    def _transition(self, event: Event) -> None:
        old = self._state
        cell = TRANSITIONS.get((old, event))
        if cell is None:
            self.counters[f"illegal_{event.value}_in_{old.name.lower()}"] += 1
            return
        self._state = cell.next_state
        passive = self.fsm_config.passive and event is Event.TO_MINUS and old in _NEGOTIATING
        for action in cell.actions:
            if passive and action is Action.TLF:
                continue
            self._do(action, cell, old)
        if self._state not in TIMER_STATES:
            self._deadline = None
        if self.fsm_config.restart_on_open and FOOTNOTES.get((old, event)) == "r":
            self._transition(Event.DOWN)
            self._transition(Event.UP)

    def _do(self, action: Action, cell: Transition, old: State) -> None:
        # The branches exclude each other; the actions of a negotiation come first.
        cfg = self.fsm_config
        if action is Action.SCR:
            self._send_configure_request(fresh=old not in _NEGOTIATING)
        elif action is Action.SCA or action is Action.SCN:
            self._send_reply()
        elif action is Action.IRC:
            self._restart_count = cfg.max_terminate if Action.STR in cell.actions else cfg.max_configure
        elif action is Action.TLU:
            self.layer_up()
            self.emit(LayerUp(protocol=self.protocol))
        elif action is Action.TLD:
            self.layer_down()
            self.emit(LayerDown(protocol=self.protocol))
        elif action is Action.TLS:
            self.emit(LayerStarted(protocol=self.protocol))
        elif action is Action.TLF:
            self.emit(LayerFinished(protocol=self.protocol))
        elif action is Action.ZRC:
            self._restart_count = 0
            self._deadline = self._now + cfg.restart_interval
        elif action is Action.STR:
            if self._term_id is None:
                self._term_id = self.new_identifier()
            self.send(Packet(code=Code.TERMINATE_REQUEST, identifier=self._term_id, data=self._term_reason))
            self._restart_count -= 1
            self._deadline = self._now + cfg.restart_interval
        elif action is Action.STA:
            ident = self._trigger.identifier if self._trigger is not None else self.new_identifier()
            self.send(Packet(code=Code.TERMINATE_ACK, identifier=ident))
        elif action is Action.SCJ:
            if self._trigger is not None:
                rejected = self.fit(self._trigger.encode(), HEADER_SIZE)
                self.send(Packet(code=Code.CODE_REJECT, identifier=self.new_identifier(), data=rejected))
        elif action is Action.SER:
            self.send_echo_reply()

    def send_echo_reply(self) -> None:
        """The ``ser`` action; only LCP has Echo, so the default does nothing."""

    def _send_configure_request(self, *, fresh: bool) -> None:
        if fresh:
            self._naks_sent = 0
            self._naks_received = 0
            self.reset_negotiation()
        options = self.build_request()
        data = encode_options(options)
        # RFC 1661 5.1: a new Identifier whenever the data changes or a valid reply arrived;
        # an unchanged retransmission keeps it, so that a late answer to it still counts.
        if self._req_answered or data != self._req_data:
            self._req_id = self.new_identifier()
        self._req_data = data
        self._req_options = options
        self._req_answered = False
        self._term_id = None
        self.send(Packet(code=Code.CONFIGURE_REQUEST, identifier=self._req_id, data=data))
        self._restart_count -= 1
        self._deadline = self._now + self.fsm_config.restart_interval

    def _send_reply(self) -> None:
        if self._reply is None:
            return
        if self._reply_acked is not None:
            self.peer_request_acked(self._reply_acked)
        self.send(self._reply)

    # --- input ------------------------------------------------------------------------------

    def _dispatch(self, packet: Packet) -> None:
        code = packet.code
        self._trigger = packet
        if code == Code.CONFIGURE_REQUEST:
            self._receive_configure_request(packet)
        elif code in (Code.CONFIGURE_ACK, Code.CONFIGURE_NAK, Code.CONFIGURE_REJECT):
            self._receive_configure_reply(packet)
        elif code == Code.TERMINATE_REQUEST:
            if (self._state, Event.RTR) in TRANSITIONS:
                self.emit(TerminateReceived(protocol=self.protocol, reason=packet.data))
            self._transition(Event.RTR)
        elif code == Code.TERMINATE_ACK:
            self._transition(Event.RTA)
        elif code == Code.CODE_REJECT:
            self._receive_code_reject(packet)
        elif code in self.extra_codes and self.receive_extra(packet):
            pass
        else:
            self.counters["rx_unknown_code"] += 1
            self._transition(Event.RUC)

    def _receive_configure_request(self, packet: Packet) -> None:
        if self._state in (State.INITIAL, State.STARTING, State.CLOSED, State.CLOSING, State.STOPPING):
            # These cells answer without looking at the options (or are illegal).
            self._transition(Event.RCR_PLUS)
            return
        options = decode_options(packet.data)
        good = self._judge_request(packet.identifier, options)
        self._transition(Event.RCR_PLUS if good else Event.RCR_MINUS)

    def _judge_request(self, identifier: int, options: list[Option]) -> bool:
        rejected: list[Option] = []
        naked_originals: list[Option] = []
        suggestions: list[Option] = []
        seen: set[int] = set()
        for option in options:
            if option.type in seen:
                # Each option appears at most once in a request (RFC 1661 6): refuse repeats.
                rejected.append(option)
                continue
            seen.add(option.type)
            judgement = self.judge_option(option)
            if judgement.verdict is Verdict.REJECT:
                rejected.append(option)
            elif judgement.verdict is Verdict.NAK:
                naked_originals.append(option)
                suggestions.append(judgement.suggestion if judgement.suggestion is not None else option)
        converging = self._naks_sent < self.fsm_config.max_failure
        if not converging:
            # RFC 1661 4.6 Max-Failure: further Naks of peer options become Rejects, and the
            # hints for options the peer left out are no longer sent.
            rejected.extend(naked_originals)
            suggestions = []
        if rejected:
            self.counters["tx_configure_reject"] += 1
            data = encode_options(rejected)
            self._reply = Packet(code=Code.CONFIGURE_REJECT, identifier=identifier, data=data)
            return False
        if converging:
            suggestions.extend(self.request_hints(options))
        if suggestions:
            self._naks_sent += 1
            self.counters["tx_configure_nak"] += 1
            data = encode_options(suggestions)
            self._reply = Packet(code=Code.CONFIGURE_NAK, identifier=identifier, data=data)
            return False
        self._naks_sent = 0
        self._reply = Packet(code=Code.CONFIGURE_ACK, identifier=identifier, data=encode_options(options))
        self._reply_acked = options
        return True

    def _receive_configure_reply(self, packet: Packet) -> None:
        event = Event.RCA if packet.code == Code.CONFIGURE_ACK else Event.RCN
        if self._state not in _NEGOTIATING and self._state is not State.OPENED:
            # Closed/Stopped answer with Terminate-Ack, Closing/Stopping ignore: no matching.
            self._transition(event)
            return
        if packet.identifier != self._req_id or self._req_answered:
            self.counters["rx_stale_reply"] += 1
            return
        options = decode_options(packet.data)
        if packet.code == Code.CONFIGURE_ACK:
            if packet.data != self._req_data:
                self.counters["rx_bad_ack"] += 1
                return
            self._req_answered = True
            self.our_request_acked(options)
        elif packet.code == Code.CONFIGURE_REJECT:
            if not _is_subsequence(options, self._req_options):
                self.counters["rx_bad_reject"] += 1
                return
            self._req_answered = True
            self._count_nak_received()
            self.our_request_rejected(options)
        else:
            self._req_answered = True
            self._count_nak_received()
            self.our_request_naked(options)
        self._transition(event)

    def _count_nak_received(self) -> None:
        self._naks_received += 1
        if self._naks_received > self.fsm_config.max_nak_received:
            self.fail(
                NegotiationFailed(
                    protocol=self.protocol,
                    reason=f"no agreement after {self.fsm_config.max_nak_received} Configure-Nak/Reject",
                )
            )

    def _receive_code_reject(self, packet: Packet) -> None:
        if not packet.data:
            raise DecodeError("Code-Reject without the rejected packet")
        if (self._state, Event.RXJ_PLUS) not in TRANSITIONS:
            self.counters["illegal_code_reject"] += 1
            return
        code = packet.data[0]
        self.emit(CodeRejected(protocol=self.protocol, code=code))
        self.code_rejected(code)
        self._transition(Event.RXJ_MINUS if code in ESSENTIAL_CODES else Event.RXJ_PLUS)


def _is_subsequence(part: Sequence[Option], whole: Sequence[Option]) -> bool:
    """True when ``part`` lists options of ``whole`` unmodified and in the same order."""
    it = iter(whole)
    return all(any(p == w for w in it) for p in part)


def render_state_table(
    transitions: Mapping[tuple[State, Event], Transition] = TRANSITIONS,
    footnotes: Mapping[tuple[State, Event], str] = FOOTNOTES,
) -> str:
    """The automaton as a Markdown table in RFC 1661 4.1's notation, for docs/design.md.

    Rendered from :data:`TRANSITIONS`, not from the source rows, so the documentation shows what
    the engine runs; tests/unit/ppp/test_fsm_diagram.py fails when the copy in docs/design.md
    is stale (``python tools/fsm_diagram.py`` rewrites it).
    """
    header = "| event | " + " | ".join(f"{s.value} {s.name}" for s in State) + " |"
    lines = [header, "|---" * (len(State) + 1) + "|"]
    for event in Event:
        cells = []
        for state in State:
            cell = transitions.get((state, event))
            if cell is None:
                cells.append("-")
                continue
            actions = ",".join(a.value for a in cell.actions)
            target = f"{cell.next_state.value}{footnotes.get((state, event), '')}"
            cells.append(f"{actions}/{target}" if actions else target)
        lines.append(f"| {event.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
