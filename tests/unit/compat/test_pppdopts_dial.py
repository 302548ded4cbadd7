"""The options of a dialled link (pptpsetup profiles and pppd's client options)."""

from __future__ import annotations

import pytest

from pptpkit.compat.pppdopts import parse_pppd_text
from pptpkit.compat.userppp import _detach_mode
from pptpkit.errors import ConfigError

PPTPSETUP = """\
# written by pptpsetup
pty "/usr/sbin/pptp 192.0.2.1 --nolaunchpppd"
lock
noauth
nobsdcomp
nodeflate
name alice
remotename vpn
ipparam vpn
require-mppe-128
"""


def test_a_pptpsetup_profile_reads_as_pppd_reads_it() -> None:
    opts = parse_pppd_text(PPTPSETUP, "peers/vpn")
    assert opts.pty == "/usr/sbin/pptp 192.0.2.1 --nolaunchpppd"
    assert (opts.name, opts.remotename, opts.ipparam) == ("alice", "vpn", "vpn")
    assert opts.mppe.required and opts.mppe.bits_128
    assert (opts.persist, opts.maxfail, opts.holdoff) == (False, 10, 30)  # pppd's defaults
    assert _detach_mode(opts) == "now"  # a pppd with a pty goes to the background


def test_client_options() -> None:
    opts = parse_pppd_text(PPTPSETUP + "persist\nmaxfail 0\nholdoff 5\nlinkname office\nunit 3\nupdetach\n"
                           "defaultroute\nreplacedefaultroute\n", "p")
    assert (opts.persist, opts.maxfail, opts.holdoff) == (True, 0, 5)
    assert (opts.linkname, opts.unit, opts.detach) == ("office", 3, "up")
    assert opts.defaultroute and opts.replacedefaultroute
    assert _detach_mode(opts) == "up"
    assert _detach_mode(parse_pppd_text(PPTPSETUP + "nodetach\n", "p")) is None
    assert _detach_mode(parse_pppd_text("noauth\n", "p")) is None  # on stdin: never forks


@pytest.mark.parametrize(("text", "needle"), [
    ("demand\n", "p:1: demand: dial-on-demand is not supported"),
    ("linkname ../x\n", "p:1: linkname '../x'"),
    ("holdoff -1\n", "p:1: holdoff: -1 is not in 0..86400"),
    ("maxfail x\n", "p:1: maxfail: 'x' is not a number"),
])
def test_refused_at_their_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pppd_text(text, "p")
    assert str(info.value).startswith(needle), str(info.value)
