from __future__ import annotations

import pytest
from auth_testlib import Link, MutableSecrets, ScriptedRandom

from pptpkit.auth.base import (
    AuthenticatorConfig,
    AuthFailed,
    AuthSucceeded,
    FailureKind,
    MsChapV1Keys,
    MsChapV2Keys,
    PeerConfig,
)
from pptpkit.auth.chap import ChapChallenge, ChapFailure, ChapResponse, ChapSuccess, decode_chap
from pptpkit.auth.mschap import (
    MsChapError,
    MsChapFailureMessage,
    MsChapSuccessMessage,
    MsChapV1Authenticator,
    MsChapV1Peer,
    MsChapV2Authenticator,
    MsChapV2Peer,
    describe_error,
)
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.crypto.mschap import (
    generate_authenticator_response,
    generate_nt_response,
    nt_challenge_response,
    nt_password_hash,
)
from pptpkit.errors import DecodeError

# RFC 2759 section 9.2
AUTH_CHALLENGE = bytes.fromhex("5B5D7C7D7B3F2F3E3C2C602132262628")
PEER_CHALLENGE = bytes.fromhex("21402324255E262A28295F2B3A337C7E")
NT_RESPONSE = bytes.fromhex("82309ECD8D708B5EA08FAA3981CD835442 33114A3D85D6DF".replace(" ", ""))
PASSWORD_HASH = bytes.fromhex("44EBBA8D5312B8D611474411F56989AE")
AUTH_RESPONSE = "S=407A5589115FD0D6209F510FE9C04566932CDA56"


def v2_link(
    password: str = "clientPass",
    username: str = "User",
    secrets: object | None = None,
    peer_retries: int = 0,
    **server: object,
) -> Link:
    provider = secrets if secrets is not None else StaticSecrets({("User", "pptpd"): "clientPass"})
    a = MsChapV2Authenticator(
        AuthenticatorConfig(
            name="pptpd",
            secrets=provider,  # type: ignore[arg-type]
            random=ScriptedRandom(5, {1: [b"\x10"], 16: [AUTH_CHALLENGE]}),
            **server,  # type: ignore[arg-type]
        ),
        0.0,
    )
    p = MsChapV2Peer(
        PeerConfig(
            username=username,
            password=password,
            mschap_retries=peer_retries,
            random=ScriptedRandom(6, {16: [PEER_CHALLENGE]}),
        ),
        0.0,
    )
    return Link(a, p)


def test_rfc2759_exchange_at_packet_level() -> None:
    link = v2_link()
    link.start()
    challenge, success = (decode_chap(x) for x in link.sent("a>p"))
    [response] = (decode_chap(x) for x in link.sent("p>a"))
    assert challenge == ChapChallenge(identifier=0x11, value=AUTH_CHALLENGE, name=b"pptpd")
    assert challenge.encode() == bytes([1, 0x11, 0, 4 + 1 + 16 + 5]) + bytes([16]) + AUTH_CHALLENGE + b"pptpd"
    assert isinstance(response, ChapResponse)
    assert response.identifier == 0x11 and response.name == b"User"
    assert response.value == PEER_CHALLENGE + bytes(8) + NT_RESPONSE + b"\x00"
    assert response.encode()[:5] == bytes([2, 0x11, 0, 4 + 1 + 49 + 4, 49])
    assert isinstance(success, ChapSuccess) and success.identifier == 0x11
    assert success.message == (AUTH_RESPONSE + " M=Access granted").encode()
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    expected = MsChapV2Keys(nt_password_hash=PASSWORD_HASH, nt_response=NT_RESPONSE)
    assert ev_a.key_material == expected and ev_p.key_material == expected
    assert ev_p.message == "Access granted" and ev_p.peer_name == "pptpd"


