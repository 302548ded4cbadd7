"""RADIUS accounting from ``pptpkit server`` into the real FreeRADIUS's detail file, with real
``pptpkit connect`` clients: Accounting-On/Off, Start, Interim-Update and Stop with the octets
the pings moved, the terminate cause, and records kept through an AAA outage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from freeradius import FreeRadius
from netns import NetnsLab
from radiuslab import SECRET, RadiusServer, connect, hang_up, ping_ok
from serverlab import LOCAL_IP

pytestmark = [pytest.mark.root]

PING_SIZE, PINGS = 1000, 5
IP_PACKET = PING_SIZE + 8 + 20  # ICMP header + IPv4 header






def pings(nl: NetnsLab, ns: str) -> None:
    done = nl.run(ns, ["ping", "-n", "-c", str(PINGS), "-i", "0.2", "-s", str(PING_SIZE), "-W", "2",
                       LOCAL_IP], check=False)
    assert done.returncode == 0, done.stdout


def records(radius: FreeRadius, status: str, n: int = 1, timeout: float = 15) -> list[dict[str, str]]:
    end = time.monotonic() + timeout
    while True:
        found = [r for r in radius.detail_records() if r.get("Acct-Status-Type") == status]
        if len(found) >= n or time.monotonic() > end:
            return found
        time.sleep(0.1)


def test_start_and_stop_with_the_octets_moved(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path)
    [on] = records(radius, "Accounting-On")
    assert on["NAS-Identifier"] == "pptpkit-test"
    client = connect(nl, cli, tmp_path, "alice", "wonderland")
    try:
        client.next_event("up", 25)
        [start] = records(radius, "Start")
        pings(nl, cli)
    finally:
        hang_up(client)
    [stop] = records(radius, "Stop")
    log = server.log()
    session_id = start["Acct-Session-Id"]
    assert f"[{session_id}] session up" in log  # the same ID in the log and the AAA
    assert stop["Acct-Session-Id"] == session_id and stop["Acct-Terminate-Cause"] == "User-Request"
    assert start["Framed-IP-Address"] == stop["Framed-IP-Address"] == "198.51.100.20"
    assert start["Class"] == "0x" + b"gold".hex() and start["Acct-Authentic"] == "RADIUS"
    assert start["NAS-Port"] == stop["NAS-Port"] and start["Calling-Station-Id"] == "192.0.2.2"
    # Exactly the pings' IP octets each way (nothing else crosses this tunnel).
    assert int(stop["Acct-Input-Octets"]) == int(stop["Acct-Output-Octets"]) == PINGS * IP_PACKET, stop
    assert int(stop["Acct-Input-Packets"]) == PINGS and stop["Acct-Input-Gigawords"] == "0"
    server.stop()
    [off] = records(radius, "Accounting-Off")
    assert off["NAS-Identifier"] == "pptpkit-test"


def test_stop_is_kept_through_an_outage(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path)
    client = connect(nl, cli, tmp_path, "alice", "wonderland")
    try:
        client.next_event("up", 25)
        records(radius, "Start")
        radius.stop()
        pings(nl, cli)  # the session goes on without the AAA
    finally:
        hang_up(client)
    server.wait_log("RADIUS accounting: no answer from", timeout=15)
    radius.start()
    [stop] = records(radius, "Stop", timeout=30)
    assert int(stop["Acct-Input-Octets"]) == PINGS * IP_PACKET
    assert int(stop.get("Acct-Delay-Time", "0")) >= 1  # it says how late it is
    server.wait_log("every queued record was delivered", timeout=15)
    server.stop()


def test_a_clean_stop_delivers_what_an_outage_queued(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    """The AAA is down when the server starts (its Accounting-On is queued) and back just before
    the server stops, sooner than the 10 s retry: the stop sends the queue, then Accounting-Off."""
    nl, srv, _ = lab
    radius.stop()
    server = RadiusServer(nl, srv, tmp_path)
    server.wait_log("RADIUS accounting: no answer from", timeout=15)
    radius.start()
    server.stop()
    on, off = records(radius, "Accounting-On", timeout=5), records(radius, "Accounting-Off", timeout=5)
    assert len(on) == len(off) == 1, radius.detail_records()
    kinds = [r["Acct-Status-Type"] for r in radius.detail_records()]
    assert kinds == ["Accounting-On", "Accounting-Off"]
    assert int(on[0]["Acct-Delay-Time"]) >= 1 and "Acct-Delay-Time" not in off[0]
    log = server.log()
    assert "every queued record was delivered" in log and "not delivered at shutdown" not in log


def test_interim_update_every_minute(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    """RFC 2869 5.16: no interval under 60 s, so this test takes a minute."""
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path, "--radius-interim", "60")
    client = connect(nl, cli, tmp_path, "bob", "builder")
    try:
        client.next_event("up", 25)
        pings(nl, cli)
        [interim] = records(radius, "Interim-Update", timeout=70)
        assert int(interim["Acct-Session-Time"]) in range(59, 63)
        assert int(interim["Acct-Input-Octets"]) >= PINGS * IP_PACKET
    finally:
        hang_up(client)
    server.stop()


def dae_server(nl: NetnsLab, srv: str, tmp_path: Path) -> RadiusServer:
    from serverlab import CLIENT, SERVER

    return RadiusServer(nl, srv, tmp_path, "--radius-dae-listen", f"{SERVER}:3799",
                        "--radius-dae-client", CLIENT)


def test_disconnect_request_ends_the_session(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    from serverlab import SERVER

    nl, srv, cli = lab
    server = dae_server(nl, srv, tmp_path)
    client = connect(nl, cli, tmp_path, "alice", "wonderland")
    try:
        client.next_event("up", 25)
        [start] = records(radius, "Start")
        sid = start["Acct-Session-Id"]
        wrong = radius.radclient(cli, f"{SERVER}:3799", "disconnect", f'Acct-Session-Id = "{sid}"\n',
                                 "not-the-secret", timeout=15)
        assert "Disconnect-ACK" not in wrong.stdout  # a wrong secret gets no answer at all
        # Signed right, but recorded an hour ago and replayed: dropped (RFC 5176 3.5).
        old = int(time.time()) - 3600
        replayed = radius.radclient(cli, f"{SERVER}:3799", "disconnect",
                                    f'Acct-Session-Id = "{sid}"\nEvent-Timestamp = {old}\n', SECRET,
                                    timeout=15)
        assert "Disconnect-ACK" not in replayed.stdout and "Event-Timestamp" in replayed.stdout
        assert client.proc.poll() is None and ping_ok(nl, cli)
        done = radius.radclient(cli, f"{SERVER}:3799", "disconnect", f'Acct-Session-Id = "{sid}"\n', SECRET)
        assert "Received Disconnect-ACK" in done.stdout, done.stdout + done.stderr
        down = client.next_event("down", 15)
        assert down["code"] == 16, down
    finally:
        hang_up(client)
    [stop] = records(radius, "Stop")
    assert stop["Acct-Terminate-Cause"] == "Admin-Reset" and stop["Acct-Session-Id"] == sid
    assert "RADIUS Disconnect/CoA: 1 requests dropped" in server.log()
    server.stop()


def test_coa_changes_the_session_timeout_and_refuses_what_it_cannot_do(lab: Any, radius: FreeRadius,
                                                                        tmp_path: Path) -> None:
    from serverlab import SERVER

    nl, srv, cli = lab
    server = dae_server(nl, srv, tmp_path)
    client = connect(nl, cli, tmp_path, "alice", "wonderland")
    try:
        client.next_event("up", 25)
        refused = radius.radclient(cli, f"{SERVER}:3799", "coa", 'User-Name = "alice"\nFilter-Id = "fast"\n',
                                   SECRET)
        assert "Received CoA-NAK" in refused.stdout, refused.stdout
        assert "Unsupported-Attribute" in refused.stdout, refused.stdout
        missing = radius.radclient(cli, f"{SERVER}:3799", "coa",
                                   'User-Name = "nobody"\nSession-Timeout = 3\n', SECRET)
        assert "Received CoA-NAK" in missing.stdout and "Session-Context-Not-Found" in missing.stdout
        done = radius.radclient(cli, f"{SERVER}:3799", "coa", 'User-Name = "alice"\nSession-Timeout = 3\n',
                                SECRET)
        assert "Received CoA-ACK" in done.stdout, done.stdout
        started = time.monotonic()
        client.next_event("down", 15)
        assert time.monotonic() - started < 6
    finally:
        hang_up(client)
    [stop] = records(radius, "Stop")
    assert stop["Acct-Terminate-Cause"] == "Session-Timeout"
    server.stop()
