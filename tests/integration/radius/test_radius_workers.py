"""RADIUS from ``pptpkit server --workers 2`` with the real FreeRADIUS: Accounting-On and -Off
once for the server, Start and Stop per session from its worker, the Stop of a session whose
worker was killed (cause NAS-Error) from the supervisor, and Disconnect-Requests answered once
by the supervisor for whichever worker has the session."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from freeradius import FreeRadius
from radiuslab import SECRET, RadiusServer, connect, hang_up, ping_ok
from serverlab import CLIENT, SERVER

pytestmark = [pytest.mark.root]


def records(radius: FreeRadius, status: str, n: int = 1, timeout: float = 15) -> list[dict[str, str]]:
    end = time.monotonic() + timeout
    while True:
        found = [r for r in radius.detail_records() if r.get("Acct-Status-Type") == status]
        if len(found) >= n or time.monotonic() > end:
            return found
        time.sleep(0.1)


def test_accounting_across_workers(lab: Any, radius: FreeRadius, tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = RadiusServer(nl, srv, tmp_path, "--workers", "2", "--radius-dae-listen", f"{SERVER}:3799",
                          "--radius-dae-client", CLIENT)
    server.wait_log("2 workers running", 20)
    alice = connect(nl, cli, tmp_path, "alice", "wonderland")
    bob = connect(nl, cli, tmp_path, "bob", "builder")
    try:
        alice.next_event("up", 25)
        bob.next_event("up", 25)
        starts = records(radius, "Start", 2)
        assert len(starts) == 2
        assert ping_ok(nl, cli)
        listing = nl.run(srv, [sys.executable, "-m", "pptpkit", "ctl", "--socket", str(tmp_path / "ctl.sock"),
                               "--json", "sessions"])
        sessions = {s["user"]: s for s in json.loads(listing.stdout)["sessions"]}
        # Disconnect: a session no worker has is a NAK (503), bob's an ACK from his worker.
        none = radius.radclient(cli, f"{SERVER}:3799", "disconnect", 'Acct-Session-Id = "00000000FFFFFFFF"\n',
                                SECRET)
        assert "Received Disconnect-NAK" in none.stdout, none.stdout
        assert "Session-Context-Not-Found" in none.stdout, none.stdout
        done = radius.radclient(cli, f"{SERVER}:3799", "disconnect",
                                f'Acct-Session-Id = "{sessions["bob"]["id"]}"\n', SECRET)
        assert "Received Disconnect-ACK" in done.stdout, done.stdout + done.stderr
        assert bob.next_event("down", 15)["code"] == 16
        [bob_stop] = records(radius, "Stop")
        assert bob_stop["User-Name"] == "bob" and bob_stop["Acct-Terminate-Cause"] == "Admin-Reset"
        victim = sessions["alice"]
        assert victim["address"] == "198.51.100.20"  # RADIUS's Framed-IP-Address, claimed in the ledger
        pids = dict(re.findall(r"worker (\d+) started \(pid (\d+)\)", server.log()))
        os.kill(int(pids[str(victim["worker"])]), signal.SIGKILL)
        stop = records(radius, "Stop", 2)[-1]
        assert stop["Acct-Session-Id"] == victim["id"] and stop["Acct-Terminate-Cause"] == "NAS-Error", stop
        assert stop["User-Name"] == "alice" and stop["Framed-IP-Address"] == "198.51.100.20"
        server.wait_log(f"worker {victim['worker']}: listening on", timeout=20)
    finally:
        hang_up(alice)
        hang_up(bob)
    stops = records(radius, "Stop", 2)
    assert {s["User-Name"] for s in stops} == {"alice", "bob"}, stops
    server.stop()
    assert server.proc.returncode == 0, server.log()
    [off] = records(radius, "Accounting-Off")
    # Once for the whole server, however many workers started (one of them twice).
    assert len(records(radius, "Accounting-On", timeout=0)) == 1
    assert off["Acct-Session-Id"] == records(radius, "Accounting-On", timeout=0)[0]["Acct-Session-Id"]
    assert "Traceback" not in server.log()