def test_v2_lost_success_repeated_with_the_same_authenticator_response() -> None:
    link = v2_link()
    lost: list[bytes] = []

    def lose_first_success(direction: str, pkt: bytes) -> bytes | None:
        if direction == "a>p" and isinstance(decode_chap(pkt), ChapSuccess) and not lost:
            lost.append(pkt)
            return None
        return pkt

    link.filter = lose_first_success
    link.start()
    assert lost and not link.p_events
    link.run_until(3.0)  # the peer's restart interval: its Response goes out again
    [ev_p] = link.p_events
    assert isinstance(ev_p, AuthSucceeded) and ev_p.key_material == MsChapV2Keys(
        nt_password_hash=PASSWORD_HASH, nt_response=NT_RESPONSE)
    assert link.sent("a>p")[-1] == lost[0]  # the same S=, checked by the peer again
    assert len(link.a_events) == 1


def test_domain_prefix_is_not_hashed_but_used_for_lookup() -> None:
    secrets = StaticSecrets({("CORP\\User", "pptpd"): "clientPass"})
    link = v2_link(username="CORP\\User", secrets=secrets)
    link.start()
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthSucceeded) and ev_a.username == "CORP\\User"
    response = decode_chap(link.sent("p>a")[0])
    assert isinstance(response, ChapResponse) and response.value[24:48] == NT_RESPONSE


def test_wrong_password_failure_message() -> None:
    link = v2_link(password="wrong")
    link.start()
    failure = decode_chap(link.sent("a>p")[-1])
    assert isinstance(failure, ChapFailure)
    text = failure.message.decode()
    parsed = MsChapFailureMessage.decode(failure.message)
    assert text.startswith("E=691 R=0 C=") and text.endswith(" V=3 M=Access denied")
    assert parsed.challenge is not None and len(parsed.challenge) == 16 and not parsed.retry
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.WRONG_SECRET and ev_a.code == 691
    assert isinstance(ev_p, AuthFailed) and ev_p.kind is FailureKind.REJECTED and ev_p.code == 691
    assert "authentication failure" in ev_p.reason and ev_p.message == "Access denied"


def test_unknown_user() -> None:
    link = v2_link(username="Nobody")
    link.start()
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.UNKNOWN_PEER and ev_a.code == 691


def _fake_server_exchange(success_message: bytes) -> MsChapV2Peer:
    p = MsChapV2Peer(PeerConfig(username="User", password="clientPass", random=ScriptedRandom(1)), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=3, value=AUTH_CHALLENGE, name=b"evil").encode(), 0.0)
    assert len(p.packets_to_send()) == 1
    p.receive(ChapSuccess(identifier=3, message=success_message).encode(), 0.1)
    return p


@pytest.mark.parametrize(
    "message",
    [
        b"M=Welcome",  # no authenticator response at all
        b"",  # empty Success
        ("S=" + "0" * 40 + " M=Welcome").encode(),  # a made-up authenticator response
        AUTH_RESPONSE.encode() + b" M=replayed from another exchange",
        b"S=407A55",  # truncated
    ],
)
def test_client_fails_when_server_cannot_prove_the_password(message: bytes) -> None:
    p = _fake_server_exchange(message)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed)
    assert ev.kind is FailureKind.AUTHENTICATOR_NOT_PROVEN
    assert "prove" in ev.reason or "does not know" in ev.reason
    assert not p.succeeded


def test_server_with_wrong_secret_that_claims_success_is_caught() -> None:
    """A rogue server without the password: it cannot compute S= even with the real protocol."""
    rogue_secrets = StaticSecrets({("User", "pptpd"): "guess"})
    link = v2_link(secrets=rogue_secrets)
    link.a.start(0.0)
    link.p.start(0.0)
    challenge = link.a.packets_to_send()[0]
    link.p.receive(challenge, 0.0)
    response = decode_chap(link.p.packets_to_send()[0])
    assert isinstance(response, ChapResponse)
    # forge what a server holding the wrong password would send as Success
    wrong = generate_authenticator_response(
        nt_password_hash("guess"), response.value[24:48], response.value[:16], AUTH_CHALLENGE, b"User"
    )
    link.p.receive(
        ChapSuccess(identifier=response.identifier, message=f"{wrong} M=hi".encode()).encode(), 0.1
    )
    ev = link.p.next_event()
    assert isinstance(ev, AuthFailed) and ev.kind is FailureKind.AUTHENTICATOR_NOT_PROVEN


