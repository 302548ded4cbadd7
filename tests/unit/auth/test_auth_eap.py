from __future__ import annotations

import hashlib

import pytest
from auth_testlib import Link, ScriptedRandom

from pptpkit.auth.base import (
    AuthenticatorConfig,
    AuthFailed,
    AuthSucceeded,
    FailureKind,
    MsChapV2Keys,
    PeerConfig,
)
from pptpkit.auth.eap import (
    EapAuthenticator,
    EapCode,
    EapMd5,
    EapMsChapV2,
    EapMsChapV2OpCode,
    EapPacket,
    EapPeer,
    EapType,
    decode_eap,
)
from pptpkit.auth.mschap import MsChapFailureMessage
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.crypto.mschap import nt_password_hash
from pptpkit.errors import DecodeError

AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF")
AUTH_RESPONSE = b"S=407A5589115FD0D6209F510FE9C04566932CDA56"
SECRETS = StaticSecrets({("User", "gw"): "clientPass"})


def make(
    server_methods: tuple[int, ...] = (26, 4),
    peer_methods: tuple[int, ...] = (26, 4),
    password: str = "clientPass",
    username: str = "User",
    **server: object,
) -> Link:
    a = EapAuthenticator(
        AuthenticatorConfig(
            name="gw",
            secrets=SECRETS,
            eap_methods=server_methods,
            random=ScriptedRandom(4, {1: [b"\x20"], 16: [AUTH_CHALLENGE]}),
            **server,  # type: ignore[arg-type]
        ),
        0.0,
    )
    p = EapPeer(
        PeerConfig(
            username=username,
            password=password,
            eap_methods=peer_methods,
            random=ScriptedRandom(5, {16: [PEER_CHALLENGE]}),
        ),
        0.0,
    )
    return Link(a, p)


def flow(link: Link) -> list[tuple[str, int, object, object]]:
    """(direction, code, type, opcode) for every packet that crossed."""
    out: list[tuple[str, int, object, object]] = []
    for direction, raw in link.log:
        pkt = decode_eap(raw)
        opcode = None
        if pkt.type == EapType.MSCHAPV2:
            opcode = EapMsChapV2.decode(pkt.data).opcode
        out.append((direction, int(pkt.code), pkt.type, opcode))
    return out


def test_eap_mschapv2_success_rfc2759_values() -> None:
    link = make()
    link.start()
    R, S = EapCode.REQUEST, EapCode.RESPONSE
    ms = EapType.MSCHAPV2
    assert flow(link) == [
        ("a>p", R, EapType.IDENTITY, None),
        ("p>a", S, EapType.IDENTITY, None),
        ("a>p", R, ms, EapMsChapV2OpCode.CHALLENGE),
        ("p>a", S, ms, EapMsChapV2OpCode.RESPONSE),
        ("a>p", R, ms, EapMsChapV2OpCode.SUCCESS),
        ("p>a", S, ms, EapMsChapV2OpCode.SUCCESS),
        ("a>p", EapCode.SUCCESS, None, None),
    ]
    raw = [x for _, x in link.log]
    identity = decode_eap(raw[1])
    assert identity.data == b"User" and identity.identifier == 0x21
    challenge = decode_eap(raw[2])
    assert challenge.identifier == 0x22
    ch = EapMsChapV2.decode(challenge.data)
    assert ch.value == AUTH_CHALLENGE and ch.name == b"gw" and ch.ms_id == 0x22
    # MS-Length = EAP Length - 5; on the wire: 01 22 001c 1a | 01 22 0017 10 <16 octets> "gw"
    assert raw[2] == bytes([1, 0x22, 0, 28, 26, 1, 0x22, 0, 23, 16]) + AUTH_CHALLENGE + b"gw"
    resp = EapMsChapV2.decode(decode_eap(raw[3]).data)
    assert resp.ms_id == 0x22 and resp.name == b"User"
    assert resp.value == PEER_CHALLENGE + bytes(8) + NT_RESPONSE + b"\0"
    success_req = EapMsChapV2.decode(decode_eap(raw[4]).data)
    assert success_req.message == AUTH_RESPONSE + b" M=Access granted"
    assert raw[5] == bytes([2, decode_eap(raw[4]).identifier, 0, 6, 26, 3])  # opcode alone
    assert decode_eap(raw[6]).identifier == decode_eap(raw[5]).identifier
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    keys = MsChapV2Keys(nt_password_hash=nt_password_hash("clientPass"), nt_response=NT_RESPONSE)
    assert ev_a.key_material == keys == ev_p.key_material
    assert ev_a.eap_type == 26 == ev_p.eap_type
    assert ev_a.username == "User" and ev_p.peer_name == "gw"
    assert link.a.get_timer() is None and link.p.get_timer() is None


def test_eap_md5_success() -> None:
    link = make(server_methods=(4,))
    link.start()
    raw = [x for _, x in link.log]
    req = decode_eap(raw[2])
    assert req.type == EapType.MD5_CHALLENGE
    md5_req = EapMd5.decode(req.data)
    md5_resp = EapMd5.decode(decode_eap(raw[3]).data)
    assert md5_resp.value == hashlib.md5(bytes([req.identifier]) + b"clientPass" + md5_req.value).digest()
    assert md5_resp.name == b"User"
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    assert ev_a.key_material is None and ev_p.key_material is None and ev_a.eap_type == 4


