"""pptpd's program mode: the PPP program's argv (pptpctrl's, see INTEROP.md) and its settings."""

from __future__ import annotations

import pytest

from pptpkit.compat.program import PppProgramConfig, ppp_program_argv
from pptpkit.errors import ConfigError


def test_program_argv_like_pptpd_noipparam() -> None:
    cfg = PppProgramConfig(program="/usr/sbin/pppd", noipparam=True)
    argv = ppp_program_argv(cfg, "192.0.2.1", ("198.51.100.1", "198.51.100.2"))
    assert argv == ["/usr/sbin/pppd", "local", "115200", "198.51.100.1:198.51.100.2", "remotenumber",
                    "192.0.2.1"]


def test_program_argv_full() -> None:
    cfg = PppProgramConfig(program="/p", program_args=("-m", "mod"), option_file="/etc/ppp/opts",
                           speed="9600")
    argv = ppp_program_argv(cfg, "192.0.2.7", ("198.51.100.1", "198.51.100.5"))
    assert argv == ["/p", "-m", "mod", "local", "file", "/etc/ppp/opts", "9600",
                    "198.51.100.1:198.51.100.5", "ipparam", "192.0.2.7", "remotenumber", "192.0.2.7"]


def test_program_argv_delegate() -> None:
    cfg = PppProgramConfig(program="/p", delegate=True)
    assert ppp_program_argv(cfg, "192.0.2.7", None) == [
        "/p", "local", "115200", "ipparam", "192.0.2.7", "remotenumber", "192.0.2.7"]


def test_bad_speed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="speed"):
        PppProgramConfig(program="/p", speed="fast")
