from __future__ import annotations

import hashlib

import pytest
from auth_testlib import Link, MutableSecrets, ScriptedRandom

from pptpkit.auth.base import AuthenticatorConfig, AuthFailed, AuthSucceeded, FailureKind, PeerConfig
from pptpkit.auth.chap import (
    ChapChallenge,
    ChapFailure,
    ChapMd5Authenticator,
    ChapMd5Peer,
    ChapResponse,
    ChapSuccess,
    ChapUnknown,
    decode_chap,
)
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import DecodeError

CHALLENGE = bytes(range(16))


def make(
    password: str = "s3cret",
    username: str = "bob",
    secrets: object | None = None,
    **server: object,
) -> Link:
    provider = secrets or StaticSecrets({("bob", "gw"): "s3cret"})
    a = ChapMd5Authenticator(
        AuthenticatorConfig(
            name="gw",
            secrets=provider,  # type: ignore[arg-type]
            random=ScriptedRandom(3, {1: [b"\x41"], 16: [CHALLENGE]}),
            **server,  # type: ignore[arg-type]
        ),
        0.0,
    )
    p = ChapMd5Peer(PeerConfig(username=username, password=password), 0.0)
    return Link(a, p)


def test_success_packets_and_events() -> None:
    link = make()
    link.start()
    challenge = decode_chap(link.sent("a>p")[0])
    assert challenge == ChapChallenge(identifier=0x42, value=CHALLENGE, name=b"gw")
    response = decode_chap(link.sent("p>a")[0])
    assert isinstance(response, ChapResponse)
    assert response.identifier == 0x42 and response.name == b"bob"
    assert response.value == hashlib.md5(b"\x42" + b"s3cret" + CHALLENGE).digest()
    status = decode_chap(link.sent("a>p")[1])
    assert status == ChapSuccess(identifier=0x42, message=b"Access granted")
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and ev_a.username == "bob" and not ev_a.repeat
    assert isinstance(ev_p, AuthSucceeded) and ev_p.peer_name == "gw" and ev_p.key_material is None
    assert link.a.get_timer() is None and link.p.get_timer() is None


def test_wrong_password() -> None:
    link = make(password="wrong")
    link.start()
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.WRONG_SECRET
    assert isinstance(ev_p, AuthFailed) and ev_p.kind is FailureKind.REJECTED
    assert ev_p.message == "Access denied"
    assert isinstance(decode_chap(link.sent("a>p")[-1]), ChapFailure)


def test_unknown_user() -> None:
    link = make(username="eve")
    link.start()
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.UNKNOWN_PEER and ev_a.username == "eve"


def test_peer_looks_up_secret_by_authenticator_name() -> None:
    secrets = StaticSecrets({("bob", "gw"): "s3cret", ("bob", "*"): "wrong"})
    a = ChapMd5Authenticator(AuthenticatorConfig(name="gw", secrets=secrets), 0.0)
    p = ChapMd5Peer(PeerConfig(username="bob", secrets=secrets), 0.0)
    link = Link(a, p)
    link.start()
    assert isinstance(link.p_events[0], AuthSucceeded)


def test_challenge_retransmitted_unchanged_then_success() -> None:
    link = make()
    state = {"n": 0}

    def lose_two_challenges(direction: str, pkt: bytes) -> bytes | None:
        if direction == "a>p" and state["n"] < 2:
            state["n"] += 1
            return None
        return pkt

    link.filter = lose_two_challenges
    link.start()
    link.run_until(6)
    assert isinstance(link.a_events[0], AuthSucceeded)
    assert link.a.counters.retransmitted == 2
    assert link.now == pytest.approx(6)


def test_authenticator_gives_up_after_max_challenges() -> None:
    link = make(max_transmits=4, restart_interval=2)
    link.filter = lambda d, pkt: None if d == "p>a" else pkt
    link.start()
    link.run_until(100)
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.TIMEOUT
    assert link.a.counters.sent == 4
    assert link.now == pytest.approx(100)
    # every copy was identical; the peer answered them and repeated its Response on its own,
    # max_transmits (10) times in all
    assert len(set(link.sent("a>p"))) == 1
    assert link.p.counters.sent == 10 and link.p.counters.retransmitted == 9


def test_peer_timeout_without_challenge() -> None:
    p = ChapMd5Peer(PeerConfig(username="bob", password="x", timeout=60), 0.0)
    p.start(0.0)
    p.handle_timer(59)
    assert p.next_event() is None
    p.handle_timer(60)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.TIMEOUT


def test_lost_success_is_repeated() -> None:
    # RFC 1994 4.1: the Success may be lost.  The authenticator only retransmits Challenges, so
    # the peer repeats its Response after its restart interval and gets the same Success again.
    link = make()
    state = {"dropped": False}

    def lose_success(direction: str, pkt: bytes) -> bytes | None:
        if direction == "a>p" and isinstance(decode_chap(pkt), ChapSuccess) and not state["dropped"]:
            state["dropped"] = True
            return None
        return pkt

    link.filter = lose_success
    link.start()
    assert not link.p_events and len(link.a_events) == 1
    link.run_until(2.9)
    assert not link.p_events and len(link.sent("p>a")) == 1
    link.run_until(3.0)
    assert [type(e) for e in link.p_events] == [AuthSucceeded]
    assert len(link.a_events) == 1  # the repeat is answered, not verified as a new login
    assert link.sent("p>a")[1] == link.sent("p>a")[0]
    assert len(link.sent("a>p")) == 2  # Challenge, repeated Success (the lost one never crossed)
    link.run_until(60.0)
    assert len(link.sent("p>a")) == 2  # nothing more once the verdict arrived


