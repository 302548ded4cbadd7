"""pppd's radius plugin configuration: radiusclient.conf, its servers file, and the pptpd
options that load the plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pptpdconf_server import settings_for

from pptpkit.cli.server import radius_setup
from pptpkit.compat.radiusclient import read_radiusclient_conf, read_servers_file
from pptpkit.compat.userppp import load_options
from pptpkit.errors import ConfigError

# What the Debian radiusclient packages ship, with the servers set.
RADIUSCLIENT_CONF = """\
# General settings
auth_order	radius
login_tries	4
login_timeout	60
nologin /etc/nologin
issue	/etc/radiusclient/issue
authserver 	192.0.2.10:1812 192.0.2.11
acctserver 	192.0.2.10:1813
servers		{servers}
dictionary 	/etc/radiusclient/dictionary
login_radius	/usr/sbin/login.radius
seqfile		/var/run/radius.seq
mapfile		/etc/radiusclient/port-id-map
default_realm
radius_timeout	5
radius_retries	2
bindaddr *
login_local	/bin/login
nas-identifier pptp-gw-1
"""


def write_conf(tmp_path: Path, extra: str = "",
               servers: str = "192.0.2.10 s3cret\n192.0.2.11 other\n") -> Path:
    (tmp_path / "servers").write_text("# host secret\n" + servers)
    conf = tmp_path / "radiusclient.conf"
    conf.write_text(RADIUSCLIENT_CONF.format(servers=tmp_path / "servers") + extra)
    return conf


def test_the_packaged_file_reads(tmp_path: Path) -> None:
    rc = read_radiusclient_conf(str(write_conf(tmp_path)))
    assert rc.authservers == ("192.0.2.10:1812", "192.0.2.11") and rc.acctservers == ("192.0.2.10:1813",)
    assert (rc.timeout, rc.retries, rc.nas_identifier) == (5.0, 2, "pptp-gw-1")
    # The library-only keywords are said, with their lines, not dropped in silence.
    assert any(":3: login_tries" in n for n in rc.notices) and len(rc.notices) == 9
    assert read_servers_file(str(tmp_path / "servers")) == {"192.0.2.10": b"s3cret", "192.0.2.11": b"other"}


@pytest.mark.parametrize(("extra", "line", "needle"), [
    ("default_realm example.net\n", 20, "realms"),
    ("auth_order radius,local\n", 20, "only 'radius'"),
    ("bindaddr 192.0.2.2\n", 20, "bindaddr"),
    ("authserver 192.0.2.12:1812:secret\n", 20, "servers file"),
    ("frobnicate yes\n", 20, "unknown radiusclient.conf keyword"),
    ("radius_timeout x\n", 20, "needs a number"),
])
def test_what_cannot_be_honoured_is_an_error_at_its_line(tmp_path: Path, extra: str, line: int,
                                                         needle: str) -> None:
    conf = write_conf(tmp_path, extra)
    with pytest.raises(ConfigError, match=needle) as info:
        read_radiusclient_conf(str(conf))
    assert f"{conf}:{line}:" in str(info.value)


def test_bad_servers_file_line(tmp_path: Path) -> None:
    (tmp_path / "servers").write_text("192.0.2.10\n")
    with pytest.raises(ConfigError, match=r"servers:1: expected 'HOST SECRET'"):
        read_servers_file(str(tmp_path / "servers"))


def test_pptpd_options_with_the_radius_plugin(tmp_path: Path) -> None:
    conf = write_conf(tmp_path)
    s = settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
                     options=f"name pptpd\nrequire-mschap-v2\nrequire-mppe-128\nplugin radius.so\n"
                             f"radius-config-file {conf}\n")
    assert s.radius_servers == ("192.0.2.10:1812", "192.0.2.11")
    assert s.radius_servers_file == str(tmp_path / "servers")
    assert (s.radius_timeout, s.radius_retries, s.nas_identifier) == (5.0, 2, "pptp-gw-1")
    setup = radius_setup(s)
    assert setup is not None and setup.auth is not None and setup.acct is not None
    assert [(x.endpoint, x.secret) for x in setup.auth.servers] == [
        (("192.0.2.10", 1812), b"s3cret"), (("192.0.2.11", 1812), b"other")]
    assert [x.endpoint for x in setup.acct.servers] == [("192.0.2.10", 1813)]


def test_radius_config_file_needs_the_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.pptpd:1: radius-config-file is an option of"):
        settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
                     options="radius-config-file /x\n")


def test_missing_default_radiusclient_conf_names_the_plugin_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.pptpd:2: plugin radius\.so: ") as info:
        settings_for(tmp_path, "localip 198.51.100.1\nremoteip 198.51.100.10-20\n",
                     options="require-mschap-v2\nplugin radius.so\n")
    assert "radiusclient.conf" in str(info.value)


def test_pptpkit_ppp_refuses_the_radius_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pptpkit ppp does no RADIUS"):
        load_options(["plugin", "radius.so", "noauth"], {"PPTPKIT_PPP_ETC": str(tmp_path)})
