"""``pptpkit server`` authenticating through the real FreeRADIUS, with real ``pptpkit connect``
clients: every method, MPPE keys from RADIUS, the answer's attributes, and an outage.

Namespaces: the server's holds FreeRADIUS too (on its own address); the client's holds the
``pptpkit connect`` processes.  The client knows nothing of RADIUS, so a session that comes up
with MPPE-128 and passes pings proves the keys FreeRADIUS sent are the ones the client derived
from its password.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from freeradius import FreeRadius
from pptpkit.errors import ExitStatus
from radiuslab import SECRET, RadiusServer, connect, hang_up, ping_ok
from serverlab import CLIENT

pytestmark = [pytest.mark.root]







@pytest.mark.parametrize(("method", "user", "password", "server_flags", "mppe"), [
    ("MS-CHAPv2", "alice", "wonderland", (), "mppe-128"),
    ("MS-CHAPv2", "bob", "builder", (), "mppe-128"),
    ("MS-CHAPv1", "carol", "c@rol pw", ("--require-mschap",), "mppe-128"),
    ("CHAP", "carol", "c@rol pw", ("--require-chap", "--no-mppe"), "none"),
    ("PAP", "alice", "wonderland", ("--require-pap", "--no-mppe"), "none"),
])
def test_login_through_radius(lab: Any, radius: FreeRadius, tmp_path: Path, method: str, user: str,
                              password: str, server_flags: tuple[str, ...], mppe: str) -> None:
    """Each method logs in through FreeRADIUS; MPPE-128 runs on the keys FreeRADIUS sent."""
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path, *server_flags)
    client = connect(nl, cli, tmp_path, user, password)
    try:
        up = client.next_event("up", 25)
        assert ("128" in up["mppe"]) if mppe == "mppe-128" else ("none" in up["mppe"].lower()), up
        assert ping_ok(nl, cli)
        if user == "alice":
            assert up["local_address"] == "198.51.100.20", up  # Framed-IP-Address
    finally:
        hang_up(client)
        server.stop()
    log = server.log()
    assert f"user '{user}' authenticated with" in log, log
    assert "RADIUS authentication: " in log
    if user == "alice":
        # Filter-Id is not applied yet: said once, by name.
        assert log.count("RADIUS attributes not applied") == 1 and "Filter-Id" in log, log


def test_wrong_password_exit_19_and_logged(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path)
    client = connect(nl, cli, tmp_path, "alice", "not the password")
    try:
        assert client.proc.wait(30) == ExitStatus.AUTH_FAILED == 19, client.stderr
    finally:
        hang_up(client)
        server.stop()
    log = server.log()
    assert "authentication failed: user 'alice'" in log and "Access-Reject" in log, log
    assert "not the password" not in log and SECRET not in log


def test_session_timeout_from_radius(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path, "--require-mschap")
    client = connect(nl, cli, tmp_path, "carol", "c@rol pw")
    try:
        client.next_event("up", 25)
        started = time.monotonic()
        client.next_event("down", 15)
        assert 2.5 < time.monotonic() - started < 9.0
        server.wait_log("cause Session-Timeout")
    finally:
        hang_up(client)
        server.stop()


def test_radius_down_new_logins_fail_sessions_stay(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path)
    first = connect(nl, cli, tmp_path, "alice", "wonderland")
    try:
        first.next_event("up", 25)
        radius.stop()
        second = connect(nl, cli, tmp_path, "bob", "builder")
        try:
            code = second.proc.wait(40)
            assert code == ExitStatus.AUTH_FAILED, second.stderr
        finally:
            hang_up(second)
        server.wait_log("no RADIUS server answered")
        assert "RADIUS: no answer from" in server.log()
        assert ping_ok(nl, cli), "the session that was up must stay up"
        assert first.proc.poll() is None
    finally:
        hang_up(first)
        server.stop()
    assert CLIENT in server.log()
