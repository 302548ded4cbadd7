"""External verification (RADIUS) in every authenticator that supports it, on a virtual clock.

The "verifier" here computes what a RADIUS server would from the password - the same checks and
the same MS-CHAPv2 authenticator response and MPPE keys (RFC 2548, RFC 3079) - so the peer
engines, which know nothing of RADIUS, must accept the result exactly as from local secrets.
"""

from __future__ import annotations

import hmac

import pytest
from auth_testlib import Link, ScriptedRandom

from pptpkit.auth.base import (
    AuthenticatorConfig,
    AuthFailed,
    AuthSucceeded,
    ChapMd5Credentials,
    ExternalVerdict,
    FailureKind,
    MppeStartKeys,
    MsChapV1Credentials,
    MsChapV1HashKeys,
    MsChapV2Credentials,
    MsChapV2Keys,
    PapCredentials,
    PeerConfig,
    Role,
    VerifyRequest,
)
from pptpkit.auth.chap import (
    ChapFailure,
    ChapMd5Authenticator,
    ChapMd5Peer,
    ChapSuccess,
    chap_md5_response,
    decode_chap,
)
from pptpkit.auth.factory import create_engine
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.mschap import (
    MsChapFailureMessage,
    MsChapV1Authenticator,
    MsChapV1Peer,
    MsChapV2Authenticator,
    MsChapV2Peer,
)
from pptpkit.auth.pap import PapAck, PapAuthenticator, PapNak, PapPeer, decode_pap
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.crypto.mppe import mschapv1_start_key, mschapv2_start_keys
from pptpkit.crypto.mschap import (
    generate_authenticator_response,
    hash_nt_password_hash,
    nt_password_hash,
    verify_mschapv1_nt_response,
    verify_nt_response,
)
from pptpkit.errors import ConfigError

PASSWORD = "s3cret pass"


def _server(cls: type, **kw: object) -> object:
    config = AuthenticatorConfig(name="pptpd", secrets=StaticSecrets({}), external=True,
                                 random=ScriptedRandom(3), **kw)  # type: ignore[arg-type]
    return cls(config, 0.0)


def _peer(cls: type, password: str = PASSWORD) -> object:
    return cls(PeerConfig(username="alice", password=password, random=ScriptedRandom(4)), 0.0)


def _link(server_cls: type, peer_cls: type, password: str = PASSWORD,
          **kw: object) -> tuple[Link, VerifyRequest]:
    link = Link(_server(server_cls, **kw), _peer(peer_cls, password))  # type: ignore[arg-type]
    link.start()
    [ask] = link.a_events
    assert isinstance(ask, VerifyRequest) and ask.username == "alice"
    assert link.a.result is None and link.p_events == []
    return link, ask


def _answer(link: Link, verdict: ExternalVerdict) -> None:
    link.a.complete_verification(verdict, link.now)
    link.pump()


def radius_v2(ask: VerifyRequest, password: str = PASSWORD) -> ExternalVerdict:
    """What FreeRADIUS's mschap module answers for an MS-CHAPv2 request."""
    c = ask.credentials
    assert isinstance(c, MsChapV2Credentials)
    nt_hash = nt_password_hash(password)
    if not verify_nt_response(c.authenticator_challenge, c.peer_challenge, ask.username, nt_hash,
                              c.nt_response):
        return ExternalVerdict(ok=False, failure_message=b"E=691 R=1 C=00112233445566778899AABBCCDDEEFF V=3")
    s = generate_authenticator_response(nt_hash, c.nt_response, c.peer_challenge, c.authenticator_challenge,
                                        ask.username)
    send, recv = mschapv2_start_keys(hash_nt_password_hash(nt_hash), c.nt_response, is_server=True,
                                     key_bits=128)
    return ExternalVerdict(ok=True, authenticator_response=s.encode(),
                           key_material=MppeStartKeys(send=send, recv=recv))


def test_mschapv2_waits_for_the_verdict_then_succeeds_with_radius_keys() -> None:
    link, ask = _link(MsChapV2Authenticator, MsChapV2Peer)
    assert ask.method is AuthMethod.MSCHAP_V2
    # Nothing reaches the peer while the verifier works; the challenge is not retransmitted.
    sent = len(link.sent("a>p"))
    link.run_until(10.0)
    assert len(link.sent("a>p")) == sent and link.p_events == []
    _answer(link, radius_v2(ask))
    [ok_a], [ok_p] = link.a_events[1:], link.p_events
    assert isinstance(ok_a, AuthSucceeded) and isinstance(ok_p, AuthSucceeded)
    assert ok_a.secret_source == "external"
    # The keys RADIUS gave the server are the client's keys seen from the other end.
    assert isinstance(ok_p.key_material, MsChapV2Keys) and isinstance(ok_a.key_material, MppeStartKeys)
    c_send, c_recv = mschapv2_start_keys(hash_nt_password_hash(ok_p.key_material.nt_password_hash),
                                         ok_p.key_material.nt_response, is_server=False, key_bits=128)
    assert (ok_a.key_material.send, ok_a.key_material.recv) == (c_recv, c_send)


