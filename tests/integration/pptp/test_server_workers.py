"""``pptpkit server --workers 2`` in a namespace: sessions spread over both workers, every one
pings, no address twice, ``pptpkit ctl`` sees and kills across workers, metrics are one view, a
worker killed with SIGKILL is restarted and its addresses return to the pool while the other
worker's sessions keep working, SIGTERM stops everything cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_binary, require_root
from netns import NetnsLab, inside
from pptpkit.ppp.session_config import Outcome
from serverlab import LOCAL_IP, Server, Session, connect, in_ns, run_in, sh, two_namespaces

pytestmark = [pytest.mark.root]

USERS = [f"user{i}" for i in range(8)]
SECRETS = "".join(f'{u} pptpd "{u} pw" *\n' for u in USERS)


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    with NetnsLab("pkwrk") as lab:
        yield lab


async def ctl_json(server: Server, *args: str) -> Any:
    rc, out = await sh(sys.executable, "-m", "pptpkit", "ctl", "--socket", str(server.ctl_socket), "--json",
                       *args, timeout=30)
    assert rc == 0, out
    return json.loads(out)


def worker_pids(server: Server) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", server.log())}


def test_two_workers(lab: NetnsLab, tmp_path: Path) -> None:
    require_binary("ping")
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--workers", "2", "--metrics", "192.0.2.1:9477", secrets=SECRETS)
    server.wait_log("2 workers running", 20)
    rules = 0

    def route_back(s: Session) -> None:
        # Every client TUN here has the server as its peer: answer each from its own interface.
        nonlocal rules
        rules += 1
        assert s.link.interface is not None
        lab.ip(cli, "rule", "add", "from", str(s.up.local_address), "table", str(100 + rules))
        lab.ip(cli, "route", "add", f"{LOCAL_IP}/32", "dev", s.link.interface, "table", str(100 + rules))

    async def pings(sessions: list[Session]) -> None:
        for s in sessions:
            rc, out = await in_ns(srv, "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "3",
                                  str(s.up.local_address))
            assert rc == 0, out

    async def main() -> None:
        sessions = [await connect(u, f"{u} pw", tun=f"pw{i}x%d") for i, u in enumerate(USERS)]
        for s in sessions:
            route_back(s)
        addresses = [str(s.up.local_address) for s in sessions]
        assert len(set(addresses)) == len(addresses)
        await pings(sessions)
        listing = (await ctl_json(server, "sessions"))["sessions"]
        assert sorted(s["user"] for s in listing) == USERS
        by_user = {s["user"]: s for s in listing}
        workers = {s["worker"] for s in listing}
        # SO_REUSEPORT spreads 8 connections from 8 source ports; both getting none is 2**-7.
        assert workers == {0, 1}, listing
        # Every call ID is in its worker's half of the range (the BPF partition).
        for s in listing:
            assert (s["call_id"] >= 0x8000) == (s["worker"] == 1), s
        stats = (await ctl_json(server, "stats"))["stats"]
        assert stats["sessions"] == 8 and stats["established"] == 8 and stats["workers"] == 2
        with inside(srv):
            text = urllib.request.urlopen("http://192.0.2.1:9477/metrics", timeout=10).read().decode()
        assert "pptpkit_sessions_up 8.0" in text and "pptpkit_workers 2.0" in text, text
        # ctl reload and SIGHUP reach every worker.
        assert (await ctl_json(server, "reload"))["reloaded"] is True
        assert server.log().count("secrets reloaded") == 2
        server.proc.send_signal(signal.SIGHUP)
        await server.await_log("secrets reloaded", count=4)

        # Kill one session of worker 1 through the supervisor's control socket.
        victim = next(s for s in sessions if by_user[s.link.name.split()[-1]]["worker"] == 1)
        victim_id = by_user[victim.link.name.split()[-1]]["id"]
        assert (await ctl_json(server, "kill", victim_id))["killed"] == [victim_id]
        down = await asyncio.wait_for(asyncio.shield(victim.link.closed), 10)
        assert down.outcome is Outcome.PEER_TERMINATED
        await victim.client.close()
        sessions.remove(victim)

        # SIGKILL worker 0: restarted, its sessions' addresses free again, worker 1's sessions
        # keep passing traffic all along.
        lost = [s for s in sessions if by_user[s.link.name.split()[-1]]["worker"] == 0]
        kept = [s for s in sessions if s not in lost]
        old = worker_pids(server)[0]
        os.kill(old, signal.SIGKILL)
        await server.await_log("worker 0 started", count=2, timeout=20)
        await server.await_log("worker 0: listening on", count=2, timeout=20)
        assert worker_pids(server)[0] != old
        assert re.search(rf"worker 0 \(pid {old}\) died .*; {len(lost)} sessions lost", server.log())
        await pings(kept)
        listing = (await ctl_json(server, "sessions"))["sessions"]
        kept_ids = sorted(by_user[s.link.name.split()[-1]]["id"] for s in kept)
        assert sorted(s["id"] for s in listing) == kept_ids
        for s in lost:
            s.link.lower_down("server died")
            await s.client.close()
        # The lowest free addresses are handed out first: new sessions get the dead ones back.
        freed = [*(str(s.up.local_address) for s in lost), str(victim.up.local_address)]
        again = [await connect(u, f"{u} pw", tun=f"pa{i}x%d") for i, u in enumerate(USERS[:len(freed)])]
        got = sorted(str(s.up.local_address) for s in again)
        assert got == sorted(freed, key=lambda a: tuple(int(x) for x in a.split("."))), (got, freed)
        for s in again:
            route_back(s)
        await pings(again + kept)

        server.proc.send_signal(signal.SIGTERM)
        for s in again + kept:
            down = await asyncio.wait_for(asyncio.shield(s.link.closed), 15)
            assert down.outcome is Outcome.PEER_TERMINATED
            await s.client.close()

    run_in(cli, main)
    assert server.proc.wait(20) == 0, server.log()
    assert "all workers stopped" in server.log()
    assert "pptpkit" not in lab.ip(srv, "-o", "link")
    assert "Traceback" not in server.log()


def test_what_workers_cannot_do_is_an_error(lab: NetnsLab, tmp_path: Path) -> None:
    srv, _ = two_namespaces(lab)
    for extra, words in ((["--ppp-program", "/bin/cat"], "--workers applies to the built-in mode"),
                         (["--tun-mode", "shared", "--tun-name", "vpn-concentrator"],
                          "would be longer than 15 characters")):
        rc = lab.run(srv, [sys.executable, "-m", "pptpkit", "server", "--local-ip", LOCAL_IP, "--remote-ip",
                           "198.51.100.10-20", "--workers", "2", "--no-ctl", *extra], check=False)
        assert rc.returncode == 2 and words in rc.stderr, rc.stderr


def test_a_burst_of_logins_gets_no_address_twice_and_workers_die_with_the_supervisor(
        lab: NetnsLab, tmp_path: Path) -> None:
    """16 clients at once for 11 pool addresses over 2 workers: 11 sessions, 11 addresses, the
    rest refused; then SIGKILL to the supervisor takes its workers with it."""
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--workers", "2", "--no-ctl", secrets=SECRETS)
    server.wait_log("2 workers running", 20)

    async def main() -> None:
        results = await asyncio.gather(*(connect(USERS[i % len(USERS)], f"{USERS[i % len(USERS)]} pw",
                                                 tun=f"pb{i}x%d") for i in range(16)),
                                       return_exceptions=True)
        sessions = [r for r in results if isinstance(r, Session)]
        addresses = [str(s.up.local_address) for s in sessions]
        assert len(sessions) == 11, results
        assert sorted(addresses) == sorted(f"198.51.100.{i}" for i in range(10, 21))
        assert server.log().count("no free address in the remoteip pool") >= 1
        for s in sessions:
            s.link.lower_down("test over")
            await s.client.close()

    run_in(cli, main)
    workers = worker_pids(server)
    server.proc.kill()
    server.proc.wait(10)
    end = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{pid}") for pid in workers.values()):
        assert time.monotonic() < end, "a worker outlived its supervisor"
        time.sleep(0.1)
    assert "pptpkit" not in lab.ip(srv, "-o", "link")


def test_failed_logins_lock_out_across_workers(lab: NetnsLab, tmp_path: Path) -> None:
    """--auth-fail-limit counts the failures of the whole server: 3 wrong passwords, wherever
    they landed, and every worker refuses the address."""
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--workers", "2", "--auth-fail-limit", "3", secrets=SECRETS)
    server.wait_log("2 workers running", 20)

    async def main() -> None:
        for i in range(3):
            with pytest.raises(Exception):  # noqa: B017 - the login fails, however it says so
                await connect("user0", "wrong", tun=f"pf{i}x%d")
        await server.await_log("address '192.0.2.2' locked out")
        for i in range(8):
            with pytest.raises(Exception):  # noqa: B017
                await connect("user0", "user0 pw", tun=f"pg{i}x%d")
        stats = (await ctl_json(server, "stats"))["stats"]
        # SO_REUSEPORT spread 8 connections; every one was refused at admission (locked out).
        assert stats["refused"]["admission"] == 8, stats
        assert stats["sessions_up_total"] == 0

    run_in(cli, main)


def test_connection_limits_hold_across_workers(lab: NetnsLab, tmp_path: Path) -> None:
    """--max-per-source 2 with 2 workers: 6 control connections from one address, however
    SO_REUSEPORT spreads them, leave 2 open."""
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--workers", "2", "--max-per-source", "2", secrets=SECRETS)
    server.wait_log("2 workers running", 20)

    async def main() -> None:
        from pptpkit.pptp.client import PptpClient, PptpClientConfig

        clients = [PptpClient(PptpClientConfig(server="192.0.2.1")) for _ in range(6)]
        await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        end = time.monotonic() + 10
        while True:
            stats = (await ctl_json(server, "stats"))["stats"]
            if stats["connections"] == 2 or time.monotonic() > end:
                break
            await asyncio.sleep(0.2)
        assert stats["connections"] == 2, stats
        for c in clients:
            await c.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()
