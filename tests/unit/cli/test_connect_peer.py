"""``pptpkit connect --peer NAME``: a pptpsetup profile as the built-in client's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pptpkit.cli.main import main
from pptpkit.compat.peerprofile import read_peer_profile
from pptpkit.errors import ConfigError

PROFILE = """\
# written by pptpsetup
pty "/usr/sbin/pptp 192.0.2.1 --nolaunchpppd --localbind 192.0.2.2"
lock
noauth
nobsdcomp
nodeflate
name alice
remotename vpn
ipparam vpn
require-mppe-128
"""


def etc(tmp_path: Path, profile: str = PROFILE, secrets: str = 'alice vpn "a pw" *\n') -> Path:
    (tmp_path / "peers").mkdir()
    (tmp_path / "peers" / "vpn").write_text(profile)
    (tmp_path / "chap-secrets").write_text(secrets)
    return tmp_path


def test_profile_as_pptpsetup_writes_it(tmp_path: Path) -> None:
    p = read_peer_profile("vpn", etc_dir=str(etc(tmp_path)))
    assert (p.server, p.user, p.password, p.local_address) == ("192.0.2.1", "alice", "a pw", "192.0.2.2")
    assert p.mppe is not None and p.mppe.required and p.mppe.bits_128
    assert not p.persist and p.max_retries is None
    assert any("ipparam" in n for n in p.notices)  # said, not dropped


def test_client_options(tmp_path: Path) -> None:
    extra = "persist\nmaxfail 4\nholdoff 2\ndefaultroute\nusepeerdns\nmtu 1300\nlcp-echo-interval 5\nunit 2\n"
    p = read_peer_profile("vpn", etc_dir=str(etc(tmp_path, PROFILE + extra)))
    assert (p.persist, p.max_retries, p.holdoff) == (True, 4, 2.0)
    assert p.default_route and p.dns and p.mtu == 1300 and p.echo_interval == 5.0 and p.ifname == "ppp2"


@pytest.mark.parametrize(("extra", "needle"), [
    ("proxyarp\n", "vpn:11: proxyarp: not supported by pptpkit connect"),
    ("auth\n", "vpn:11: the client does not authenticate the server"),
    ("ms-dns 192.0.2.53\n", "vpn:11: ms-dns: not supported"),
    ("updetach\n", "vpn:11: updetach"),
])
def test_what_connect_cannot_honour_is_refused_at_its_line(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        read_peer_profile("vpn", etc_dir=str(etc(tmp_path, PROFILE + extra)))


@pytest.mark.parametrize(("pty", "needle"), [
    ('pty "pppoe -I eth0"', "needs a profile that runs pptp-linux"),
    ('pty "/usr/sbin/pptp 192.0.2.1"', "without --nolaunchpppd"),
    ('pty "/usr/sbin/pptp --nolaunchpppd"', "no server"),
    ('pty "/usr/sbin/pptp 192.0.2.1 --nolaunchpppd --sync"', "--sync is not supported"),
])
def test_the_pty_command_must_be_pptp(tmp_path: Path, pty: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        read_peer_profile("vpn", etc_dir=str(etc(tmp_path, PROFILE.replace(PROFILE.splitlines()[1], pty))))


def test_missing_secret_and_profile(tmp_path: Path) -> None:
    d = etc(tmp_path, secrets="bob vpn x *\n")
    with pytest.raises(ConfigError, match="no secret for 'alice' towards 'vpn'"):
        read_peer_profile("vpn", etc_dir=str(d))
    with pytest.raises(ConfigError, match="no such peer profile"):
        read_peer_profile("other", etc_dir=str(d))
    with pytest.raises(ConfigError, match="a profile name, not a path"):
        read_peer_profile("../x", etc_dir=str(d))


def test_cli_usage_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PPTPKIT_PPP_ETC", str(etc(tmp_path, PROFILE + "proxyarp\n")))
    assert main(["connect", "--peer", "vpn"]) == 2
    assert "vpn:11: proxyarp: not supported by pptpkit connect" in capsys.readouterr().err
    assert main(["connect", "192.0.2.1"]) == 2
    assert "give SERVER and --user, or --peer NAME" in capsys.readouterr().err
