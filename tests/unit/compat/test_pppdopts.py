"""pppd options -> SessionConfig, and fuzzing of the options parser."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.compat.pppdopts import NOOP_OPTIONS, parse_pppd_argv, parse_pppd_text
from pptpkit.errors import ConfigError
from pptpkit.ppp.session_config import SessionRole

SECRETS = StaticSecrets({("alice", "pptpd"): "pw"})
PPTPD_OPTIONS = "name pptpd\nrefuse-pap\nrequire-mschap-v2\nrequire-mppe-128\nms-dns 198.51.100.53\n"


def test_server_session_config_from_pptpd_argv(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "options.pptpd"  # type: ignore[operator]
    path.write_text(PPTPD_OPTIONS)
    opts = parse_pppd_argv(["local", "file", str(path), "115200", "198.51.100.1:198.51.100.2",
                            "remotenumber", "192.0.2.1"])
    cfg = opts.session_config(hostname="host", secrets=SECRETS)
    assert cfg.role is SessionRole.SERVER
    assert cfg.authenticator is not None and cfg.authenticator.name == "pptpd"
    assert cfg.auth_policy.offered_methods() == (AuthMethod.MSCHAP_V2,)
    assert cfg.mppe.required and cfg.mppe.bits_128 and not cfg.mppe.bits_40
    assert cfg.local_address == IPv4Address("198.51.100.1")
    assert cfg.peer_address == IPv4Address("198.51.100.2")
    assert cfg.dns_servers == (IPv4Address("198.51.100.53"),)
    assert cfg.echo_interval == 0.0  # pppd's default: no keepalive unless asked


def test_client_session_config() -> None:
    opts = parse_pppd_argv(["name", "alice", "remotename", "pptpd", "require-mppe-128", "noauth",
                            "usepeerdns", "lcp-echo-interval", "5", "lcp-echo-failure", "2"])
    cfg = opts.session_config(hostname="host", secrets=SECRETS)
    assert cfg.role is SessionRole.CLIENT
    assert cfg.authenticator is None
    assert cfg.peer is not None and cfg.peer.username == "alice" and cfg.peer.remote_name == "pptpd"
    assert cfg.peer.password is None and cfg.peer.secrets is SECRETS
    assert cfg.request_dns and cfg.mppe.required
    assert (cfg.echo_interval, cfg.echo_failure) == (5.0, 2)


def test_user_overrides_name_and_hostname_is_the_default() -> None:
    opts = parse_pppd_argv(["user", "bob", "password", "x"])
    cfg = opts.session_config(hostname="host")
    assert cfg.peer is not None and (cfg.peer.username, cfg.peer.password) == ("bob", "x")
    assert parse_pppd_argv(["auth", "1.2.3.4:5.6.7.8"]).session_config(
        hostname="gw", secrets=SECRETS).authenticator.name == "gw"  # type: ignore[union-attr]


def test_server_without_secrets_or_addresses_is_an_error() -> None:
    with pytest.raises(ConfigError, match="secrets"):
        parse_pppd_argv(["require-pap", "1.2.3.4:5.6.7.8"]).session_config(hostname="h")
    with pytest.raises(ConfigError, match="LOCAL:REMOTE"):
        parse_pppd_argv(["auth"]).session_config(hostname="h", secrets=SECRETS)


def test_remote_address_without_user_means_server_role() -> None:
    assert parse_pppd_argv(["noauth", "198.51.100.1:198.51.100.2"]).role is SessionRole.SERVER
    assert parse_pppd_argv(["user", "u", "198.51.100.1:198.51.100.2"]).role is SessionRole.CLIENT


def test_later_options_win_like_pppd() -> None:
    assert not parse_pppd_text("require-mppe-128\nnomppe\n").mppe.required
    assert parse_pppd_text("nomppe-40\nrequire-mppe\n").mppe.required
    with pytest.raises(ConfigError, match="every key length refused"):
        parse_pppd_text("nomppe\nrequire-mppe\n")  # MppePolicy keeps nomppe's lengths off
    assert not parse_pppd_text("require-pap\nnoauth\n").auth_policy.authenticates_peer
    assert parse_pppd_text("debug\nnodebug\n").debug is False


def test_noop_options_are_all_documented_and_accepted() -> None:
    opts = parse_pppd_text("\n".join(NOOP_OPTIONS))
    assert opts.auth_policy.require == frozenset() and not opts.mppe.required
    for reason in NOOP_OPTIONS.values():
        assert len(reason) > 10


@pytest.mark.parametrize("word", ["demand", "connect", "ktune", "defaultroute6",
                                  "require-mppe-56", "refuse-foo", "mppe", "ipx"])
def test_unsupported_options_name_their_line(word: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pppd_text(f"name x\n\n{word}\n", "opts")
    assert (info.value.path, info.value.line) == ("opts", 3)


def test_argv_positions() -> None:
    with pytest.raises(ConfigError) as info:
        parse_pppd_argv(["local", "115200", "bogus"])
    assert str(info.value).startswith("<command line>:3:")


def test_default_files_are_read_first_and_missing_ones_skipped(tmp_path: pytest.TempPathFactory) -> None:
    options = tmp_path / "options"  # type: ignore[operator]
    options.write_text("lcp-echo-interval 30\nrequire-mppe-128\n")
    opts = parse_pppd_argv(["nomppe"], default_files=[str(options), str(options) + ".missing"])
    assert opts.echo_interval == 30.0 and not opts.mppe.required


WORDS = sorted(["name", "user", "file", "call", "ms-dns", "mtu", "asyncmap", "require-mppe-128",
                "nomppe", "noccp", "plugin", "pptpd-original-ip", "198.51.100.1:", "1200",
                "\"", "'", "\\", "#", "\n", " ", "auth", "lcp-echo-interval", "ifname", "x" * 300])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=30))
def test_fuzz_text_only_config_errors(words: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        parse_pppd_text(" ".join(words), "fuzz", etc_dir="/nonexistent")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=20))
def test_fuzz_argv_only_config_errors(argv: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        parse_pppd_argv(argv, etc_dir="/nonexistent")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(PPTPD_OPTIONS)), st.binary(max_size=8))
def test_fuzz_mutated_valid_file(cut: int, junk: bytes) -> None:
    text = PPTPD_OPTIONS[:cut] + junk.decode("latin-1") + PPTPD_OPTIONS[cut:]
    with contextlib.suppress(ConfigError):
        parse_pppd_text(text, "fuzz")
