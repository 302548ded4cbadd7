"""``pptpkit server --shaper``: the setting, its errors, and the extension it runs."""

from __future__ import annotations

import pytest

from pptpkit.auth.secrets import RateLimit
from pptpkit.cli.main import build_parser
from pptpkit.cli.server import extensions, program_config, server_settings
from pptpkit.errors import ConfigError
from pptpkit.ops.shaper import Shaper

POOL = ("--local-ip", "198.51.100.1", "--remote-ip", "198.51.100.10-50", "--no-ctl")


def test_shaper_flag_and_extension() -> None:
    settings = server_settings(build_parser().parse_args(["server", *POOL, "--shaper", "4M/512k",
                                                          "--tun-mode", "shared"]))
    assert settings.shaper == RateLimit(4000, 512)
    [shaper] = [e for e in extensions(settings) if isinstance(e, Shaper)]
    assert shaper.default == RateLimit(4000, 512) and shaper.shared


def test_without_the_flag_secrets_rates_still_apply() -> None:
    settings = server_settings(build_parser().parse_args(["server", *POOL]))
    assert settings.shaper is None
    [shaper] = [e for e in extensions(settings) if isinstance(e, Shaper)]
    assert shaper.default is None and not shaper.shared


def test_bad_rate_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", *POOL, "--shaper", "fast"])
    assert "bad rate 'fast'" in capsys.readouterr().err


def test_program_mode_cannot_shape() -> None:
    args = build_parser().parse_args(["server", "--ppp-program", "/bin/cat", "--delegate", "--shaper", "1M"])
    with pytest.raises(ConfigError, match="--shaper applies to the built-in mode"):
        program_config(server_settings(args))
