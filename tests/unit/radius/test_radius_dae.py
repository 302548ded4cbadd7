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


def request(code: Code = Code.DISCONNECT_REQUEST, attrs: list[tuple[str, object]] | None = None,
            secret: bytes = SECRET, ident: int = 7, with_ma: bool = True) -> bytes:
    raw = encode_attributes(attrs or [("Acct-Session-Id", "5F00000000000001")], secret=secret,
                            authenticator=b"\0" * 16, salt=lambda: b"\x80\x01")  # type: ignore[arg-type]
    head = (RawAttribute(crypto.MESSAGE_AUTHENTICATOR_TYPE, b"\0" * 16),) if with_ma else ()
    draft = RawPacket(code=code, identifier=ident, authenticator=b"\0" * 16,
                      attributes=(*head, *raw)).encode()
    if with_ma:
        draft = draft[:22] + crypto.message_authenticator(draft, secret, b"\0" * 16) + draft[38:]
    return draft[:4] + crypto.accounting_request_authenticator(draft, secret) + draft[20:]


def test_a_good_request_and_its_signed_answer() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    got = engine.receive(request(), SERVER)
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
    assert engine.receive(request(), SERVER) == answer and engine.stats.duplicates == 1


def test_what_is_dropped_silently() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET}, require_message_authenticator=True)
    assert engine.receive(request(), ("192.0.2.99", 1)) is None
    assert engine.receive(request(secret=b"wrong"), SERVER) is None
    assert engine.receive(request(with_ma=False), SERVER) is None
    assert engine.receive(request(code=Code.ACCESS_REQUEST), SERVER) is None
    assert engine.receive(b"\x28\x01\x00", SERVER) is None
    s = engine.stats
    assert (s.dropped_unknown_client, s.dropped_bad_authenticator, s.dropped_missing_message_authenticator,
            s.dropped_bad_code, s.dropped_malformed) == (1, 1, 1, 1, 1)


def test_coa_ack() -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    got = engine.receive(request(Code.COA_REQUEST, [("User-Name", "alice"), ("Session-Timeout", 60)]), SERVER)
    assert isinstance(got, DaeRequest) and not got.disconnect and got.values("Session-Timeout") == [60]
    assert RawPacket.decode(engine.answer(got, ack=True)).code == Code.COA_ACK


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_datagrams_never_raise(data: bytes) -> None:
    engine = DaeEngine({"192.0.2.10": SECRET})
    engine.receive(data, SERVER)
    engine.receive(request()[:20] + data, SERVER)