def test_nak_moves_to_an_acceptable_method() -> None:
    link = make(peer_methods=(4,))
    link.start()
    raw = [x for _, x in link.log]
    nak = decode_eap(raw[3])
    assert nak.type == EapType.NAK and nak.data == b"\x04"
    assert decode_eap(raw[4]).type == EapType.MD5_CHALLENGE
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and ev_a.eap_type == 4
    assert isinstance(ev_p, AuthSucceeded) and ev_p.eap_type == 4


def test_nak_without_common_method() -> None:
    link = make(server_methods=(26,), peer_methods=(4,))
    link.start()
    assert decode_eap(link.log[-1][1]).code == EapCode.FAILURE
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.NO_COMMON_METHOD
    assert isinstance(ev_p, AuthFailed) and ev_p.kind is FailureKind.REJECTED


def test_peer_without_any_method_naks_with_zero() -> None:
    p = EapPeer(PeerConfig(username="u", password="p", eap_methods=()), 0.0)
    p.start(0.0)
    p.receive(
        EapPacket(code=EapCode.REQUEST, identifier=1, type=EapType.MD5_CHALLENGE, data=b"\x01x").encode(), 0
    )
    nak = decode_eap(p.packets_to_send()[0])
    assert nak.type == EapType.NAK and nak.data == b"\0"


def test_unknown_type_gets_nak_with_our_preferences() -> None:
    p = EapPeer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    p.receive(EapPacket(code=EapCode.REQUEST, identifier=1, type=EapType.GTC, data=b"Password:").encode(), 0)
    nak = decode_eap(p.packets_to_send()[0])
    assert nak.code == EapCode.RESPONSE and nak.type == EapType.NAK and nak.data == bytes([26, 4])


def test_wrong_password_mschapv2() -> None:
    link = make(password="nope")
    link.start()
    steps = flow(link)
    assert steps[-3:] == [
        ("a>p", EapCode.REQUEST, EapType.MSCHAPV2, EapMsChapV2OpCode.FAILURE),
        ("p>a", EapCode.RESPONSE, EapType.MSCHAPV2, EapMsChapV2OpCode.FAILURE),
        ("a>p", EapCode.FAILURE, None, None),
    ]
    failure_req = EapMsChapV2.decode(decode_eap(link.log[-3][1]).data)
    parsed = MsChapFailureMessage.decode(failure_req.message)
    assert parsed.error == 691 and not parsed.retry and parsed.version == 3
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.WRONG_SECRET and ev_a.code == 691
    assert isinstance(ev_p, AuthFailed) and ev_p.kind is FailureKind.REJECTED and ev_p.code == 691


def test_wrong_password_md5_and_unknown_user() -> None:
    link = make(server_methods=(4,), password="nope")
    link.start()
    assert isinstance(link.a_events[0], AuthFailed) and link.a_events[0].kind is FailureKind.WRONG_SECRET
    assert isinstance(link.p_events[0], AuthFailed)
    link = make(username="ghost")
    link.start()
    assert isinstance(link.a_events[0], AuthFailed) and link.a_events[0].kind is FailureKind.UNKNOWN_PEER


def _peer_at_success_request(message: bytes) -> EapPeer:
    p = EapPeer(PeerConfig(username="User", password="clientPass", random=ScriptedRandom(1)), 0.0)
    p.start(0.0)
    challenge = EapMsChapV2(opcode=EapMsChapV2OpCode.CHALLENGE, ms_id=5, value=AUTH_CHALLENGE, name=b"evil")
    p.receive(EapPacket(code=1, identifier=5, type=26, data=challenge.encode()).encode(), 0.0)
    assert len(p.packets_to_send()) == 1
    success = EapMsChapV2(opcode=EapMsChapV2OpCode.SUCCESS, ms_id=5, message=message)
    p.receive(EapPacket(code=1, identifier=6, type=26, data=success.encode()).encode(), 0.1)
    return p


@pytest.mark.parametrize("message", [b"M=trust me", b"S=" + b"1" * 40 + b" M=x", AUTH_RESPONSE])
def test_peer_fails_when_server_cannot_prove_the_password(message: bytes) -> None:
    p = _peer_at_success_request(message)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.AUTHENTICATOR_NOT_PROVEN
    assert p.packets_to_send() == []  # no Success-Response for an unproven server
    p.receive(EapPacket(code=EapCode.SUCCESS, identifier=6).encode(), 0.2)
    assert not p.succeeded


def test_eap_success_before_method_is_refused() -> None:
    p = EapPeer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    p.receive(EapPacket(code=EapCode.REQUEST, identifier=1, type=EapType.IDENTITY).encode(), 0.0)
    p.receive(EapPacket(code=EapCode.SUCCESS, identifier=1).encode(), 0.1)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.PROTOCOL


