"""LCP in pairs on a virtual clock: options, auth-protocol dance, magic loopback, echo."""

from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ppp_harness import Pair

from pptpkit.auth.methods import AuthMethod
from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import FsmConfig, LayerFinished, LayerUp, State
from pptpkit.ppp.lcp import (
    AuthNegotiationFailed,
    EchoTimeout,
    LcpConfig,
    LcpEngine,
    LcpOption,
    LoopbackDetected,
    ProtocolRejected,
)
from pptpkit.ppp.packet import Code, Option, Packet, decode_options


def lcp(seed: int = 1, **kw: object) -> LcpEngine:
    rng = random.Random(seed)
    return LcpEngine(LcpConfig(magic_source=lambda: rng.getrandbits(32), **kw))  # type: ignore[arg-type]


def start(pair: Pair) -> None:
    for eng in (pair.a, pair.b):
        eng.open(pair.now)
        eng.up(pair.now)


def state_of(eng: LcpEngine) -> State:
    return eng.state


def test_default_request_is_what_pppd_sends() -> None:
    eng = lcp()
    eng.open(0)
    eng.up(0)
    req = Packet.decode(eng.packets_to_send()[0])
    types = [o.type for o in decode_options(req.data)]
    assert types == [LcpOption.ACCM, LcpOption.MAGIC_NUMBER, LcpOption.PFC, LcpOption.ACFC]


def test_server_and_client_agree() -> None:
    server = lcp(1, auth_require=(AuthMethod.MSCHAP_V2,), mru=1400)
    client = lcp(2)
    pair = Pair(server, client)
    start(pair)
    pair.run(until=1)
    assert state_of(server) is State.OPENED and state_of(client) is State.OPENED
    s, c = server.result, client.result
    assert s is not None and c is not None
    assert s.auth_peer is AuthMethod.MSCHAP_V2 and s.auth_self is None
    assert c.auth_self is AuthMethod.MSCHAP_V2 and c.auth_peer is None
    assert s.local_mru == 1400 and c.peer_mru == 1400 and client.peer_mru == 1400
    assert s.peer_pfc and s.peer_acfc and c.local_pfc
    assert s.local_magic == c.peer_magic != 0 and s.peer_magic == c.local_magic != 0
    assert s.local_magic != s.peer_magic


@pytest.mark.parametrize(
    ("required", "accepted", "expected"),
    [
        # The client refuses MS-CHAPv2 and prefers PAP; the server allows PAP: it jumps there.
        ((AuthMethod.MSCHAP_V2, AuthMethod.CHAP_MD5, AuthMethod.PAP), (AuthMethod.PAP,), AuthMethod.PAP),
        # The client suggests EAP, which the server does not allow: it moves to its next one.
        (
            (AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1),
            (AuthMethod.EAP, AuthMethod.MSCHAP_V1),
            AuthMethod.MSCHAP_V1,
        ),
        ((AuthMethod.EAP,), (AuthMethod.EAP, AuthMethod.PAP), AuthMethod.EAP),
    ],
)
def test_auth_protocol_nak_dance(
    required: tuple[AuthMethod, ...], accepted: tuple[AuthMethod, ...], expected: AuthMethod
) -> None:
    server = lcp(1, auth_require=required)
    client = lcp(2, auth_accept=accepted)
    pair = Pair(server, client)
    start(pair)
    pair.run(until=1)
    assert server.result is not None and client.result is not None
    assert server.result.auth_peer is expected and client.result.auth_self is expected
    auth_naks = [
        o
        for p in pair.sent["ba"]
        if p[0] == Code.CONFIGURE_NAK
        for o in decode_options(Packet.decode(p).data)
        if o.type == LcpOption.AUTH_PROTOCOL
    ]
    assert [AuthMethod.from_option_data(o.data) for o in auth_naks] == [accepted[0]] * len(auth_naks)
    assert len(auth_naks) == (0 if expected is required[0] else 1)


def test_auth_no_common_method_fails() -> None:
    server = lcp(1, auth_require=(AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1))
    client = lcp(2, auth_accept=(AuthMethod.PAP,))
    pair = Pair(server, client)
    start(pair)
    pair.run(until=30)
    failures = pair.of_type("a", AuthNegotiationFailed)
    assert len(failures) == 1
    assert not pair.of_type("a", LayerUp)
    assert state_of(server) in (State.CLOSED, State.STOPPED)


def test_auth_refused_is_rejected_and_fails_the_authenticator() -> None:
    server = lcp(1, auth_require=(AuthMethod.PAP,))
    client = lcp(2, auth_accept=())
    pair = Pair(server, client)
    start(pair)
    pair.run(until=30)
    rejects = [p for p in pair.sent["ba"] if p[0] == Code.CONFIGURE_REJECT]
    assert rejects and decode_options(Packet.decode(rejects[0]).data)[0].type == LcpOption.AUTH_PROTOCOL
    assert pair.of_type("a", AuthNegotiationFailed)
    assert not pair.of_type("a", LayerUp)


