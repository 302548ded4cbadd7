"""``pptpkit server --config pptpd.conf``: the settings the server runs with, both modes, and
the order of the layers: defaults, then the files, then the flags."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pptpkit.auth.methods import AuthMethod
from pptpkit.cli.main import build_parser
from pptpkit.cli.server import builtin_config, server_settings
from pptpkit.errors import ConfigError
from pptpkit.vpn.settings import ServerSettings


def settings_for(tmp_path: Path, conf: str, options: str | None = None, etc_options: str = "",
                 flags: tuple[str, ...] = ()) -> ServerSettings:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    if etc_options:
        (etc / "options").write_text(etc_options)
    if options is not None:
        (etc / "options.pptpd").write_text(options)
        conf = f"option {etc}/options.pptpd\n" + conf
    path = tmp_path / "pptpd.conf"
    path.write_text(conf)
    args = build_parser().parse_args(["server", "--config", str(path), *flags])
    return server_settings(args, etc_dir=str(etc))


def test_bridge_mode(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "ppp /usr/sbin/pppd\nlocalip 198.51.100.1\nremoteip 198.51.100.2-3\n"
                               "listen 192.0.2.2\nnoipparam\nspeed 9600\nconnections 7\ndebug\n",
                     options="")
    assert s.ppp_program == "/usr/sbin/pppd" and s.option_file is not None
    assert s.option_file.endswith("options.pptpd")
    assert s.localip == ("198.51.100.1",) and s.remoteip == ("198.51.100.2", "198.51.100.3")
    assert (s.listen, s.port) == ("192.0.2.2", 1723) and s.noipparam and s.speed == 9600
    assert s.connections == 7 and s.verbose == 1


def test_builtin_mode_from_debian_options(tmp_path: Path) -> None:
    s = settings_for(
        tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
        options="name vpn\nrefuse-pap\nrequire-mschap-v2\nrequire-mppe-128\nms-dns 198.51.100.53\n"
                "mru 1400\nnobsdcomp\nnovj\nlock\n",
        etc_options="asyncmap 0\nauth\ncrtscts\nlock\nmodem\nlcp-echo-interval 30\nlcp-echo-failure 4\n")
    assert s.ppp_program is None and s.option_file is None
    assert s.name == "vpn" and s.auth.offered_methods() == (AuthMethod.MSCHAP_V2,)
    assert s.mppe.required and s.mppe.bits_128 and not s.mppe.bits_40
    assert s.dns == (ipaddress.IPv4Address("198.51.100.53"),) and s.mtu == 1400
    assert (s.echo_interval, s.echo_failure) == (30.0, 4)  # from /etc/ppp/options, like pppd
    assert s.localip == ("198.51.100.1",) and len(s.remoteip or ()) == 11
    assert s.secrets == str(tmp_path / "etc" / "chap-secrets")


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    conf = "localip 198.51.100.1\nremoteip 198.51.100.10-20\nconnections 7\nlisten 192.0.2.2\n"
    options = "require-mschap-v2\nrequire-mppe-128\nms-dns 198.51.100.53\nlcp-echo-interval 30\n"
    # Defaults, where neither the files nor the flags say anything.
    defaults = ServerSettings()
    layered = settings_for(tmp_path, conf, options=options)
    assert (layered.window, layered.max_sessions, layered.name) == (
        defaults.window, defaults.max_sessions, defaults.name)
    # The files over the defaults.
    assert (layered.connections, layered.listen, layered.echo_interval) == (7, "192.0.2.2", 30.0)
    assert layered.connections != defaults.connections and layered.echo_interval != defaults.echo_interval
    # The flags over the files, and only the flags given.
    flagged = settings_for(tmp_path, conf, options=options, flags=(
        "--connections", "9", "--echo-interval", "5", "--dns", "198.51.100.54", "--mppe-optional",
        "--secrets", "/srv/secrets", "--remote-ip", "198.51.100.30-31"))
    assert (flagged.connections, flagged.echo_interval, flagged.secrets) == (9, 5.0, "/srv/secrets")
    assert flagged.dns == (ipaddress.IPv4Address("198.51.100.54"),)
    assert flagged.remoteip == ("198.51.100.30", "198.51.100.31")
    assert not flagged.mppe.required
    assert (flagged.listen, flagged.localip, flagged.auth) == (layered.listen, layered.localip, layered.auth)
    assert flagged.window == defaults.window


def test_flag_overrides_file_mppe_and_auth(tmp_path: Path) -> None:
    conf = "localip 198.51.100.1\nremoteip 198.51.100.10\n"
    s = settings_for(tmp_path, conf, options="auth\nmppe-stateful\n",
                     flags=("--require-mppe", "--require-pap"))
    assert s.mppe.required and s.mppe.bits_40 and s.mppe.bits_128
    assert s.mppe.stateful  # a mode flag keeps what the file said about stateful MPPE
    assert s.auth.offered_methods() == (AuthMethod.PAP,)
    s = settings_for(tmp_path, conf, options="require-mschap-v2\nnomppe\n",
                     flags=("--noauth", "--no-mppe"))
    assert not s.auth.authenticates_peer and not s.mppe.allowed


def test_flag_selected_program_mode_does_not_read_pppd_options(tmp_path: Path) -> None:
    # Without 'ppp' in the file the built-in mode would refuse 'defaultroute'; --ppp-program wins.
    s = settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10\n",
                     options="defaultroute\n", flags=("--ppp-program", "/usr/sbin/pppd"))
    assert s.ppp_program == "/usr/sbin/pppd" and not s.builtin


@pytest.mark.parametrize(("options", "needle"), [
    ("require-mschap-v2\ndefaultroute\n", "options.pptpd:2: defaultroute: not supported"),
    ("require-mschap-v2\nrequire-mppe-40\n", "require-mppe-40 alone"),
    ("noauth\nrequire-mppe-128\n", "noauth with required MPPE"),
    ("require-mschap-v2\nmtu 1600\n", "options.pptpd:2: mtu 1600: the built-in server takes 576..1500"),
    ("require-mschap-v2\npersist\n", "persist: not supported by the built-in server (the server "
                                     "answers calls, it does not redial)"),
    ("require-mschap-v2\nupdetach\n", "updetach: not supported by the built-in server"),
    ("require-mschap-v2\npty 'pptp x'\n", "pty: not supported by the built-in server"),
])
def test_builtin_mode_refuses_what_it_cannot_honour(tmp_path: Path, options: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n", options=options)
    assert needle in str(info.value)


def test_builtin_mode_needs_a_pool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs localip and remoteip"):
        settings_for(tmp_path, "", options="require-mschap-v2\n")


def test_bare_auth_offers_every_method(tmp_path: Path) -> None:
    s = settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10\n", options="auth\n")
    assert s.auth.offered_methods() == (AuthMethod.EAP, AuthMethod.MSCHAP_V2, AuthMethod.MSCHAP_V1,
                                        AuthMethod.CHAP_MD5, AuthMethod.PAP)
    assert s.mppe.allowed and not s.mppe.required


def test_builtin_config_from_settings(tmp_path: Path) -> None:
    secrets = tmp_path / "etc" / "chap-secrets"
    secrets.parent.mkdir()
    secrets.write_text('alice pptpd "pw" *\n')
    s = settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-11\n",
                     options="require-mschap-v2\nrequire-mppe-128\nidle 60\n", flags=("--name", "gw"))
    config = builtin_config(s)
    assert config.name == "gw" and config.pool.size == 2 and config.idle_timeout == 60.0
    assert config.mppe == s.mppe and config.auth_policy == s.auth


def test_builtin_mode_honours_proxyarp(tmp_path: Path) -> None:
    """The stock Debian pptpd-options says proxyarp: the built-in server does it now."""
    s = settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
                     options="require-mschap-v2\nproxyarp\n")
    assert s.proxyarp and s.builtin
