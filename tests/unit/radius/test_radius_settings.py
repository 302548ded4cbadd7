"""RADIUS settings: server addresses, the secret file, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptpkit.errors import ConfigError
from pptpkit.radius.settings import RadiusSetup, parse_server, read_secret


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 1812)),
    ("192.0.2.1:11812", ("192.0.2.1", 11812)),
    ("[2001:db8::1]", ("2001:db8::1", 1812)),
    ("[2001:db8::1]:1645", ("2001:db8::1", 1645)),
    ("2001:db8::1", ("2001:db8::1", 1812)),
])
def test_server_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text, 1812) == expected


def test_names_resolve_once_at_start() -> None:
    assert parse_server("localhost:1645", 1812) == ("127.0.0.1", 1645)


@pytest.mark.parametrize("text", [":1812", "192.0.2.1:0", "192.0.2.1:x", "[2001:db8::1", "[::1]x"])
def test_bad_servers(text: str) -> None:
    with pytest.raises(ConfigError, match="RADIUS server"):
        parse_server(text, 1812)


def test_secret_file(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("# the shared secret\n\n  s3cret  \nignored\n")
    assert read_secret(str(f)) == b"s3cret"
    f.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no RADIUS secret"):
        read_secret(str(f))
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(str(tmp_path / "missing"))


def _build(tmp_path: Path, **kw: object) -> RadiusSetup | None:
    f = tmp_path / "secret"
    f.write_text("testing123\n")
    args: dict[str, object] = dict(auth_servers=("192.0.2.1",), acct_servers=(), secret_file=str(f),
                                   timeout=3.0, retries=2, nas_identifier=None, nas_ip_address=None)
    args.update(kw)
    return RadiusSetup.build(**args)  # type: ignore[arg-type]


def test_build_defaults(tmp_path: Path) -> None:
    setup = _build(tmp_path)
    assert setup is not None and setup.auth is not None and setup.acct is not None
    assert [s.endpoint for s in setup.auth.servers] == [("192.0.2.1", 1812)]
    assert [s.endpoint for s in setup.acct.servers] == [("192.0.2.1", 1813)]
    assert setup.nas.nas_identifier == "pptpkit"
    assert "testing123" not in repr(setup)
    assert _build(tmp_path, auth_servers=(), secret_file=None) is None


def test_build_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secret-file"):
        _build(tmp_path, secret_file=None)
    with pytest.raises(ConfigError, match="at least 60"):
        _build(tmp_path, interim=10.0)
    with pytest.raises(ConfigError, match="dae-client"):
        _build(tmp_path, dae_listen="192.0.2.2")
    with pytest.raises(ConfigError, match="not an IPv4"):
        _build(tmp_path, nas_ip_address="x")
    with pytest.raises(ConfigError, match="no --radius-server"):
        _build(tmp_path, auth_servers=(), dae_listen="192.0.2.2")
    setup = _build(tmp_path, dae_listen="192.0.2.2", dae_clients=("192.0.2.9",))
    assert setup is not None and setup.dae_listen == ("192.0.2.2", 3799)


def test_secrets_per_server_from_a_servers_file(tmp_path: Path) -> None:
    setup = _build(tmp_path, auth_servers=("192.0.2.1", "localhost:1645"), secret_file=None,
                   server_secrets={"192.0.2.1": b"one", "localhost": b"two"})
    assert setup is not None and setup.auth is not None and setup.acct is not None
    assert [(s.endpoint, s.secret) for s in setup.auth.servers] == [
        (("192.0.2.1", 1812), b"one"), (("127.0.0.1", 1645), b"two")]
    assert [s.endpoint for s in setup.acct.servers] == [("192.0.2.1", 1813), ("127.0.0.1", 1813)]
    with pytest.raises(ConfigError, match="no secret for it"):
        _build(tmp_path, auth_servers=("192.0.2.7",), secret_file=None, server_secrets={})
    with pytest.raises(ConfigError, match="needs --radius-secret-file"):
        _build(tmp_path, secret_file=None, server_secrets={"192.0.2.1": b"x"}, dae_listen="192.0.2.2",
               dae_clients=("192.0.2.9",))


def test_radius_narrows_mppe_never_relaxes_it() -> None:
    from pptpkit.ppp.session_config import MppePolicy
    from pptpkit.radius.access import AccessResult
    from pptpkit.vpn.server import radius_mppe_policy

    optional = MppePolicy(bits_40=True, bits_128=True, required=False)
    answer = AccessResult(accepted=True, encryption_policy=2, encryption_types=4)
    narrowed = radius_mppe_policy(optional, answer)
    assert isinstance(narrowed, MppePolicy) and narrowed.required
    assert narrowed.bits_128 and not narrowed.bits_40
    strict = MppePolicy(bits_40=False, bits_128=True, required=True)
    assert radius_mppe_policy(strict, AccessResult(accepted=True, encryption_policy=1)) is strict
    clash = radius_mppe_policy(strict, AccessResult(accepted=True, encryption_types=2))
    assert isinstance(clash, str) and "no MPPE key length" in clash