def test_unknown_options_rejected_with_raw_bytes_and_small_mru_naked() -> None:
    eng = lcp()
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    odd = [Option(type=13, data=b"\x06"), Option(type=LcpOption.QUALITY_PROTOCOL, data=b"\xc0\x25\0\0\0\x10")]
    data = b"".join(o.encode() for o in [Option(type=1, data=b"\x05\xdc"), *odd])
    eng.receive_packet(Packet(code=1, identifier=9, data=data).encode(), 0)
    rej = Packet.decode(eng.packets_to_send()[0])
    assert rej.code == Code.CONFIGURE_REJECT and rej.identifier == 9
    assert decode_options(rej.data) == odd
    eng.receive_packet(
        Packet(code=1, identifier=10, data=Option(type=1, data=b"\x00\x40").encode()).encode(), 0
    )
    nak = Packet.decode(eng.packets_to_send()[0])
    assert nak.code == Code.CONFIGURE_NAK and decode_options(nak.data) == [Option(type=1, data=b"\x00\x80")]


def test_peer_nak_of_mru_and_accm_adjusts_request() -> None:
    eng = lcp(mru=1400, accm=0)
    eng.open(0)
    eng.up(0)
    req = Packet.decode(eng.packets_to_send()[0])
    nak = [Option(type=1, data=struct.pack("!H", 1300)), Option(type=2, data=b"\x00\x0a\x00\x00")]
    eng.receive_packet(
        Packet(code=3, identifier=req.identifier, data=b"".join(o.encode() for o in nak)).encode(), 0
    )
    opts = {o.type: o.data for o in decode_options(Packet.decode(eng.packets_to_send()[0]).data)}
    assert opts[1] == struct.pack("!H", 1300) and opts[2] == b"\x00\x0a\x00\x00"


def test_looped_back_link_is_detected() -> None:
    eng = lcp(loopback_fail=4)
    eng.open(0)
    eng.up(0)
    events: list[object] = []
    for _ in range(40):
        out = eng.packets_to_send()
        if not out:
            break
        for pkt in out:
            eng.receive_packet(pkt, 0)
        events.extend(iter(eng.next_event, None))
    loops = [e for e in events if isinstance(e, LoopbackDetected)]
    assert len(loops) == 1
    assert not [e for e in events if isinstance(e, LayerUp)]
    assert state_of(eng) in (State.CLOSING, State.CLOSED, State.STOPPING, State.STOPPED)


def test_magic_collision_between_real_peers_is_resolved() -> None:
    # Both sides start with the same magic number: each Naks the other, then they diverge.
    a = LcpEngine(LcpConfig(magic_source=itertools.chain([7, 7], itertools.count(100)).__next__))
    b = LcpEngine(LcpConfig(magic_source=itertools.chain([7, 7], itertools.count(200)).__next__))
    pair = Pair(a, b)
    start(pair)
    pair.run(until=5)
    assert a.result is not None and b.result is not None
    assert a.result.local_magic != b.result.local_magic
    assert a.result.local_magic == b.result.peer_magic


def opened_pair(echo_interval: float = 10, echo_failure: int = 3) -> Pair:
    a = lcp(1, echo_interval=echo_interval, echo_failure=echo_failure)
    b = lcp(2)
    pair = Pair(a, b)
    start(pair)
    pair.run(until=0.5)
    assert a.is_open and b.is_open
    return pair


def test_echo_keepalive_is_answered() -> None:
    pair = opened_pair()
    pair.run(until=100)
    echoes = [p for p in pair.sent["ab"] if p[0] == Code.ECHO_REQUEST]
    replies = [p for p in pair.sent["ba"] if p[0] == Code.ECHO_REPLY]
    assert len(echoes) == 10 and len(replies) == 10
    a_result, b_result = pair.a.result, pair.b.result
    assert a_result is not None and b_result is not None
    assert Packet.decode(echoes[0]).data == struct.pack("!I", a_result.local_magic)
    assert Packet.decode(replies[0]).data == struct.pack("!I", b_result.local_magic)
    assert Packet.decode(replies[0]).identifier == Packet.decode(echoes[0]).identifier
    assert pair.a.is_open and not pair.of_type("a", EchoTimeout)


def test_echo_failure_closes_the_link() -> None:
    pair = opened_pair()
    pair.keep = lambda d, p: not (d == "ba" and p[0] == Code.ECHO_REPLY)
    pair.run(until=39)
    assert pair.a.is_open
    pair.run(until=40)
    assert pair.of_type("a", EchoTimeout) == [EchoTimeout(unanswered=3)]
    assert not pair.a.is_open
    pair.run(until=60)
    assert pair.of_type("a", LayerFinished)
    assert state_of(pair.a) is State.CLOSED


