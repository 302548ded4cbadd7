"""``pptpkit server --config pptpd.conf``: the namespace the server runs with, both modes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pptpkit.cli.main import build_parser
from pptpkit.compat.pptpdconf import apply_to_server_args
from pptpkit.errors import ConfigError


def server_args(tmp_path: Path, conf: str, options: str | None = None,
                etc_options: str = "") -> argparse.Namespace:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    if etc_options:
        (etc / "options").write_text(etc_options)
    if options is not None:
        (etc / "options.pptpd").write_text(options)
        conf = f"option {etc}/options.pptpd\n" + conf
    path = tmp_path / "pptpd.conf"
    path.write_text(conf)
    args = build_parser().parse_args(["server", "--config", str(path)])
    apply_to_server_args(args, etc_dir=str(etc))
    return args


def test_bridge_mode(tmp_path: Path) -> None:
    args = server_args(tmp_path, "ppp /usr/sbin/pppd\nlocalip 198.51.100.1\nremoteip 198.51.100.2-3\n"
                                 "listen 192.0.2.2\nnoipparam\nspeed 9600\nconnections 7\ndebug\n",
                       options="")
    assert args.ppp_program == "/usr/sbin/pppd" and args.option.endswith("options.pptpd")
    assert args.localip == ["198.51.100.1"] and args.remoteip == ["198.51.100.2", "198.51.100.3"]
    assert args.listen == ("192.0.2.2", 1723) and args.noipparam and args.speed == 9600
    assert args.connections == 7 and args.verbose == 1


def test_builtin_mode_from_debian_options(tmp_path: Path) -> None:
    args = server_args(
        tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
        options="name vpn\nrefuse-pap\nrequire-mschap-v2\nrequire-mppe-128\nms-dns 198.51.100.53\n"
                "mru 1400\nnobsdcomp\nnovj\nlock\n",
        etc_options="asyncmap 0\nauth\ncrtscts\nlock\nmodem\nlcp-echo-interval 30\nlcp-echo-failure 4\n")
    assert args.ppp_program is None and args.option is None
    assert (args.name, args.require, args.mppe, args.noauth) == ("vpn", ["mschap-v2"], "128", False)
    assert args.dns == ["198.51.100.53"] and args.mtu == 1400
    assert (args.echo_interval, args.echo_failure) == (30.0, 4)  # from /etc/ppp/options, like pppd
    assert args.localip == ["198.51.100.1"] and len(args.remoteip) == 11


@pytest.mark.parametrize(("options", "needle"), [
    ("require-mschap-v2\nproxyarp\n", "options.pptpd:2]"),
    ("require-mschap-v2\nrequire-mppe-40\n", "require-mppe-40 alone"),
    ("noauth\nrequire-mppe-128\n", "noauth with required MPPE"),
    ("require-mschap-v2\nmtu 1400\n", "mtu: not supported"),
    ("require-mschap-v2\npersist\n", "options.pptpd:2: unsupported pppd option 'persist'"),
])
def test_builtin_mode_refuses_what_it_cannot_honour(tmp_path: Path, options: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        server_args(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n", options=options)
    assert needle in str(info.value)


def test_builtin_mode_needs_a_pool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs localip and remoteip"):
        server_args(tmp_path, "", options="require-mschap-v2\n")


def test_bare_auth_offers_every_method(tmp_path: Path) -> None:
    args = server_args(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10\n", options="auth\n")
    assert args.require == ["eap", "mschap-v2", "mschap", "chap", "pap"]
    assert args.mppe == "optional"