def test_peer_retries_as_configured_then_gives_up() -> None:
    secrets = MutableSecrets({("User", "pptpd"): "stale"})
    link = v2_link(secrets=secrets, peer_retries=1, mschap_retries=2)
    link.start()
    statuses = [decode_chap(x) for x in link.sent("a>p")[1:]]
    responses = [decode_chap(x) for x in link.sent("p>a")]
    assert [type(x) for x in statuses] == [ChapFailure, ChapFailure]
    assert [type(x) for x in responses] == [ChapResponse, ChapResponse]
    first = MsChapFailureMessage.decode(statuses[0].message)  # type: ignore[union-attr]
    assert first.retry and first.challenge is not None
    # the retry answers C= under the Failure's Identifier + 1
    assert responses[1].identifier == (statuses[0].identifier + 1) & 0xFF
    assert statuses[1].identifier == responses[1].identifier
    # one retry allowed on our side: the second Failure ends it
    [ev_p] = link.p_events
    assert isinstance(ev_p, AuthFailed) and ev_p.code == 691
    # the server still offered a retry and waits for it, then gives up
    assert not link.a_events
    link.run_until(200)
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.TIMEOUT


def test_retry_with_r1_then_success() -> None:
    secrets = MutableSecrets({("User", "pptpd"): "stale"})
    link = v2_link(secrets=secrets, peer_retries=1, mschap_retries=1)

    def fix_secret_after_first_failure(direction: str, pkt: bytes) -> bytes | None:
        if direction == "a>p" and isinstance(decode_chap(pkt), ChapFailure):
            secrets.table[("User", "pptpd")] = "clientPass"
        return pkt

    link.filter = fix_secret_after_first_failure
    link.start()
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    assert ev_a.key_material == ev_p.key_material
    failure = decode_chap(link.sent("a>p")[1])
    retry = decode_chap(link.sent("p>a")[1])
    success = decode_chap(link.sent("a>p")[2])
    assert isinstance(failure, ChapFailure) and isinstance(retry, ChapResponse)
    assert retry.identifier == (failure.identifier + 1) & 0xFF
    assert isinstance(success, ChapSuccess) and success.identifier == retry.identifier
    c = MsChapFailureMessage.decode(failure.message).challenge
    assert c is not None and c != AUTH_CHALLENGE
    assert retry.value[24:48] == generate_nt_response(c, retry.value[:16], b"User", "clientPass")
    assert isinstance(ev_p.key_material, MsChapV2Keys)
    assert ev_p.key_material.nt_response == retry.value[24:48]


def test_client_does_not_retry_by_default() -> None:
    secrets = MutableSecrets({("User", "pptpd"): "stale"})
    link = v2_link(secrets=secrets, mschap_retries=3)
    link.start()
    assert len(link.sent("p>a")) == 1
    [ev_p] = link.p_events
    assert isinstance(ev_p, AuthFailed) and ev_p.code == 691
    # the server waits for a retry that never comes, then gives up
    assert not link.a_events
    link.run_until(61)
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.TIMEOUT


def test_server_retries_exhausted_sends_r0() -> None:
    secrets = MutableSecrets({("User", "pptpd"): "stale"})
    link = v2_link(secrets=secrets, peer_retries=5, mschap_retries=2)
    link.start()
    failures = [MsChapFailureMessage.decode(decode_chap(x).message) for x in link.sent("a>p")[1:]]  # type: ignore[union-attr]
    assert [f.retry for f in failures] == [True, True, False]
    [ev_a] = link.a_events
    assert isinstance(ev_a, AuthFailed) and ev_a.kind is FailureKind.WRONG_SECRET
    [ev_p] = link.p_events
    assert isinstance(ev_p, AuthFailed)