def test_echo_with_our_own_magic_counts_as_loopback() -> None:
    pair = opened_pair(echo_interval=0)
    a = pair.a
    assert a.result is not None
    mine = struct.pack("!I", a.result.local_magic)
    for i in range(10):
        a.receive_packet(Packet(code=Code.ECHO_REQUEST, identifier=i, data=mine).encode(), pair.now)
        assert a.packets_to_send() == [] or i == 9
    assert a.counters["loopback_suspected"] == 10
    assert any(isinstance(e, LoopbackDetected) for e in iter(a.next_event, None))


def test_discard_identification_time_remaining_are_tolerated() -> None:
    pair = opened_pair(echo_interval=0)
    b = pair.b
    for code in (Code.DISCARD_REQUEST, Code.IDENTIFICATION, Code.TIME_REMAINING):
        b.receive_packet(Packet(code=code, identifier=1, data=b"\0\0\0\0hello").encode(), pair.now)
    assert b.packets_to_send() == []
    assert b.counters["rx_identification"] == 1 and b.counters["rx_time_remaining"] == 1
    assert b.counters["rx_discard_request"] == 1
    assert b.is_open


def test_protocol_reject_send_and_receive() -> None:
    pair = opened_pair(echo_interval=0)
    a, b = pair.a, pair.b
    assert a.send_protocol_reject(0x8057, b"\x01\x01\x00\x0e" + b"x" * 2000)
    pkt = Packet.decode(a.packets_to_send()[0])
    assert pkt.code == Code.PROTOCOL_REJECT and pkt.data[:2] == b"\x80\x57"
    assert len(pkt.encode()) == 1500  # truncated to the peer's MRU
    b.receive_packet(pkt.encode(), pair.now)
    events = list(iter(b.next_event, None))
    assert events == [ProtocolRejected(rejected_protocol=0x8057, information=pkt.data[2:])]
    assert b.is_open
    # Protocol-Reject of LCP itself is catastrophic (RXJ-).
    b.receive_packet(Packet(code=8, identifier=3, data=b"\xc0\x21\x01").encode(), pair.now)
    assert not b.is_open


def test_protocol_reject_only_in_opened() -> None:
    eng = lcp()
    assert not eng.send_protocol_reject(0x80FD, b"")
    eng.receive_packet(Packet(code=8, identifier=1, data=b"\x80\xfd").encode(), 0)
    assert eng.next_event() is None and eng.packets_to_send() == []


def test_code_rejected_echo_stops_keepalive() -> None:
    pair = opened_pair()
    pair.run(until=10)
    pair.a.receive_packet(Packet(code=7, identifier=1, data=b"\x09\x01\x00\x08\0\0\0\0").encode(), pair.now)
    pair.keep = lambda d, p: p[0] != Code.ECHO_REPLY
    pair.run(until=200)
    assert pair.a.is_open and not pair.of_type("a", EchoTimeout)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        LcpConfig(mru=50)
    with pytest.raises(ConfigError):
        LcpConfig(auth_require=(AuthMethod.PAP, AuthMethod.PAP))
    with pytest.raises(ConfigError):
        LcpConfig(echo_interval=-1)


def test_magic_source_returning_zero_is_survived() -> None:
    eng = LcpEngine(LcpConfig(magic_source=lambda: 0))
    assert eng.magic not in (None, 0)


def test_lost_configure_ack_recovers() -> None:
    dropped: list[bytes] = []

    def keep(direction: str, pkt: bytes) -> bool:
        if pkt[0] == Code.CONFIGURE_ACK and not dropped:
            dropped.append(pkt)
            return False
        return True

    pair = Pair(
        lcp(1),
        lcp(2),
        keep=keep,
    )
    start(pair)
    pair.run(until=10)
    assert pair.a.is_open and pair.b.is_open and dropped


def test_fsm_settings_reach_the_automaton() -> None:
    pair = Pair(lcp(1, fsm=FsmConfig(max_configure=2, restart_interval=1)), lcp(2), keep=lambda d, p: False)
    start(pair)
    pair.run(until=10)
    assert len([p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REQUEST]) == 2


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2), st.lists(st.binary(max_size=60), max_size=6))
def test_fuzz_receive_path(stage: int, packets: list[bytes]) -> None:
    pair = opened_pair() if stage == 2 else Pair(lcp(1, auth_require=(AuthMethod.PAP,)), lcp(2))
    if stage == 1:
        start(pair)
    eng = pair.a
    for data in packets:
        eng.receive_packet(data, pair.now)
    eng.handle_timer(pair.now + 50)
    for out in eng.packets_to_send():
        Packet.decode(out)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.binary(max_size=8)), max_size=8),
    st.sampled_from([1, 2, 3, 4]),
)
def test_fuzz_configure_packets(options: list[tuple[int, bytes]], code: int) -> None:
    pair = opened_pair(echo_interval=0) if code != 1 else Pair(lcp(1), lcp(2))
    eng = pair.a
    if code == 1:
        start(pair)
        eng.packets_to_send()
    data = b"".join(Option(type=t, data=d).encode() for t, d in options)
    eng.receive_packet(Packet(code=code, identifier=eng._req_id, data=data).encode(), 1.0)
    for out in eng.packets_to_send():
        Packet.decode(out)
