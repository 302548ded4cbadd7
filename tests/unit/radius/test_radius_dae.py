"""RFC 5176 requests through the DAE engine: authenticators, clients, retransmissions, answers,
and a fuzzed decoder (only our own error may escape: here, nothing may)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.radius import crypto
from pptpkit.radius.dae import DaeEngine, DaeRequest, ErrorCause
from pptpkit.radius.packet import Code, RawAttribute, RawPacket, decode_attributes, encode_attributes

SECRET = b"dae-secret"
SERVER = ("192.0.2.10", 40000)
WALL = 1_796_000_000.0  # our clock, seconds since the epoch (December 2026)


def request(code: Code = Code.DISCONNECT_REQUEST, attrs: list[tuple[str, object]] | None = None,
            secret: bytes = SECRET, ident: int = 7, with_ma: bool = True,
            extra: tuple[RawAttribute, ...] = ()) -> bytes:
    raw = encode_attributes(attrs or [("Acct-Session-Id", "5F00000000000001")], secret=secret,
                            authenticator=b"\0" * 16, salt=lambda: b"\x80\x01")  # type: ignore[arg-type]
    head = (RawAttribute(crypto.MESSAGE_AUTHENTICATOR_TYPE, b"\0" * 16),) if with_ma else ()
    draft = RawPacket(code=code, identifier=ident, authenticator=b"\0" * 16,
                      attributes=(*head, *raw, *extra)).encode()
    if with_ma:
        draft = draft[:22] + crypto.message_authenticator(draft, secret, b"\0" * 16) + draft[38:]
    return draft[:4] + crypto.accounting_request_authenticator(draft, secret) + draft[20:]


def test_a_good_request_and_its_signed_answer() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    got = engine.receive(request(), SERVER, wall=WALL)
    assert isinstance(got, DaeRequest) and got.disconnect
    assert got.values("Acct-Session-Id") == ["5F00000000000001"]
    answer = engine.answer(got, ack=False, error=ErrorCause.SESSION_CONTEXT_NOT_FOUND)
    packet = RawPacket.decode(answer)
    assert packet.code == Code.DISCONNECT_NAK and packet.identifier == 7
    assert crypto.verify_response_authenticator(answer, got.authenticator, SECRET)
    assert crypto.verify_message_authenticator(answer, SECRET, got.authenticator)
    attrs = decode_attributes(packet.attributes, secret=SECRET, request_authenticator=got.authenticator)
    assert [a.value for a in attrs if a.name == "Error-Cause"] == [503]
    # The server retransmits: the same answer, and the request is not handed over again.
    assert engine.receive(request(), SERVER, wall=WALL) == answer and engine.stats.duplicates == 1


def test_what_is_dropped_silently() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET}, require_message_authenticator=True)
    assert engine.receive(request(), ("192.0.2.99", 1), wall=WALL) is None
    assert engine.receive(request(secret=b"wrong"), SERVER, wall=WALL) is None
    assert engine.receive(request(with_ma=False), SERVER, wall=WALL) is None
    assert engine.receive(request(code=Code.ACCESS_REQUEST), SERVER, wall=WALL) is None
    assert engine.receive(b"\x28\x01\x00", SERVER, wall=WALL) is None
    s = engine.stats
    assert (s.dropped_unknown_client, s.dropped_bad_authenticator, s.dropped_missing_message_authenticator,
            s.dropped_bad_code, s.dropped_malformed) == (1, 1, 1, 1, 1)


def test_coa_ack() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    coa = request(Code.COA_REQUEST, [("User-Name", "alice"), ("Session-Timeout", 60)])
    got = engine.receive(coa, SERVER, wall=WALL)
    assert isinstance(got, DaeRequest) and not got.disconnect and got.values("Session-Timeout") == [60]
    assert RawPacket.decode(engine.answer(got, ack=True)).code == Code.COA_ACK


def test_event_timestamp_outside_the_window_is_a_replay() -> None:
    # RFC 5176 3.5: the timestamp is the only thing that tells a recorded request replayed later
    # from a fresh one, both being signed correctly.
    engine = DaeEngine({"192.0.2.10": SECRET})
    stamp = int(WALL)
    for offset, accepted in ((0, True), (-300, True), (300, True), (-301, False), (301, False),
                             (-86_400, False)):
        attrs: list[tuple[str, object]] = [("User-Name", "alice"), ("Event-Timestamp", stamp + offset)]
        data = request(attrs=attrs, ident=offset & 0xFF)
        got = engine.receive(data, SERVER, wall=WALL)
        assert isinstance(got, DaeRequest) is accepted, offset
    assert engine.stats.dropped_stale == 3 and engine.stats.requests == 3
    # A timestamp of the wrong size cannot be checked: dropped too, not taken as absent.
    bad = request(attrs=[("User-Name", "alice")], extra=(RawAttribute(55, b"\0\0\0"),))
    assert engine.receive(bad, SERVER, wall=WALL) is None and engine.stats.dropped_stale == 4
    # Without one the request is taken (radclient and many servers send none).
    assert isinstance(engine.receive(request(ident=99), SERVER, wall=WALL), DaeRequest)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_datagrams_never_raise(data: bytes) -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    engine.receive(data, SERVER, wall=WALL)
    engine.receive(request()[:20] + data, SERVER, wall=WALL)
