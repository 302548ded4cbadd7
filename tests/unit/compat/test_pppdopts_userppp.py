"""``pptpkit ppp`` start-up: where options, secrets and the password come from, option errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptpkit.auth.secrets import PppSecretsFile
from pptpkit.compat.userppp import EXIT_OPTION_ERROR, load_options, main
from pptpkit.errors import ConfigError
from pptpkit.ppp.session_config import SessionRole


def test_etc_options_are_read_first_and_argv_wins(tmp_path: Path) -> None:
    (tmp_path / "options").write_text("lcp-echo-interval 30\nrequire-mppe-128\n")
    (tmp_path / "chap-secrets").write_text("alice pptpd pw *\n")
    run = load_options(["nomppe", "user", "alice"], {"PPTPKIT_PPP_ETC": str(tmp_path)})
    assert run.options.echo_interval == 30.0 and not run.options.mppe.required
    assert isinstance(run.secrets, PppSecretsFile) and run.etc_dir == str(tmp_path)
    assert run.options.role is SessionRole.CLIENT


def test_password_from_environment_but_options_win(tmp_path: Path) -> None:
    env = {"PPTPKIT_PPP_ETC": str(tmp_path), "PPTPKIT_PASSWORD": "from-env"}
    assert load_options(["user", "a"], env).options.password == "from-env"
    assert load_options(["user", "a", "password", "opt"], env).options.password == "opt"


def test_server_without_chap_secrets_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chap-secrets does not exist"):
        load_options(["auth", "198.51.100.1:198.51.100.2"], {"PPTPKIT_PPP_ETC": str(tmp_path)})


def test_option_errors_exit_2_with_the_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PPTPKIT_PPP_ETC", str(tmp_path))
    (tmp_path / "options.pptpd").write_text("name pptpd\nrequire-mppe-128\nktune\n")
    assert main(["local", "file", str(tmp_path / "options.pptpd")]) == EXIT_OPTION_ERROR
    assert f"{tmp_path}/options.pptpd:3: unsupported pppd option 'ktune'" in capsys.readouterr().err
