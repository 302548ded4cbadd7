"""CCP/MPPE: every pairing of pppd-style MPPE policies, resets, refused compressors."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ppp_harness import Pair

from pptpkit.errors import ConfigError
from pptpkit.ppp.ccp import (
    MPPC_C,
    MPPE_H,
    MPPE_L,
    MPPE_M,
    MPPE_S,
    CcpConfig,
    CcpEngine,
    MppeFailed,
    MppeParams,
    ResetAcked,
    ResetRequested,
)
from pptpkit.ppp.fsm import LayerUp
from pptpkit.ppp.packet import Code, Option, Packet, decode_options

LENGTHS = {"40": (40,), "56": (56,), "128": (128,), "40+128": (40, 128), "all": (40, 56, 128)}


def policy(lengths: str, stateful: bool, required: bool) -> CcpConfig:
    keys = LENGTHS.get(lengths, ())
    return CcpConfig(
        mppe_40=40 in keys,
        mppe_56=56 in keys,
        mppe_128=128 in keys,
        mppe_stateful=stateful,
        mppe_required=required,
    )


POLICIES = [("none", False, False)] + [
    (k, sf, req) for k in LENGTHS for sf in (False, True) for req in (False, True)
]


def expected(a: tuple[str, bool, bool], b: tuple[str, bool, bool]) -> MppeParams | None:
    common = set(LENGTHS.get(a[0], ())) & set(LENGTHS.get(b[0], ()))
    if not common:
        return None
    return MppeParams(key_bits=max(common), stateless=not (a[1] and b[1]))


def run(a: CcpEngine, b: CcpEngine) -> Pair:
    pair = Pair(a, b)
    for eng in (a, b):
        eng.open(0)
        eng.up(0)
    pair.run(until=60)
    return pair


@pytest.mark.parametrize(
    ("pa", "pb"), list(itertools.product(POLICIES, POLICIES)), ids=lambda p: "-".join(map(str, p))
)
def test_every_policy_pairing(pa: tuple[str, bool, bool], pb: tuple[str, bool, bool]) -> None:
    a, b = CcpEngine(policy(*pa)), CcpEngine(policy(*pb))
    pair = run(a, b)
    want = expected(pa, pb)
    for side, eng, pol in (("a", a, pa), ("b", b, pb)):
        failures = pair.of_type(side, MppeFailed)
        if pol[2] and want is None:
            assert len(failures) == 1, side
            assert not eng.is_open
        else:
            assert failures == [], side
    if want is not None or not (pa[2] or pb[2]):
        assert a.is_open and b.is_open
        assert a.result is not None and b.result is not None
        assert a.result.rx == a.result.tx == b.result.rx == b.result.tx == want
        # The agreed option carries exactly one key length.
        acks = [Packet.decode(p) for d in ("ab", "ba") for p in pair.sent[d] if p[0] == Code.CONFIGURE_ACK]
        for ack in acks:
            for opt in decode_options(ack.data):
                bits = struct.unpack("!I", opt.data)[0]
                assert bin(bits & (MPPE_S | MPPE_M | MPPE_L)).count("1") == 1


def test_pppd_server_request_is_acked_as_is() -> None:
    # pppd with require-mppe-128 sends +H +S only; a permissive client acks it unchanged.
    eng = CcpEngine(policy("all", True, False))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    offer = Option(type=18, data=struct.pack("!I", MPPE_H | MPPE_S))
    eng.receive_packet(Packet(code=1, identifier=1, data=offer.encode()).encode(), 0)
    reply = Packet.decode(eng.packets_to_send()[0])
    assert reply.code == Code.CONFIGURE_ACK and reply.data == offer.encode()


def test_nak_picks_strongest_and_clears_unknown_bits() -> None:
    eng = CcpEngine(policy("40+128", False, True))
    eng.open(0)
    eng.up(0)
    eng.packets_to_send()
    offer = Option(type=18, data=struct.pack("!I", MPPE_S | MPPE_L | MPPE_M | MPPC_C))
    eng.receive_packet(Packet(code=1, identifier=1, data=offer.encode()).encode(), 0)
    reply = Packet.decode(eng.packets_to_send()[0])
    assert reply.code == Code.CONFIGURE_NAK
    assert decode_options(reply.data) == [Option(type=18, data=struct.pack("!I", MPPE_H | MPPE_S))]


def test_deflate_and_bsd_refused() -> None:
    eng = CcpEngine(policy("none", False, False))
    eng.open(0)
    eng.up(0)
    assert Packet.decode(eng.packets_to_send()[0]).data == b""
    offers = [
        Option(type=26, data=b"\x78\x00"),
        Option(type=24, data=b"\x78\x00"),
        Option(type=21, data=b"\x2f"),
    ]
    eng.receive_packet(Packet(code=1, identifier=1, data=b"".join(o.encode() for o in offers)).encode(), 0)
    reply = Packet.decode(eng.packets_to_send()[0])
    assert reply.code == Code.CONFIGURE_REJECT and decode_options(reply.data) == offers


def test_reset_request_and_ack() -> None:
    a, b = CcpEngine(), CcpEngine()
    assert a.send_reset_request() is None
    pair = run(a, b)
    ident = a.send_reset_request()
    assert ident is not None
    pair.pump()
    assert pair.of_type("b", ResetRequested) == [ResetRequested(identifier=ident, data=b"")]
    assert b.send_reset_ack(ident)
    pair.pump()
    assert pair.of_type("a", ResetAcked) == [ResetAcked(identifier=ident, data=b"")]
    assert a.is_open and b.is_open


def test_required_mppe_missing_from_peer_request_fails_at_up() -> None:
    # A peer that never offers MPPE in its own request, yet acks ours.
    class Silent(CcpEngine):
        def build_request(self) -> list[Option]:
            return []

    a, b = CcpEngine(policy("128", False, True)), Silent(policy("128", False, False))
    pair = run(a, b)
    assert len(pair.of_type("a", MppeFailed)) == 1
    assert pair.of_type("a", LayerUp) and a.result is None


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        policy("none", False, True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([18, 21, 26, 1]), st.binary(max_size=6)), max_size=5),
    st.sampled_from([1, 2, 3, 4, 14, 15]),
    st.binary(max_size=20),
)
def test_fuzz_receive_path(options: list[tuple[int, bytes]], code: int, junk: bytes) -> None:
    eng = CcpEngine(policy("all", True, True))
    eng.open(0)
    eng.up(0)
    data = b"".join(Option(type=t, data=d).encode() for t, d in options)
    eng.receive_packet(Packet(code=code, identifier=eng._req_id, data=data).encode(), 1)
    eng.receive_packet(junk, 1)
    for out in eng.packets_to_send():
        Packet.decode(out)
    while eng.next_event() is not None:
        pass
