"""The built-in server's settings."""

from __future__ import annotations

import pytest

from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.errors import ConfigError
from pptpkit.ppp.session_config import MppePolicy
from pptpkit.vpn.pool import AddressPool
from pptpkit.vpn.server import BuiltinConfig


def test_builtin_config_defaults_and_validation() -> None:
    pool = AddressPool(["198.51.100.1"], ["198.51.100.10"])
    secrets = StaticSecrets({("alice", "pptpd"): "pw"})
    cfg = BuiltinConfig(pool=pool, secrets=secrets)
    assert cfg.mppe.required and cfg.mppe.bits_128 and not cfg.mppe.bits_40
    assert cfg.auth_policy.authenticates_peer and cfg.mru == 1400
    session = cfg.session_config(None)
    assert str(session.local_address) == "198.51.100.1" and session.authenticator is not None
    with pytest.raises(ConfigError, match="without authentication"):
        BuiltinConfig(pool=pool, secrets=secrets, auth_policy=AuthPolicy())
    noauth = BuiltinConfig(pool=pool, secrets=secrets, auth_policy=AuthPolicy(), mppe=MppePolicy.nomppe())
    assert noauth.session_config(None).authenticator is None
    with pytest.raises(ConfigError):
        BuiltinConfig(pool=pool, secrets=secrets, max_sessions=0)
