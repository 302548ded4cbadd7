"""IPV6CP interface-identifier negotiation (RFC 5072 4.1)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from ppp_harness import Pair

from pptpkit.ppp.ipv6cp import ZERO_ID, Ipv6cpConfig, Ipv6cpEngine
from pptpkit.ppp.packet import Code, Option, Packet, decode_options

ID_A = bytes.fromhex("0200000000000001")
ID_B = bytes.fromhex("0000000000000002")


def counter_source(start: int) -> Ipv6cpConfig:
    numbers = itertools.count(start)
    return Ipv6cpConfig(id_source=lambda: next(numbers).to_bytes(8, "big"))


def run(a: Ipv6cpEngine, b: Ipv6cpEngine) -> Pair:
    pair = Pair(a, b)
    for eng in (a, b):
        eng.open(0)
        eng.up(0)
    pair.run(until=5)
    return pair


def test_distinct_ids_are_acked() -> None:
    a = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_A))
    b = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_B))
    run(a, b)
    assert a.result is not None and b.result is not None
    assert (a.result.local_id, a.result.peer_id) == (ID_A, ID_B)


def test_collision_is_resolved_with_a_nak() -> None:
    a = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_B, id_source=counter_source(50).id_source))
    b = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_B, id_source=counter_source(90).id_source))
    pair = run(a, b)
    assert a.result is not None and b.result is not None
    assert a.result.local_id != a.result.peer_id
    assert a.result.local_id == b.result.peer_id and a.result.peer_id == b.result.local_id
    assert [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_NAK]


def test_zero_id_gets_a_suggestion_with_u_bit_clear() -> None:
    a = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_A, id_source=lambda: b"\xff" * 8))
    b = Ipv6cpEngine(Ipv6cpConfig(interface_id=ZERO_ID))
    run(a, b)
    assert b.result is not None and b.result.local_id is not None
    assert b.result.local_id != ZERO_ID and b.result.local_id != ID_A
    assert b.result.local_id[0] & 0x02 == 0


def test_both_zero_is_rejected() -> None:
    a = Ipv6cpEngine(Ipv6cpConfig(interface_id=ZERO_ID))
    b = Ipv6cpEngine(Ipv6cpConfig(interface_id=ZERO_ID))
    pair = run(a, b)
    assert [p for p in pair.sent["ab"] if p[0] == Code.CONFIGURE_REJECT]
    assert a.is_open and a.result is not None and a.result.local_id is None


def test_compression_rejected() -> None:
    eng = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_A))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    comp = Option(type=2, data=b"\x00\x4f\x00\x0f")
    eng.receive_packet(
        Packet(code=1, identifier=1, data=Option(type=1, data=ID_B).encode() + comp.encode()).encode(), 0
    )
    reply = Packet.decode(eng.packets_to_send()[0])
    assert reply.code == Code.CONFIGURE_REJECT and decode_options(reply.data) == [comp]


def test_random_ids_have_u_bit_clear() -> None:
    eng = Ipv6cpEngine(Ipv6cpConfig(id_source=lambda: b"\xff" * 8))
    eng.open(0)
    eng.up(0)
    ident = decode_options(Packet.decode(eng.packets_to_send()[0]).data)[0].data
    assert ident[0] == 0xFD


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.binary(max_size=10)), max_size=5), st.sampled_from([1, 2, 3, 4])
)
def test_fuzz_receive_path(options: list[tuple[int, bytes]], code: int) -> None:
    eng = Ipv6cpEngine(Ipv6cpConfig(interface_id=ID_A))
    eng.open(0)
    eng.up(0)
    data = b"".join(Option(type=t, data=d).encode() for t, d in options)
    eng.receive_packet(Packet(code=code, identifier=eng._req_id, data=data).encode(), 1)
    for out in eng.packets_to_send():
        Packet.decode(out)
