from __future__ import annotations

import pytest
from auth_testlib import Link, ScriptedRandom

from pptpkit.auth.base import AuthenticatorConfig, AuthFailed, AuthSucceeded, FailureKind, PeerConfig, Role
from pptpkit.auth.pap import (
    PapAck,
    PapAuthenticator,
    PapNak,
    PapPeer,
    PapRequest,
    PapUnknown,
    decode_pap,
)
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import DecodeError

SECRETS = StaticSecrets.from_text("alice pptpd wonderland 192.0.2.10\n", "pap-secrets")


def make(password: str = "wonderland", username: str = "alice", **server: object) -> Link:
    a = PapAuthenticator(AuthenticatorConfig(name="pptpd", secrets=SECRETS, **server), 0.0)  # type: ignore[arg-type]
    p = PapPeer(PeerConfig(username=username, password=password, random=ScriptedRandom(7)), 0.0)
    return Link(a, p)


def test_success() -> None:
    link = make()
    link.start()
    [ev_a] = link.a_events
    [ev_p] = link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    assert ev_a.role is Role.AUTHENTICATOR and ev_a.username == "alice"
    assert ev_a.addresses is not None and ev_a.addresses.permits("192.0.2.10")
    assert ev_a.secret_source == "pap-secrets:1"
    assert ev_p.message == "Access granted"
    req = decode_pap(link.sent("p>a")[0])
    assert isinstance(req, PapRequest) and req.peer_id == b"alice" and req.password == b"wonderland"
    ack = decode_pap(link.sent("a>p")[0])
    assert isinstance(ack, PapAck) and ack.identifier == req.identifier
    assert link.a.get_timer() is None and link.p.get_timer() is None


def test_wrong_password() -> None:
    link = make(password="nope")
    link.start()
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.WRONG_SECRET
    assert isinstance(ev_p, AuthFailed) and ev_p.kind is FailureKind.REJECTED
    assert ev_p.message == "Access denied"
    assert isinstance(decode_pap(link.sent("a>p")[0]), PapNak)


def test_unknown_user() -> None:
    link = make(username="mallory")
    link.start()
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.UNKNOWN_PEER
    assert ev_a.username == "mallory"


def test_retransmits_with_new_identifier_until_answered() -> None:
    link = make()
    drops = {"n": 0}

    def lose_two(direction: str, pkt: bytes) -> bytes | None:
        if direction == "p>a" and drops["n"] < 2:
            drops["n"] += 1
            return None
        return pkt

    link.filter = lose_two
    link.start()
    assert not link.p_events
    link.run_until(10)
    assert [type(e) for e in link.p_events] == [AuthSucceeded]
    assert link.p.counters.retransmitted == 2
    assert link.now == pytest.approx(10)
    delivered = decode_pap(link.sent("p>a")[0])
    assert isinstance(delivered, PapRequest)
    assert link.p.counters.sent == 3


def test_peer_gives_up_after_max_transmits() -> None:
    link = make()
    link.filter = lambda d, pkt: None if d == "p>a" else pkt
    link.start()
    link.run_until(100)
    [ev] = link.p_events
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.TIMEOUT
    assert link.p.counters.sent == 10
    assert link.p.get_timer() is None
    # the authenticator's own pap-timeout (30 s) fired too
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.TIMEOUT


def test_authenticator_timeout() -> None:
    a = PapAuthenticator(AuthenticatorConfig(name="pptpd", secrets=SECRETS, request_timeout=5), 0.0)
    a.start(0.0)
    assert a.get_timer() == 5
    a.handle_timer(4.9)
    assert a.next_event() is None
    a.handle_timer(5.0)
    ev = a.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.TIMEOUT
    # a request arriving after we gave up changes nothing
    a.receive(PapRequest(identifier=1, peer_id=b"alice", password=b"wonderland").encode(), 6.0)
    assert a.next_event() is None and a.packets_to_send() == [] and a.failed