def test_retry_response_must_carry_next_identifier() -> None:
    a = MsChapV2Authenticator(
        AuthenticatorConfig(
            name="s", secrets=StaticSecrets({("u", "s"): "x"}), mschap_retries=1, random=ScriptedRandom(2)
        ),
        0.0,
    )
    a.start(0.0)
    ch = decode_chap(a.packets_to_send()[0])
    bad = ChapResponse(identifier=ch.identifier, value=bytes(49), name=b"u")
    a.receive(bad.encode(), 0.1)
    [failure] = a.packets_to_send()
    assert MsChapFailureMessage.decode(decode_chap(failure).message).retry  # type: ignore[union-attr]
    # same identifier again: the Failure is repeated, nothing decided
    a.receive(bad.encode(), 0.2)
    assert a.packets_to_send() == [failure]
    # a foreign identifier is ignored
    a.receive(ChapResponse(identifier=(ch.identifier + 5) & 0xFF, value=bytes(49), name=b"u").encode(), 0.3)
    assert a.packets_to_send() == [] and a.next_event() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            b"E=691 R=1 C=00112233445566778899AABBCCDDEEFF V=3 M=Authentication failure",
            MsChapFailureMessage(
                error=691,
                retry=True,
                challenge=bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
                version=3,
                message="Authentication failure",
            ),
        ),
        (b"E=648 R=0 V=3", MsChapFailureMessage(error=648, version=3)),
        (b"E=646", MsChapFailureMessage(error=646)),
        (
            b"E=691 R=0 C=0011223344556677 V=2 X=ignored M=two  spaces M=kept",
            MsChapFailureMessage(
                error=691,
                challenge=bytes.fromhex("0011223344556677"),
                version=2,
                message="two  spaces M=kept",
            ),
        ),
        (
            b"E=709 R=0 c=zz C=aabbccddeeff00112233445566778899 V=3 M=",
            MsChapFailureMessage(
                error=709, challenge=bytes.fromhex("aabbccddeeff00112233445566778899"), version=3
            ),
        ),
    ],
)
def test_failure_message_parsing(text: bytes, expected: MsChapFailureMessage) -> None:
    assert MsChapFailureMessage.decode(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        b"R=1 C=00 V=3",
        b"E=abc",
        b"E=691 R=2",
        b"E=691 C=0011",
        b"E=691 C=zz112233445566778899aabbccddeeff",
        b"",
    ],
)
def test_failure_message_errors(text: bytes) -> None:
    with pytest.raises(DecodeError):
        MsChapFailureMessage.decode(text)


def test_failure_message_round_trip() -> None:
    msg = MsChapFailureMessage(error=691, retry=True, challenge=bytes(range(16)), version=3, message="no way")
    assert msg.encode() == b"E=691 R=1 C=000102030405060708090A0B0C0D0E0F V=3 M=no way"
    assert MsChapFailureMessage.decode(msg.encode()) == msg


def test_success_message_parsing() -> None:
    ok = MsChapSuccessMessage.decode((AUTH_RESPONSE + " M=hello world").encode())
    assert ok.authenticator_response == AUTH_RESPONSE and ok.message == "hello world"
    assert MsChapSuccessMessage.decode(AUTH_RESPONSE.lower().replace("s=", "S=").encode()).message == ""
    assert MsChapSuccessMessage.decode(b"M=no auth").authenticator_response is None
    assert MsChapSuccessMessage.decode(b"S=1234").authenticator_response is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (646, "logon"),
        (647, "disabled"),
        (648, "expired"),
        (649, "dial-in"),
        (691, "failure"),
        (709, "changing"),
    ],
)
def test_error_codes_reach_the_client_event(code: int, words: str) -> None:
    assert words in describe_error(code)
    p = MsChapV2Peer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=1, value=bytes(16), name=b"s").encode(), 0.0)
    p.receive(
        ChapFailure(identifier=1, message=f"E={code} R=0 C={'00' * 16} V=3 M=text".encode()).encode(), 0.1
    )
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.code == code and words in ev.reason and ev.message == "text"
    assert MsChapError(code).value == code


def test_garbled_failure_still_fails_the_client() -> None:
    p = MsChapV2Peer(PeerConfig(username="u", password="p", mschap_retries=3), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=1, value=bytes(16), name=b"s").encode(), 0.0)
    p.receive(ChapFailure(identifier=1, message=b"\xffnonsense").encode(), 0.1)
    ev = p.next_event()
    assert isinstance(ev, AuthFailed) and ev.code is None and ev.kind is FailureKind.REJECTED