def test_response_repeats_are_bounded_and_the_wait_still_ends() -> None:
    p = ChapMd5Peer(PeerConfig(username="bob", password="s3cret", restart_interval=2.0, max_transmits=4,
                               timeout=30.0), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=7, value=CHALLENGE, name=b"gw").encode(), 0.0)
    first = p.packets_to_send()
    assert len(first) == 1
    repeats: list[bytes] = []
    t = 0.0
    while (timer := p.get_timer()) is not None and timer < 30.0:
        t = timer
        p.handle_timer(t)
        repeats += p.packets_to_send()
    assert repeats == first * 3  # 4 transmissions in all, 2 s apart
    assert t == 6.0
    assert p.get_timer() == 30.0
    p.handle_timer(30.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.TIMEOUT


def test_response_with_stale_identifier_ignored() -> None:
    a = ChapMd5Authenticator(AuthenticatorConfig(name="gw", secrets=StaticSecrets({("bob", "gw"): "s"})), 0.0)
    a.start(0.0)
    ch = decode_chap(a.packets_to_send()[0])
    assert isinstance(ch, ChapChallenge)
    bad = ChapResponse(identifier=(ch.identifier + 1) & 0xFF, value=bytes(16), name=b"bob")
    a.receive(bad.encode(), 0.1)
    assert a.next_event() is None and a.counters.ignored == 1 and a.packets_to_send() == []


def test_rechallenge_success_and_failure() -> None:
    secrets = MutableSecrets({("bob", "gw"): "s3cret"})
    link = make(secrets=secrets)
    link.start()
    assert isinstance(link.a_events[-1], AuthSucceeded)
    auth = link.a
    assert isinstance(auth, ChapMd5Authenticator)
    auth.rechallenge(5.0)
    link.pump()
    assert [type(e) for e in link.a_events] == [AuthSucceeded, AuthSucceeded]
    assert link.a_events[-1].repeat
    assert link.p_events[-1].repeat  # type: ignore[union-attr]
    ids = [decode_chap(p).identifier for p in link.sent("a>p") if isinstance(decode_chap(p), ChapChallenge)]
    assert ids[1] == (ids[0] + 1) & 0xFF
    # the secret changes on the server: the next rechallenge fails and both ends learn it
    secrets.table[("bob", "gw")] = "rotated"
    auth.rechallenge(10.0)
    link.pump()
    assert isinstance(link.a_events[-1], AuthFailed)
    assert isinstance(link.p_events[-1], AuthFailed)


def test_rechallenge_interval_and_name_change_rejected() -> None:
    link = make(rechallenge_interval=30)
    link.start()
    assert link.a.get_timer() == 30
    link.run_until(30)
    assert len(link.a_events) == 2 and link.a.get_timer() == 60
    # a response to the next challenge under another name is refused even with a right hash
    link.filter = lambda d, pkt: None if d == "p>a" else pkt
    link.run_until(60)
    ch = decode_chap(link.sent("a>p")[-1])
    assert isinstance(ch, ChapChallenge)
    forged = ChapResponse(
        identifier=ch.identifier,
        value=hashlib.md5(bytes([ch.identifier]) + b"s3cret" + ch.value).digest(),
        name=b"mallory",
    )
    link.a.receive(forged.encode(), 60.5)
    ev = link.a.next_event()
    assert isinstance(ev, AuthFailed) and "rechallenge" in ev.reason


def test_duplicate_challenge_gets_identical_response() -> None:
    p = ChapMd5Peer(PeerConfig(username="bob", password="pw"), 0.0)
    p.start(0.0)
    ch = ChapChallenge(identifier=9, value=b"abcdefgh", name=b"gw").encode()
    p.receive(ch, 0.0)
    p.receive(ch, 1.0)
    first, second = p.packets_to_send()
    assert first == second and p.counters.retransmitted == 1
    # success for another identifier is not ours
    p.receive(ChapSuccess(identifier=10).encode(), 1.1)
    assert p.next_event() is None and p.counters.ignored == 1
    p.receive(ChapSuccess(identifier=9, message=b"hi").encode(), 1.2)
    ev = p.next_event()
    assert isinstance(ev, AuthSucceeded) and ev.message == "hi"


def test_no_secret_for_peer() -> None:
    p = ChapMd5Peer(PeerConfig(username="bob", secrets=StaticSecrets({("bob", "other"): "x"})), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=1, value=b"x" * 16, name=b"gw").encode(), 0.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.NO_SECRET
    assert p.packets_to_send() == []


def test_codec() -> None:
    for pkt in (
        ChapChallenge(identifier=1, value=b"v" * 16, name=b"server"),
        ChapResponse(identifier=2, value=b"r" * 49, name=b""),
        ChapSuccess(identifier=3, message=b"ok"),
        ChapFailure(identifier=4, message=b""),
        ChapUnknown(code=7, identifier=5, data=b"change-password"),
    ):
        assert decode_chap(pkt.encode()) == pkt
    for bad in (b"\x01\x01\x00\x05\x00", b"\x01\x01\x00\x06\x05a", b"\x03\x01\x00\x02", b"\x03\x01\x00\x10"):
        with pytest.raises(DecodeError):
            decode_chap(bad)