def test_lost_ack_is_repeated_for_the_retransmission() -> None:
    link = make()
    state = {"dropped": False}

    def lose_first_ack(direction: str, pkt: bytes) -> bytes | None:
        if direction == "a>p" and not state["dropped"]:
            state["dropped"] = True
            return None
        return pkt

    link.filter = lose_first_ack
    link.start()
    assert len(link.a_events) == 1 and not link.p_events
    link.run_until(3)
    assert [type(e) for e in link.p_events] == [AuthSucceeded]
    assert len(link.a_events) == 1  # the authenticator decided only once
    acks = [decode_pap(p) for p in link.sent("a>p")]
    reqs = [decode_pap(p) for p in link.sent("p>a")]
    assert acks[-1].identifier == reqs[-1].identifier != reqs[0].identifier


def test_peer_accepts_ack_without_msg_length_and_late_ids_only_its_own() -> None:
    p = PapPeer(PeerConfig(username="u", password="p", random=ScriptedRandom(1, {1: [b"\x10"]})), 0.0)
    p.start(0.0)
    p.handle_timer(3.0)  # second request, id 0x12
    ids = [decode_pap(x).identifier for x in p.packets_to_send()]
    assert ids == [0x11, 0x12]
    p.receive(bytes([2, 0x99, 0, 4]), 3.1)  # foreign identifier
    assert p.next_event() is None and p.counters.ignored == 1
    p.receive(bytes([2, 0x11, 0, 4]), 3.2)  # Ack of the first copy, no Msg-Length octet
    ev = p.next_event()
    assert isinstance(ev, AuthSucceeded) and ev.message == ""


def test_no_secret_for_peer() -> None:
    p = PapPeer(PeerConfig(username="u", secrets=StaticSecrets({("other", "*"): "x"})), 0.0)
    p.start(0.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.NO_SECRET
    assert p.packets_to_send() == []


def test_peer_uses_secrets_with_remote_name() -> None:
    secrets = StaticSecrets({("u", "isp"): "from-file", ("u", "*"): "generic"})
    p = PapPeer(PeerConfig(username="u", secrets=secrets, remote_name="isp"), 0.0)
    p.start(0.0)
    req = decode_pap(p.packets_to_send()[0])
    assert isinstance(req, PapRequest) and req.password == b"from-file"


def test_codec_round_trip_and_errors() -> None:
    for pkt in (
        PapRequest(identifier=5, peer_id=b"user", password=b"pw"),
        PapAck(identifier=6, message=b"hello"),
        PapNak(identifier=7, message=b""),
        PapUnknown(code=9, identifier=1, data=b"xyz"),
    ):
        assert decode_pap(pkt.encode()) == pkt
    # padding after Length is ignored
    assert decode_pap(PapAck(identifier=1, message=b"m").encode() + b"\0\0") == PapAck(
        identifier=1, message=b"m"
    )
    for bad in (
        b"",
        b"\x01\x01\x00",
        b"\x01\x01\x00\x03",
        b"\x01\x01\x00\x09\x05ab",
        b"\x02\x01\x00\x06\x09a",
    ):
        with pytest.raises(DecodeError):
            decode_pap(bad)


def test_malformed_input_is_counted_not_raised() -> None:
    link = make()
    link.start()
    link.a.receive(b"\x01\x02\x00\x50", 1.0)
    link.p.receive(b"garbage", 1.0)
    assert link.a.counters.malformed == 1 and link.p.counters.malformed == 1


def test_longest_name_and_password() -> None:
    name, password = "n" * 255, "p" * 255
    secrets = StaticSecrets({(name, "pptpd"): password})
    a = PapAuthenticator(AuthenticatorConfig(name="pptpd", secrets=secrets), 0.0)
    p = PapPeer(PeerConfig(username=name, password=password), 0.0)
    link = Link(a, p)
    link.start()
    assert a.succeeded and p.succeeded


def test_too_long_secret_from_file_is_no_secret() -> None:
    p = PapPeer(PeerConfig(username="u", secrets=StaticSecrets({("u", "*"): "p" * 256})), 0.0)
    p.start(0.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.NO_SECRET
