"""Authentication x MPPE policy pairings between ``pptpkit connect`` and ``pptpkit server``.

Server: requires MPPE-128 / no MPPE / MPPE optional, each with one authentication method
(PAP, CHAP, MS-CHAP, MS-CHAPv2, EAP).  Client: ``--require-mppe-128`` / ``--no-mppe`` / the
default (accept what is offered).  MPPE keys come from MS-CHAP (v1, v2, or EAP-MS-CHAPv2), so
with PAP or CHAP-MD5 any side that *requires* MPPE must fail.  Every pairing that should connect
must connect with the expected encryption and pass a ping; every other one must end with exit
status 10 (negotiation failed, MPPE refused) and one line on stderr.  The three clients of one
server configuration run at the same time against the same server process.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root
from e2e_support import TUNNEL_LOCAL, VpnLab
from netns import NetnsLab

pytestmark = [pytest.mark.root]

SERVER_MPPE = {"require-128": "--require-mppe-128", "none": "--no-mppe", "optional": "--mppe-optional"}
CLIENT_MPPE = {"require-128": ["--require-mppe-128"], "none": ["--no-mppe"], "default": []}
AUTH = ("pap", "chap", "mschap", "mschap-v2", "eap")
WITH_KEYS = frozenset({"mschap", "mschap-v2", "eap"})


def expected(server: str, client: str, auth: str) -> tuple[int | None, str]:
    """(exit status or None when it must connect, the MPPE the link must show)."""
    keys = auth in WITH_KEYS
    if server == "require-128" and (client == "none" or not keys):
        return 10, ""
    if client == "require-128" and (server == "none" or not keys):
        return 10, ""
    on = keys and server != "none" and client != "none"
    return None, "MPPE 128-bit stateless" if on else "none"


def test_expectations_cover_both_outcomes() -> None:
    results = {expected(s, c, a)[0] for s in SERVER_MPPE for c in CLIENT_MPPE for a in AUTH}
    assert results == {None, 10}
    assert expected("optional", "default", "mschap-v2") == (None, "MPPE 128-bit stateless")
    assert expected("optional", "default", "pap") == (None, "none")


@pytest.fixture
def vpn(tmp_path: Path) -> Iterator[VpnLab]:
    require_root()
    lab = NetnsLab("pkmx")
    try:
        yield VpnLab(lab, tmp_path)
    finally:
        lab.close()


@pytest.mark.parametrize("auth", AUTH)
@pytest.mark.parametrize("server_mppe", list(SERVER_MPPE))
def test_policy_matrix(vpn: VpnLab, server_mppe: str, auth: str) -> None:
    vpn.start_server(SERVER_MPPE[server_mppe], f"--require-{auth}")
    clients = {name: vpn.connect(*flags, "--echo-interval", "0") for name, flags in CLIENT_MPPE.items()}
    for name, client in clients.items():
        code, mppe = expected(server_mppe, name, auth)
        what = f"server {server_mppe}, client {name}, auth {auth}"
        if code is None:
            up = client.wait_up(30)
            assert up["mppe"] == mppe, (what, up)
            assert up["auth"] == auth, (what, up)
            ping = vpn.ping(vpn.client_ns, TUNNEL_LOCAL, count=1, interface=up["interface"])
            assert ping.returncode == 0, (what, ping.stdout, ping.stderr)
        else:
            status = client.wait_exit(40)
            lines = [ln for ln in client.stderr.splitlines() if ln.startswith("pptpkit connect:")]
            assert status == code, (what, client.stderr)
            assert len(lines) == 1 and "MPPE" in lines[0], (what, client.stderr)
    for client in clients.values():
        if client.proc.poll() is None:
            client.proc.send_signal(signal.SIGTERM)
    for name, client in clients.items():
        code, _ = expected(server_mppe, name, auth)
        if code is None:
            assert client.wait_exit(20) == 0, client.stderr
    assert not [n for n in vpn.links(vpn.client_ns) if n.startswith("pptp")]