def test_mschapv2_reject_passes_the_error_on_without_a_retry() -> None:
    link, ask = _link(MsChapV2Authenticator, MsChapV2Peer, password="wrong")
    _answer(link, radius_v2(ask))
    [fail_a] = link.a_events[1:]
    assert isinstance(fail_a, AuthFailed) and fail_a.kind is FailureKind.WRONG_SECRET and fail_a.code == 691
    failure = decode_chap(link.sent("a>p")[-1])
    assert isinstance(failure, ChapFailure)
    parsed = MsChapFailureMessage.decode(failure.message)
    assert parsed.error == 691 and not parsed.retry  # RADIUS said R=1; we cannot offer a retry
    [fail_p] = link.p_events
    assert isinstance(fail_p, AuthFailed)


def test_mschapv2_accept_without_authenticator_response_fails() -> None:
    link, _ = _link(MsChapV2Authenticator, MsChapV2Peer)
    _answer(link, ExternalVerdict(ok=True))
    [fail_a] = link.a_events[1:]
    assert isinstance(fail_a, AuthFailed) and fail_a.kind is FailureKind.PROTOCOL
    assert isinstance(decode_chap(link.sent("a>p")[-1]), ChapFailure)


def test_no_verdict_in_time_fails_the_peer_and_a_late_one_changes_nothing() -> None:
    link, ask = _link(MsChapV2Authenticator, MsChapV2Peer, verification_timeout=5.0)
    link.run_until(5.0)
    [fail_a] = link.a_events[1:]
    assert isinstance(fail_a, AuthFailed) and fail_a.kind is FailureKind.TIMEOUT
    assert isinstance(decode_chap(link.sent("a>p")[-1]), ChapFailure)
    sent = len(link.sent("a>p"))
    _answer(link, radius_v2(ask))
    assert len(link.sent("a>p")) == sent and link.a.failed


def test_mschapv1_with_radius_hash_keys() -> None:
    link, ask = _link(MsChapV1Authenticator, MsChapV1Peer)
    c = ask.credentials
    assert isinstance(c, MsChapV1Credentials) and c.use_nt
    nt_hash = nt_password_hash(PASSWORD)
    assert verify_mschapv1_nt_response(c.challenge, nt_hash, c.nt_response)
    # RFC 2548 MS-CHAP-MPPE-Keys: the NT key is the hash of the NT hash.
    keys = MsChapV1HashKeys(nt_password_hash_hash=hash_nt_password_hash(nt_hash), challenge=c.challenge)
    _answer(link, ExternalVerdict(ok=True, key_material=keys))
    [ok_a], [ok_p] = link.a_events[1:], link.p_events
    assert isinstance(ok_a, AuthSucceeded) and isinstance(ok_p, AuthSucceeded)
    assert mschapv1_start_key(keys.nt_password_hash_hash, keys.challenge, 128) == mschapv1_start_key(
        hash_nt_password_hash(nt_hash), c.challenge, 128)


def test_chap_md5() -> None:
    link, ask = _link(ChapMd5Authenticator, ChapMd5Peer)
    c = ask.credentials
    assert isinstance(c, ChapMd5Credentials)
    good = hmac.compare_digest(chap_md5_response(c.identifier, PASSWORD.encode(), c.challenge), c.response)
    assert good
    _answer(link, ExternalVerdict(ok=good, message="welcome"))
    assert isinstance(decode_chap(link.sent("a>p")[-1]), ChapSuccess)
    [ok_p] = link.p_events
    assert isinstance(ok_p, AuthSucceeded) and ok_p.message == "welcome"


@pytest.mark.parametrize("accept", [True, False])
def test_pap(accept: bool) -> None:
    link, ask = _link(PapAuthenticator, PapPeer)
    assert isinstance(ask.credentials, PapCredentials) and ask.credentials.password == PASSWORD.encode()
    assert PASSWORD not in repr(ask)
    # The peer retransmits while RADIUS thinks: the verdict answers its latest identifier, once.
    link.run_until(3.5)
    assert [type(e) for e in link.a_events] == [VerifyRequest]
    _answer(link, ExternalVerdict(ok=accept, reason="Access-Reject" if not accept else ""))
    reply = decode_pap(link.sent("a>p")[-1])
    requests = [decode_pap(x) for x in link.sent("p>a")]
    assert len(requests) >= 2 and reply.identifier == requests[-1].identifier
    assert isinstance(reply, PapAck if accept else PapNak)
    [verdict] = link.a_events[1:]
    assert isinstance(verdict, AuthSucceeded if accept else AuthFailed)


def test_eap_cannot_be_external() -> None:
    config = AuthenticatorConfig(name="pptpd", secrets=StaticSecrets({}), external=True)
    with pytest.raises(ConfigError, match="EAP"):
        create_engine(AuthMethod.EAP, Role.AUTHENTICATOR, config, 0.0)


def test_bad_timeout_refused() -> None:
    with pytest.raises(ConfigError, match="verification_timeout"):
        AuthenticatorConfig(name="pptpd", secrets=StaticSecrets({}), verification_timeout=0)