def test_identity_response_lost_then_retransmitted() -> None:
    link = make()
    state = {"n": 0}

    def lose_first_response(direction: str, pkt: bytes) -> bytes | None:
        if direction == "p>a" and state["n"] == 0:
            state["n"] += 1
            return None
        return pkt

    link.filter = lose_first_response
    link.start()
    assert not link.a_events
    link.run_until(3)
    assert isinstance(link.a_events[0], AuthSucceeded)
    assert link.a.counters.retransmitted == 1 and link.p.counters.retransmitted == 1


def test_server_gives_up_and_sends_failure() -> None:
    link = make(max_transmits=3)
    link.filter = lambda d, pkt: None if d == "p>a" else pkt
    link.start()
    link.run_until(100)
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.TIMEOUT
    assert [decode_eap(x).code for x in link.sent("a>p")] == [1, 1, 1, 4]
    # the peer got EAP-Failure and reports rejection
    assert isinstance(link.p_events[0], AuthFailed)


def test_peer_timeout() -> None:
    p = EapPeer(PeerConfig(username="u", password="p", timeout=10), 0.0)
    p.start(0.0)
    p.handle_timer(10.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.TIMEOUT


def test_notification_answered_and_stale_responses_ignored() -> None:
    link = make()
    link.a.start(0.0)
    link.p.start(0.0)
    link.p.receive(EapPacket(code=1, identifier=99, type=EapType.NOTIFICATION, data=b"hello").encode(), 0.0)
    note = decode_eap(link.p.packets_to_send()[0])
    assert note.type == EapType.NOTIFICATION and note.data == b"" and note.identifier == 99
    assert isinstance(link.p, EapPeer) and link.p.notifications == ["hello"]
    # a response with the wrong identifier does not move the authenticator
    link.a.packets_to_send()
    link.a.receive(EapPacket(code=2, identifier=0x55, type=EapType.IDENTITY, data=b"x").encode(), 0.1)
    assert link.a.packets_to_send() == [] and link.a.counters.ignored == 1


def test_after_success_failure_is_discarded() -> None:
    link = make()
    link.start()
    link.p.receive(EapPacket(code=EapCode.FAILURE, identifier=1).encode(), 1.0)
    assert link.p.succeeded and link.p.next_event() is None


def test_codecs() -> None:
    for pkt in (
        EapPacket(code=EapCode.REQUEST, identifier=1, type=EapType.IDENTITY, data=b""),
        EapPacket(code=EapCode.RESPONSE, identifier=2, type=200, data=b"\x01"),
        EapPacket(code=EapCode.SUCCESS, identifier=3),
        EapPacket(code=9, identifier=4, data=b"zz"),
    ):
        assert decode_eap(pkt.encode()) == pkt
    for ms in (
        EapMsChapV2(opcode=EapMsChapV2OpCode.CHALLENGE, ms_id=1, value=b"c" * 16, name=b"n"),
        EapMsChapV2(opcode=EapMsChapV2OpCode.FAILURE, ms_id=2, message=b"E=691"),
        EapMsChapV2(opcode=EapMsChapV2OpCode.SUCCESS, short=True),
    ):
        assert EapMsChapV2.decode(ms.encode()) == ms
    assert EapMd5.decode(EapMd5(value=b"v", name=b"n").encode()) == EapMd5(value=b"v", name=b"n")
    with pytest.raises(DecodeError):
        decode_eap(bytes([1, 1, 0, 4]))  # a Request without Type
    with pytest.raises(DecodeError):
        EapMsChapV2.decode(bytes([1, 1, 0, 99, 16]) + bytes(16))  # MS-Length mismatch
    with pytest.raises(DecodeError):
        EapMd5.decode(b"\x00")


def test_ms_length_mismatch_is_dropped_by_peer() -> None:
    p = EapPeer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    bad = bytes([1, 0x22, 0, 4, 16]) + bytes(16)
    p.receive(EapPacket(code=1, identifier=3, type=26, data=bad).encode(), 0.0)
    assert p.counters.malformed == 1 and p.packets_to_send() == []


def test_peer_caps_requests_without_verdict() -> None:
    p = EapPeer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    answered = 0
    for i in range(20):
        p.receive(EapPacket(code=1, identifier=i, type=EapType.NOTIFICATION, data=b"spam").encode(), 0.0)
        answered += len(p.packets_to_send())
    assert p.next_event() is None and answered == 20
    assert len(p.notifications) == 8
    p.receive(EapPacket(code=1, identifier=200, type=EapType.IDENTITY).encode(), 0.0)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.PROTOCOL
    assert p.packets_to_send() == []


def test_strip_domain_for_lookup() -> None:
    secrets = StaticSecrets({("User", "gw"): "clientPass"})
    for strip, expect in ((True, AuthSucceeded), (False, AuthFailed)):
        a = EapAuthenticator(AuthenticatorConfig(name="gw", secrets=secrets, mschap_strip_domain=strip), 0.0)
        p = EapPeer(PeerConfig(username="CORP\\User", password="clientPass"), 0.0)
        link = Link(a, p)
        link.start()
        assert isinstance(link.a_events[0], expect)
