"""The default of ``pptpkit server --workers``: a worker per CPU this process may run on,
except where several workers cannot run (program mode, port 0, a shared interface name with
no room for the index), where it is one and an explicit count above one is an error.  The
count is read from the settings after every layer (defaults, pptpd.conf, flags)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pptpkit.cli.main import build_parser
from pptpkit.cli.server import server_settings
from pptpkit.errors import ConfigError
from pptpkit.gre.partition import MAX_WORKERS
from pptpkit.vpn.settings import ServerSettings, available_cpus

POOL = ("--local-ip", "198.51.100.1", "--remote-ip", "198.51.100.10-20")


@pytest.fixture
def cpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many CPUs the affinity mask holds (set ``cpus[0]``)."""
    count = [4]
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(count[0])))
    return count


def settings_of(*argv: str) -> ServerSettings:
    settings = server_settings(build_parser().parse_args(["server", *argv]))
    settings.check_workers()
    return settings


def test_the_default_is_the_affinity_not_the_machine(cpus: list[int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 32)
    assert available_cpus() == 4
    assert settings_of(*POOL).worker_count == 4
    cpus[0] = 2
    assert settings_of(*POOL).worker_count == 2


def test_one_cpu_is_one_worker(cpus: list[int]) -> None:
    cpus[0] = 1
    assert settings_of(*POOL).worker_count == 1


def test_the_default_is_capped(cpus: list[int]) -> None:
    cpus[0] = MAX_WORKERS * 2
    assert settings_of(*POOL).worker_count == MAX_WORKERS


def test_without_an_affinity_call_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(pid: int) -> set[int]:
        raise OSError("no affinity here")

    monkeypatch.setattr("os.sched_getaffinity", missing)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert available_cpus() == 3
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert available_cpus() == 1


def test_explicit_values_win_over_the_cpus(cpus: list[int]) -> None:
    assert settings_of(*POOL, "--workers", "1").worker_count == 1
    cpus[0] = 1
    assert settings_of(*POOL, "--workers", "3").worker_count == 3


def test_program_mode_defaults_to_one_and_refuses_more(cpus: list[int]) -> None:
    assert settings_of("--ppp-program", "/bin/cat").worker_count == 1
    assert settings_of("--ppp-program", "/bin/cat", "--workers", "1").worker_count == 1
    with pytest.raises(ConfigError, match="--workers applies to the built-in mode"):
        settings_of("--ppp-program", "/bin/cat", "--workers", "2")


def test_port_zero_defaults_to_one_and_refuses_more(cpus: list[int]) -> None:
    # The command line takes no port 0 (--listen wants 1..65535): settings made in code can.
    base = ServerSettings(localip=("198.51.100.1",), remoteip=("198.51.100.10",))
    assert settings_of(*POOL, "--listen", "192.0.2.1:1723").worker_count == 4
    ephemeral = replace(base, port=0)
    assert ephemeral.worker_count == 1
    ephemeral.check_workers()
    assert replace(base, port=0, workers=1).worker_count == 1
    with pytest.raises(ConfigError, match="--workers needs a fixed port"):
        replace(base, port=0, workers=2).check_workers()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", *POOL, "--listen", "192.0.2.1:0"])


def test_a_shared_name_without_room_for_the_index(cpus: list[int]) -> None:
    # 15 characters is all an interface name may have: "vpn-concentrat" + "3" fits, "...or" + "3" not.
    assert settings_of(*POOL, "--tun-mode", "shared", "--tun-name", "vpn-concentrat").worker_count == 4
    assert settings_of(*POOL, "--tun-mode", "shared", "--tun-name", "vpn-concentrator").worker_count == 1
    # Per-session names are the kernel's (%d): no index is added, nothing to fit.
    assert settings_of(*POOL, "--tun-name", "vpn-concentrator").worker_count == 4
    with pytest.raises(ConfigError, match="longer than 15"):
        settings_of(*POOL, "--tun-mode", "shared", "--tun-name", "vpn-concentrator", "--workers", "2")
    cpus[0] = 11
    # Worker 10's name has two digits.
    assert settings_of(*POOL, "--tun-mode", "shared", "--tun-name", "vpn-concentra").worker_count == 11
    assert settings_of(*POOL, "--tun-mode", "shared", "--tun-name", "vpn-concentrat").worker_count == 1


def config_settings(tmp_path: Path, conf: str, *flags: str) -> ServerSettings:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "options.pptpd").write_text("")
    path = tmp_path / "pptpd.conf"
    path.write_text(f"option {etc}/options.pptpd\n{conf}")
    settings = server_settings(build_parser().parse_args(["server", "--config", str(path), *flags]),
                               etc_dir=str(etc))
    settings.check_workers()
    return settings


def test_the_config_file_decides_the_mode_and_so_the_default(cpus: list[int], tmp_path: Path) -> None:
    builtin = "localip 198.51.100.1\nremoteip 198.51.100.10-20\nlisten 192.0.2.2\n"
    assert config_settings(tmp_path, builtin).worker_count == 4
    assert config_settings(tmp_path, builtin, "--workers", "2").worker_count == 2
    # pptpd.conf's ppp line is program mode: one, and more is an error as on the command line.
    bridge = "ppp /usr/sbin/pppd\n" + builtin
    assert config_settings(tmp_path, bridge).worker_count == 1
    with pytest.raises(ConfigError, match="--workers applies to the built-in mode"):
        config_settings(tmp_path, bridge, "--workers", "2")
    # A flag over the file: --ppp-program makes program mode, and so one.
    assert config_settings(tmp_path, builtin, "--ppp-program", "/bin/cat").worker_count == 1


def test_the_help_says_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: the CPUs this process may run on" in help_text
    assert "1 with --ppp-program" in help_text
