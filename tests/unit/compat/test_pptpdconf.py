"""pptpd.conf: golden files (tests/vectors/pptpdconf), modes, and fuzzing.

Each ``NAME.conf`` has a ``NAME.expected``: the settings that differ from the defaults and the
warnings, or ``error: MESSAGE``.  ``PPTPKIT_UPDATE_GOLDEN=1`` rewrites the expected files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.compat.pptpdconf import PptpdConf, parse_pptpd_conf, read_pptpd_conf
from pptpkit.compat.program import ppp_program_argv
from pptpkit.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "pptpdconf"
CASES = sorted(p.name for p in VECTORS.glob("*.conf"))
DEFAULTS = PptpdConf()


def render(conf: PptpdConf) -> str:
    lines = [f"mode = {'bridge' if conf.bridge_mode else 'builtin'}"]
    for f in dataclasses.fields(PptpdConf):
        value = getattr(conf, f.name)
        if f.name in ("path", "warnings", "lines") or value == getattr(DEFAULTS, f.name):
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        lines.append(f"{f.name} = {value}")
    lines += [f"warning: {w}" for w in conf.warnings]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(VECTORS)
    try:
        got = render(read_pptpd_conf(name))
    except ConfigError as exc:
        got = f"error: {exc}\n"
    expected = VECTORS / (Path(name).stem + ".expected")
    if os.environ.get("PPTPKIT_UPDATE_GOLDEN") == "1":
        expected.write_text(got)
    assert got == expected.read_text()
    assert got.startswith("error: ") == name.startswith("err-")


def test_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pptpkit.compat.pptpdconf"):
        conf = parse_pptpd_conf("option x\n\nbcrelay eth1\n", "f.conf")
    assert conf.warnings == ("f.conf:3: bcrelay: not supported, broadcasts are not relayed between "
                             "interfaces",)
    assert "f.conf:3: bcrelay" in caplog.text


def test_bridge_program_argv_is_pptpds() -> None:
    conf = read_pptpd_conf(str(VECTORS / "bridge.conf"))
    program = conf.program_config()
    pool = program.pool
    assert pool is not None and pool.size == 3  # connections 3 caps the pool
    pair = pool.allocate()
    assert ppp_program_argv(program, "192.0.2.1", pair) == [
        "/usr/local/bin/ppp-wrapper", "local", "file", "/etc/ppp/options.pptpd", "460800",
        "198.51.100.1:198.51.100.10", "remotenumber", "192.0.2.1"]


def test_builtin_mode_needs_a_pool() -> None:
    pool = read_pptpd_conf(str(VECTORS / "builtin.conf")).check_builtin()
    assert [pool.allocate() for _ in range(4)] == [
        ("198.51.100.1", "198.51.100.10"), ("198.51.100.2", "198.51.100.11"), None, None]
    with pytest.raises(ConfigError, match="delegate"):
        read_pptpd_conf(str(VECTORS / "warnings.conf")).check_builtin()
    with pytest.raises(ConfigError, match="needs localip"):
        parse_pptpd_conf("option x\n").check_builtin()
    with pytest.raises(ConfigError, match="remoteip is missing"):
        parse_pptpd_conf("localip 198.51.100.1\n").check_builtin()
    with pytest.raises(ConfigError, match="not a bridge-mode"):
        parse_pptpd_conf("option x\n").program_config()


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_pptpd_conf("/nonexistent/pptpd.conf")


LINES = ["option /x", "ppp /bin/true", "localip 198.51.100.1", "remoteip 198.51.100.2-9",
         "connections 2", "speed 9600", "stimeout 3", "noipparam", "delegate", "logwtmp", "#",
         "listen 192.0.2.1", "bcrelay eth0", "debug", "remoteip 1-2", "stimeout 0"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=20)), max_size=12))
def test_fuzz_only_config_errors(lines: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        conf = parse_pptpd_conf("\n".join(lines), "fuzz")
        with contextlib.suppress(ConfigError):
            conf.address_pool()


def test_numbers_are_ascii_digits() -> None:
    """"1²" passes str.isdigit() but not int(): a ConfigError at its line, not a ValueError."""
    with pytest.raises(ConfigError) as info:
        parse_pptpd_conf("connections 1\u00b2\n", "p.conf")
    assert info.value.line == 1
