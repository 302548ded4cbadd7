"""Fuzzing the control-connection engine: nothing the peer sends may raise out of receive_data,
and whatever the engine answers must itself be well-formed."""

from __future__ import annotations

import random
from collections.abc import Callable

from control_harness import Link, any_message, drain, split_messages
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.control import (
    CallIdAllocator,
    ConnectionClosed,
    ControlConfig,
    ControlConnection,
    Role,
)
from pptpkit.control.messages import (
    EchoRequest,
    OutgoingCallReply,
    OutgoingCallRequest,
    SetLinkInfo,
    StartControlConnectionReply,
    StartControlConnectionRequest,
)


def _fresh_server(ids: CallIdAllocator) -> ControlConnection:
    return ControlConnection(ControlConfig(role=Role.SERVER, accept_incoming_calls=True), now=0.0,
                             rng=random.Random(1), call_ids=ids)


def _fresh_client(ids: CallIdAllocator) -> ControlConnection:
    conn = ControlConnection(ControlConfig(role=Role.CLIENT, accept_incoming_calls=True), now=0.0,
                             rng=random.Random(1), call_ids=ids)
    conn.data_to_send()
    return conn


def _linked(role: Role, ids: CallIdAllocator) -> ControlConnection:
    """An established engine of ``role`` holding one established call (id from ``ids``)."""
    link = Link(
        ControlConfig(role=Role.CLIENT, accept_incoming_calls=True),
        ControlConfig(role=Role.SERVER),
        server_ids=ids if role is Role.SERVER else None,
        start=0.0,
    )
    if role is Role.CLIENT:
        link.client = ControlConnection(ControlConfig(role=Role.CLIENT, accept_incoming_calls=True), now=0.0,
                                        rng=random.Random(1), call_ids=ids)
    link.up()
    link.call()
    engine = link.client if role is Role.CLIENT else link.server
    drain(engine)
    engine.data_to_send()
    return engine


FACTORIES: list[Callable[[CallIdAllocator], ControlConnection]] = [
    _fresh_server,
    _fresh_client,
    lambda ids: _linked(Role.SERVER, ids),
    lambda ids: _linked(Role.CLIENT, ids),
]

# Streams that reach deep states: a start message first, then anything.
_starts = st.sampled_from([
    StartControlConnectionRequest().encode(),
    StartControlConnectionReply().encode(),
    b"",
])
_valid_stream = st.lists(any_message, max_size=12).map(lambda ms: b"".join(m.encode() for m in ms))
_call_ids = st.integers(0, 0xFFFF)
_targeted = st.one_of(
    _call_ids.map(lambda c: OutgoingCallRequest(call_id=c).encode()),
    _call_ids.map(lambda c: OutgoingCallReply(call_id=c, peer_call_id=c).encode()),
    _call_ids.map(lambda c: SetLinkInfo(peer_call_id=c).encode()),
    st.just(EchoRequest(identifier=1).encode()),
)


def _check_invariants(engine: ControlConnection, ids: CallIdAllocator, out: bytes) -> None:
    split_messages(out)  # everything we said is a well-formed message
    events = drain(engine)
    closes = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closes) <= 1
    if engine.closed:
        assert engine.get_timer() is None
        assert len(ids) == 0, "a closed connection must return every call ID"
        if closes:
            assert events[-1] is closes[0]
    else:
        assert not closes
        assert len(ids) == len(engine.calls)


def _run(factory_index: int, chunks: list[bytes], ticks: list[float]) -> None:
    ids = CallIdAllocator(rng=random.Random(5))
    engine = FACTORIES[factory_index](ids)
    now = 0.0
    out = bytearray()
    for i, chunk in enumerate(chunks):
        engine.receive_data(chunk, now)
        if i < len(ticks):
            now += ticks[i]
            engine.handle_timer(now)
        out += engine.data_to_send()
    _check_invariants(engine, ids, bytes(out))


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), chunks=st.lists(st.binary(max_size=300), max_size=6),
       ticks=st.lists(st.floats(0, 100), max_size=6))
def test_fuzz_engine_random_bytes(which: int, chunks: list[bytes], ticks: list[float]) -> None:
    _run(which, chunks, ticks)


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), start=_starts, body=st.lists(st.one_of(_valid_stream, _targeted), max_size=4),
       ticks=st.lists(st.floats(0, 100), max_size=6), split=st.integers(1, 64))
def test_fuzz_engine_valid_messages(which: int, start: bytes, body: list[bytes], ticks: list[float],
                                    split: int) -> None:
    stream = start + b"".join(body)
    chunks = [stream[i : i + split] for i in range(0, len(stream), split)]
    _run(which, chunks, ticks)


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 3), start=_starts, body=_valid_stream,
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 10_000), ticks=st.lists(st.floats(0, 100), max_size=3))
def test_fuzz_engine_mutated_and_truncated(which: int, start: bytes, body: bytes,
                                           flips: list[tuple[int, int]], cut: int,
                                           ticks: list[float]) -> None:
    data = bytearray(start + body)
    if data:
        for pos, value in flips:
            data[pos % len(data)] = value
        del data[cut % (len(data) + 1) :]
    _run(which, [bytes(data)], ticks)
