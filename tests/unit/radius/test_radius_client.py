"""The RADIUS client engine on a virtual clock against a scripted server: identifiers,
retransmission and backoff, failover, timeouts, and every reason a response is dropped."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.radius import crypto
from pptpkit.radius.access import CallInfo, NasInfo, pap_request
from pptpkit.radius.client import (
    AccessAccepted,
    AccessRejected,
    AccountingResponded,
    RadiusBusyError,
    RadiusClient,
    RadiusClientConfig,
    RadiusEvent,
    RadiusServer,
    RequestTimedOut,
    ServerDown,
    ServerUp,
    StatusServerAnswered,
)
from pptpkit.radius.packet import Code, RawAttribute, RawPacket, decode_attributes, encode_attributes

S1 = RadiusServer(address="192.0.2.10", port=1812, secret=b"one")
S2 = RadiusServer(address="192.0.2.11", port=1812, secret=b"two")
NAS = NasInfo(nas_identifier="pptpkit-test")
CALL = CallInfo(nas_port=1, client_address="192.0.2.2", server_address="192.0.2.1")


def _counter() -> object:
    n = itertools.count()
    return lambda size: bytes((next(n) + i) & 0xFF for i in range(size))


def engine(**kw: object) -> RadiusClient:
    cfg = RadiusClientConfig(servers=kw.pop("servers", (S1, S2)), timeout=1.0, retries=2,  # type: ignore[arg-type]
                             backoff=2.0, max_timeout=3.0, dead_time=10.0, **kw)  # type: ignore[arg-type]
    return RadiusClient(cfg, random_bytes=_counter())  # type: ignore[arg-type]


def answer(request: bytes, server: RadiusServer, code: int = Code.ACCESS_ACCEPT, *,
           attrs: Sequence[tuple[str, object]] = (), ma: bool = True, secret: bytes | None = None,
           identifier: int | None = None) -> bytes:
    """What a correct server sends back, optionally broken in one way."""
    secret = server.secret if secret is None else secret
    req = RawPacket.decode(request)
    raw = encode_attributes(attrs, secret=secret, authenticator=req.authenticator,  # type: ignore[arg-type]
                            salt=lambda: b"\x80\x07")
    if ma:
        raw.insert(0, RawAttribute(80, bytes(16)))
    ident = req.identifier if identifier is None else identifier
    draft = RawPacket(code=code, identifier=ident, authenticator=req.authenticator,
                      attributes=tuple(raw)).encode()
    if ma:
        draft = draft[:22] + crypto.message_authenticator(draft, secret) + draft[38:]
    return draft[:4] + crypto.response_authenticator(draft, req.authenticator, secret) + draft[20:]


def events(e: RadiusClient) -> list[RadiusEvent]:
    out = []
    while (ev := e.next_event()) is not None:
        out.append(ev)
    return out


def test_access_request_carries_a_valid_message_authenticator_and_hidden_password() -> None:
    e = engine()
    rid = e.send_access_request(pap_request(NAS, CALL, "alice", b"wonderland"), 0.0)
    [(data, dest)] = e.datagrams_to_send()
    assert dest == ("192.0.2.10", 1812)
    packet = RawPacket.decode(data)
    assert packet.code == Code.ACCESS_REQUEST and packet.attributes[0].type == 80
    assert crypto.verify_message_authenticator(data, b"one")
    attrs = {a.name: a.value for a in decode_attributes(packet.attributes, secret=b"one",
                                                          request_authenticator=packet.authenticator)}
    assert attrs["User-Password"].rstrip("\0") == "wonderland"  # type: ignore[union-attr]
    assert attrs["NAS-Port-Type"] == 5 and attrs["Tunnel-Type"] == 1 and attrs["Tunnel-Medium-Type"] == 1
    assert attrs["Calling-Station-Id"] == "192.0.2.2" and attrs["Service-Type"] == 2
    e.receive_datagram(answer(data, S1, attrs=[("Session-Timeout", 60)]), dest, 0.25)
    [ev] = events(e)
    assert isinstance(ev, AccessAccepted) and ev.request_id == rid and ev.rtt == 0.25
    assert ("Session-Timeout", 60) in [(a.name, a.value) for a in ev.attributes]
    assert e.get_timer() is None and e.outstanding == 0


def test_accounting_request_authenticator_and_message_authenticator() -> None:
    e = engine()
    e.send_accounting_request([("Acct-Status-Type", "Start"), ("Acct-Session-Id", "abc"),
                               ("User-Name", "alice")], 0.0)
    [(data, dest)] = e.datagrams_to_send()
    assert crypto.accounting_request_authenticator(data, b"one") == data[4:20]
    assert crypto.verify_message_authenticator(data, b"one", bytes(16))
    # FreeRADIUS answers accounting without a Message-Authenticator: accepted by default.
    e.receive_datagram(answer(data, S1, Code.ACCOUNTING_RESPONSE, ma=False), dest, 0.1)
    assert isinstance(events(e)[0], AccountingResponded)


def test_accounting_message_authenticator_can_be_required() -> None:
    e = engine(require_accounting_message_authenticator=True)
    e.send_accounting_request([("Acct-Status-Type", "Start")], 0.0)
    [(data, dest)] = e.datagrams_to_send()
    e.receive_datagram(answer(data, S1, Code.ACCOUNTING_RESPONSE, ma=False), dest, 0.1)
    assert events(e) == [] and e.stats.dropped_missing_message_authenticator == 1


def test_retransmission_backoff_then_failover_then_timeout() -> None:
    e = engine()
    rid = e.send_access_request([("User-Name", "bob")], 0.0)
    first = e.datagrams_to_send()
    sent_at = [0.0]
    t = 0.0
    while (timer := e.get_timer()) is not None:
        t = timer
        e.handle_timer(t)
        for data, dest in e.datagrams_to_send():
            sent_at.append(t)
            if dest == S1.endpoint:
                assert data == first[0][0]  # same bytes, same Identifier (RFC 5080 2.2.1)
    # S1 at 0, 1, 3 (backoff 1, 2), dead at 6 (capped 3); S2 at 6, 7, 9, dead at 12.
    assert sent_at == [0.0, 1.0, 3.0, 6.0, 7.0, 9.0]
    evs = events(e)
    assert evs == [ServerDown(server="192.0.2.10:1812", until=16.0),
                   ServerDown(server="192.0.2.11:1812", until=22.0),
                   RequestTimedOut(request_id=rid, servers=("192.0.2.10:1812", "192.0.2.11:1812"))]
    assert e.stats.timeouts == 1 and e.stats.failovers == 1 and e.stats.retransmissions == 4


def test_failover_answer_from_the_second_server_and_dead_time() -> None:
    e = engine()
    e.send_access_request([("User-Name", "bob")], 0.0)
    e.datagrams_to_send()
    for t in (1.0, 3.0, 6.0):
        e.handle_timer(t)
    [(data, dest)] = [d for d in e.datagrams_to_send() if d[1] == S2.endpoint]
    assert crypto.verify_message_authenticator(data, b"two")  # re-encoded with S2's secret
    e.receive_datagram(answer(data, S2, Code.ACCESS_REJECT), dest, 6.5)
    assert isinstance(events(e)[-1], AccessRejected)
    # S1 is down until 16: new requests start at S2, then at S1 again.
    e.send_access_request([("User-Name", "carol")], 7.0)
    assert [d for _, d in e.datagrams_to_send()] == [S2.endpoint]
    e.send_access_request([("User-Name", "dave")], 17.0)
    [(data, dest)] = [x for x in e.datagrams_to_send() if x[1] == S1.endpoint]
    e.receive_datagram(answer(data, S1), dest, 17.1)
    assert ServerUp(server="192.0.2.10:1812") in events(e)


def test_accounting_delay_time_grows_on_failover() -> None:
    e = engine()
    e.send_accounting_request([("Acct-Status-Type", "Stop"), ("Acct-Delay-Time", 2)], 0.0)
    e.datagrams_to_send()
    for t in (1.0, 3.0, 6.0):
        e.handle_timer(t)
    [(data, _)] = [d for d in e.datagrams_to_send() if d[1] == S2.endpoint]
    attrs = decode_attributes(RawPacket.decode(data).attributes, secret=b"two",
                              request_authenticator=bytes(16))
    assert ("Acct-Delay-Time", 8) in [(a.name, a.value) for a in attrs]


@pytest.mark.parametrize("how", ["secret", "identifier", "source", "no_ma", "bad_ma", "code", "garbage"])
def test_bad_responses_are_dropped_counted_and_the_request_goes_on(how: str) -> None:
    e = engine()
    e.send_access_request([("User-Name", "bob")], 0.0)
    [(data, dest)] = e.datagrams_to_send()
    good = answer(data, S1)
    bad = {
        "secret": lambda: answer(data, S1, secret=b"wrong"),
        "identifier": lambda: answer(data, S1, identifier=(data[1] + 1) & 0xFF),
        "source": lambda: good,
        "no_ma": lambda: answer(data, S1, ma=False),
        # A valid Response Authenticator over a wrong Message-Authenticator.
        "bad_ma": lambda: _resign(good[:22] + bytes(16) + good[38:], data),
        "code": lambda: answer(data, S1, Code.ACCOUNTING_RESPONSE),
        "garbage": lambda: b"\x02\x00\x00",
    }[how]()
    source = ("192.0.2.99", 1812) if how == "source" else dest
    e.receive_datagram(bad, source, 0.1)
    assert events(e) == [] and e.stats.dropped == 1
    field = {"secret": "dropped_bad_authenticator", "identifier": "dropped_unknown_identifier",
             "source": "dropped_unknown_source", "no_ma": "dropped_missing_message_authenticator",
             "bad_ma": "dropped_bad_message_authenticator", "code": "dropped_unexpected_code",
             "garbage": "dropped_malformed"}[how]
    assert getattr(e.stats, field) == 1
    e.receive_datagram(good, dest, 0.2)
    assert isinstance(events(e)[0], AccessAccepted)
    e.receive_datagram(good, dest, 0.3)  # a duplicate after the answer: unknown identifier
    assert e.stats.dropped_unknown_identifier == (2 if how == "identifier" else 1)


def _resign(response: bytes, request: bytes) -> bytes:
    return response[:4] + crypto.response_authenticator(response, request[4:20], b"one") + response[20:]


def test_identifiers_are_capped_and_the_queue_is_bounded() -> None:
    e = engine(servers=(S1,), max_outstanding=4, max_queued=2)
    ids = [e.send_access_request([("User-Name", f"u{i}")], 0.0) for i in range(6)]
    sent = e.datagrams_to_send()
    assert len(sent) == 4 and len({RawPacket.decode(d).identifier for d, _ in sent}) == 4
    assert e.queued == 2 and e.outstanding == 4
    with pytest.raises(RadiusBusyError):
        e.send_access_request([("User-Name", "late")], 0.0)
    e.receive_datagram(answer(sent[0][0], S1), S1.endpoint, 0.1)
    [(queued, _)] = e.datagrams_to_send()  # the first queued request takes the freed slot
    assert e.queued == 1
    e.cancel(ids[5], 0.2)
    assert e.queued == 0
    e.receive_datagram(answer(queued, S1), S1.endpoint, 0.3)
    assert [ev.request_id for ev in events(e)] == [ids[0], ids[4]]


def test_status_server_goes_to_one_server_only() -> None:
    e = engine()
    e.send_status_server(1, 0.0)
    [(data, dest)] = e.datagrams_to_send()
    assert dest == S2.endpoint and data[0] == Code.STATUS_SERVER
    assert crypto.verify_message_authenticator(data, b"two")
    e.receive_datagram(answer(data, S2), dest, 0.1)
    assert isinstance(events(e)[0], StatusServerAnswered)


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError):
        RadiusServer(address="radius.example", port=1812, secret=b"x")
    with pytest.raises(ConfigError):
        RadiusServer(address="192.0.2.1", port=1812, secret=b"")
    with pytest.raises(ConfigError):
        RadiusClientConfig(servers=(S1, S1))
    with pytest.raises(ConfigError):
        RadiusClientConfig(servers=(S1,), max_outstanding=257)
    assert "one" not in repr(S1)
    with pytest.raises(PptpkitError):
        engine().send_access_request([("Message-Authenticator", bytes(16))], 0.0)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.sampled_from([S1.endpoint, S2.endpoint, ("192.0.2.99", 1)]))
def test_fuzz_receive(data: bytes, source: tuple[str, int]) -> None:
    e = engine()
    e.send_access_request([("User-Name", "bob")], 0.0)
    [(req, _)] = e.datagrams_to_send()
    # Give the fuzzer the right identifier half the time so it reaches the verification.
    if len(data) > 2 and data[0] & 1:
        data = data[:1] + req[1:2] + data[2:]
    e.receive_datagram(data, source, 0.1)
    assert e.stats.dropped + e.stats.responses == 1
