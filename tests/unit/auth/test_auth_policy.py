from __future__ import annotations

import pytest

from pptpkit.auth.methods import DEFAULT_SERVER_ORDER, AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.errors import ConfigError

M = AuthMethod


def test_default_asks_nothing_and_accepts_everything() -> None:
    p = AuthPolicy()
    assert not p.authenticates_peer
    assert p.offered_methods() == ()
    assert p.peer_preference() == (M.EAP, M.MSCHAP_V2, M.MSCHAP_V1, M.CHAP_MD5, M.PAP)
    assert all(p.accepts_as_peer(m) for m in M)


def test_require_offers_in_server_order() -> None:
    p = AuthPolicy.from_pppd_options(["require-pap", "require-mschap-v2", "nodetach", "require-chap"])
    assert p.authenticates_peer
    assert p.offered_methods() == (M.MSCHAP_V2, M.CHAP_MD5, M.PAP)
    assert p.accepts_as_authenticator(M.PAP) and not p.accepts_as_authenticator(M.EAP)


def test_auth_alone_offers_every_method() -> None:
    p = AuthPolicy.from_pppd_options(["auth"])
    assert p.offered_methods() == DEFAULT_SERVER_ORDER


def test_refuse_is_about_the_peer_side_only() -> None:
    p = AuthPolicy.from_pppd_options(["refuse-pap", "refuse-chap", "refuse-eap", "require-mschap"])
    assert not p.accepts_as_peer(M.PAP) and not p.accepts_as_peer(M.CHAP_MD5)
    assert p.accepts_as_peer(M.MSCHAP_V2) and p.accepts_as_peer(M.MSCHAP_V1)
    assert p.peer_preference() == (M.MSCHAP_V2, M.MSCHAP_V1)
    assert p.offered_methods() == (M.MSCHAP_V1,)


def test_noauth_clears_requirements() -> None:
    p = AuthPolicy.from_pppd_options(["require-pap", "noauth"])
    assert not p.authenticates_peer


def test_next_offer_after_nak() -> None:
    p = AuthPolicy(require=frozenset({M.MSCHAP_V2, M.CHAP_MD5, M.PAP}))
    assert p.next_offer(M.MSCHAP_V2, M.PAP) == M.PAP  # the peer's suggestion, if we offer it
    assert p.next_offer(M.MSCHAP_V2, M.EAP) == M.CHAP_MD5  # else our next one
    assert p.next_offer(M.PAP, None) is None  # nothing after the last
    assert p.next_offer(M.EAP, None) == M.MSCHAP_V2  # not ours at all: start from the top


def test_custom_order() -> None:
    p = AuthPolicy(auth_required=True, server_order=(M.PAP, M.MSCHAP_V2))
    assert p.offered_methods() == (M.PAP, M.MSCHAP_V2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_order": (M.PAP, M.PAP)},
        {"require": frozenset({M.EAP}), "server_order": (M.PAP,)},
        {"require": {M.PAP}},
    ],
)
def test_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AuthPolicy(**kwargs)  # type: ignore[arg-type]