def test_wrong_challenge_size_is_malformed_for_peer() -> None:
    p = MsChapV2Peer(PeerConfig(username="u", password="p"), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=1, value=bytes(8), name=b"s").encode(), 0.0)
    assert p.counters.malformed == 1 and p.packets_to_send() == []


# --- MS-CHAPv1 ------------------------------------------------------------------------------


def v1_link(password: str = "pw1", **server: object) -> Link:
    a = MsChapV1Authenticator(
        AuthenticatorConfig(
            name="srv",
            secrets=StaticSecrets({("joe", "srv"): "pw1"}),
            random=ScriptedRandom(9, {8: [b"ABCDEFGH"]}),
            **server,  # type: ignore[arg-type]
        ),
        0.0,
    )
    p = MsChapV1Peer(PeerConfig(username="joe", password=password), 0.0)
    return Link(a, p)


def test_v1_success_and_keys() -> None:
    link = v1_link()
    link.start()
    response = decode_chap(link.sent("p>a")[0])
    assert isinstance(response, ChapResponse)
    assert response.value[:24] == bytes(24)
    assert response.value[24:48] == nt_challenge_response(b"ABCDEFGH", "pw1")
    assert response.value[48] == 1
    [ev_a], [ev_p] = link.a_events, link.p_events
    assert isinstance(ev_a, AuthSucceeded) and isinstance(ev_p, AuthSucceeded)
    keys = MsChapV1Keys(nt_password_hash=nt_password_hash("pw1"), challenge=b"ABCDEFGH")
    assert ev_a.key_material == keys and ev_p.key_material == keys


def test_v1_wrong_password() -> None:
    link = v1_link(password="bad")
    link.start()
    failure = decode_chap(link.sent("a>p")[-1])
    assert isinstance(failure, ChapFailure) and failure.message.startswith(b"E=691 R=0")
    assert isinstance(link.a_events[0], AuthFailed) and isinstance(link.p_events[0], AuthFailed)
    assert link.p_events[0].code == 691


def test_v1_lm_only_response_refused() -> None:
    a = MsChapV1Authenticator(
        AuthenticatorConfig(name="srv", secrets=StaticSecrets({("joe", "srv"): "pw1"})), 0.0
    )
    a.start(0.0)
    ch = decode_chap(a.packets_to_send()[0])
    nt = nt_challenge_response(ch.value, "pw1")  # type: ignore[union-attr]
    a.receive(ChapResponse(identifier=ch.identifier, value=bytes(24) + nt + b"\0", name=b"joe").encode(), 0.1)
    ev = a.next_event()
    assert isinstance(ev, AuthFailed) and "LAN Manager" in ev.reason


def test_v1_retry_without_c_uses_challenge_plus_23() -> None:
    p = MsChapV1Peer(PeerConfig(username="joe", password="pw1", mschap_retries=1), 0.0)
    p.start(0.0)
    p.receive(ChapChallenge(identifier=7, value=b"\xf0BCDEFGH", name=b"").encode(), 0.0)
    p.packets_to_send()
    p.receive(ChapFailure(identifier=7, message=b"E=691 R=1 V=2").encode(), 0.1)
    [retry] = [decode_chap(x) for x in p.packets_to_send()]
    assert isinstance(retry, ChapResponse) and retry.identifier == 8
    assert retry.value[24:48] == nt_challenge_response(b"\x07BCDEFGH", "pw1")
    p.receive(ChapSuccess(identifier=8).encode(), 0.2)
    ev = p.next_event()
    assert isinstance(ev, AuthSucceeded)
    assert ev.key_material == MsChapV1Keys(nt_password_hash=nt_password_hash("pw1"), challenge=b"\x07BCDEFGH")


def test_v1_server_retry_offers_new_challenge() -> None:
    link = v1_link(password="bad", mschap_retries=1)
    link.start()
    first = MsChapFailureMessage.decode(decode_chap(link.sent("a>p")[1]).message)  # type: ignore[union-attr]
    assert first.retry and first.challenge is not None and len(first.challenge) == 8 and first.version == 2
    # our peer does not retry by default; the server then times out waiting
    link.run_until(60)
    assert isinstance(link.a_events[-1], AuthFailed)
