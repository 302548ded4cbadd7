from __future__ import annotations

import pytest
from auth_testlib import Link

from pptpkit.auth.base import AuthenticatorConfig, AuthSucceeded, PeerConfig, Role
from pptpkit.auth.factory import create_engine
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import ConfigError, StateError


@pytest.mark.parametrize("method", list(AuthMethod))
def test_every_method_both_roles(method: AuthMethod) -> None:
    secrets = StaticSecrets({("u", "srv"): "pw"})
    a = create_engine(method, Role.AUTHENTICATOR, AuthenticatorConfig(name="srv", secrets=secrets), 0.0)
    p = create_engine(method, Role.PEER, PeerConfig(username="u", password="pw"), 0.0)
    assert a.method is method and p.method is method
    assert a.role is Role.AUTHENTICATOR and p.role is Role.PEER
    assert a.protocol == method.protocol
    link = Link(a, p)
    link.start()
    assert isinstance(a.result, AuthSucceeded) and isinstance(p.result, AuthSucceeded)
    assert a.succeeded and p.succeeded and not a.failed
    with pytest.raises(StateError):
        a.start(1.0)
    # after stop() the engine is inert
    a.stop()
    a.receive(b"\x01\x02\x00\x04", 2.0)
    assert a.counters.ignored >= 1 and a.get_timer() is None


def test_wrong_config_type() -> None:
    with pytest.raises(ConfigError):
        create_engine(AuthMethod.PAP, Role.PEER, AuthenticatorConfig(name="s", secrets=StaticSecrets()), 0.0)
    with pytest.raises(ConfigError):
        create_engine(AuthMethod.PAP, Role.AUTHENTICATOR, PeerConfig(username="u", password="p"), 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "x" * 256},
        {"name": "\u20ac"},
        {"restart_interval": 0},
        {"max_transmits": 0},
        {"eap_methods": (5,)},
        {"eap_methods": ()},
        {"eap_methods": (4, 4)},
        {"mschap_retries": -1},
        {"rechallenge_interval": 0},
    ],
)
def test_authenticator_config_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"name": "s", "secrets": StaticSecrets()}
    base.update(kwargs)
    with pytest.raises(ConfigError):
        AuthenticatorConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": None},
        {"timeout": -1},
        {"eap_methods": (1,)},
        {"username": "x" * 256},
    ],
)
def test_peer_config_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"username": "u", "password": "p"}
    base.update(kwargs)
    with pytest.raises(ConfigError):
        PeerConfig(**base)  # type: ignore[arg-type]
