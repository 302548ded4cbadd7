"""Past one machine: two ``pptpkit server`` instances behind a load balancer, one FreeRADIUS with
one shared address pool (sqlippool on SQLite), four real ``pptpkit connect`` clients.

Topology (namespaces)::

    clients 203.0.113.11-18 --- lb (FreeRADIUS on 192.0.2.1, nftables) --- s1 192.0.2.2
                                                                       \\-- s2 192.0.2.66

Both servers own the service address 203.0.113.200 (on their loopback) and answer from it.
The load balancer hashes the client's source address in nftables (``jhash ip saddr``) into a
packet mark and routes by the mark, so a client's TCP 1723 and its GRE - another protocol, no
ports - always reach the same server, without NAT.  A health check would change the mark's
route when a server dies; the test does exactly that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_binary, require_root
from e2e_support import Client
from freeradius import FreeRadius, User
from netns import NetnsLab, pids_in
from serverlab import server_ready

pytestmark = [pytest.mark.root]

VIP = "203.0.113.200"
AAA = "192.0.2.1"
S1, S2 = "192.0.2.2", "192.0.2.66"
SECRET = "shared-aaa-secret"
POOL = [f"198.51.100.{n}" for n in range(100, 110)]
USERS = ["anna", "boris", "chen", "dora"]
CANDIDATES = [f"203.0.113.{n}" for n in range(11, 19)]


class Deployment:
    def __init__(self, lab: NetnsLab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.cli = lab.add_namespace("c")
        self.lb = lab.add_namespace("l")
        self.s1 = lab.add_namespace("1")
        self.s2 = lab.add_namespace("2")
        lab.add_veth(self.lb, self.cli, addr_a="203.0.113.1/25", addr_b=f"{CANDIDATES[0]}/25",
                     name_a="lb-c", name_b="c-lb")
        lab.add_veth(self.lb, self.s1, addr_a=f"{AAA}/26", addr_b=f"{S1}/26", name_a="lb-1", name_b="s-lb")
        lab.add_veth(self.lb, self.s2, addr_a="192.0.2.65/26", addr_b=f"{S2}/26", name_a="lb-2",
                     name_b="s-lb")
        for addr in CANDIDATES[1:]:
            lab.ip(self.cli, "addr", "add", f"{addr}/25", "dev", "c-lb")
        lab.ip(self.cli, "route", "add", f"{VIP}/32", "via", "203.0.113.1")
        for ns, gw in ((self.s1, AAA), (self.s2, "192.0.2.65")):
            lab.ip(ns, "addr", "add", f"{VIP}/32", "dev", "lo")
            lab.ip(ns, "route", "add", "203.0.113.0/25", "via", gw)
            lab.ip(ns, "route", "add", "192.0.2.0/24", "via", gw)
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0"):
            lab.run(self.lb, ["sysctl", "-q", "-w", key])
        for table, via in ((101, S1), (102, S2)):
            lab.ip(self.lb, "rule", "add", "fwmark", str(table - 100), "lookup", str(table))
            lab.ip(self.lb, "route", "add", f"{VIP}/32", "via", via, "table", str(table))
        # The balancer: the client's address, hashed, picks the server; the sets record who
        # went where (the test reads them to know which clients share a server).
        ruleset = f"""
            table ip pptpkit_lb {{
                set to_s1 {{ type ipv4_addr; flags dynamic; }}
                set to_s2 {{ type ipv4_addr; flags dynamic; }}
                chain pre {{
                    type filter hook prerouting priority mangle; policy accept;
                    ip daddr {VIP} meta mark set jhash ip saddr mod 2 seed 0x5eed offset 1
                    meta mark 1 ip daddr {VIP} update @to_s1 {{ ip saddr }}
                    meta mark 2 ip daddr {VIP} update @to_s2 {{ ip saddr }}
                }}
            }}
        """
        lab.run(self.lb, ["nft", "-f", "-"], input=ruleset)
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def route_all_to(self, survivor: str) -> None:
        """What a health check does when a server dies: its share goes to the survivor."""
        for table in (101, 102):
            self.lab.ip(self.lb, "route", "replace", f"{VIP}/32", "via", survivor, "table", str(table))

    def split(self) -> tuple[list[str], list[str]]:
        """The candidate client addresses the hash sends to s1 and to s2 (one probe each)."""
        for addr in CANDIDATES:
            self.lab.run(self.cli, ["ping", "-n", "-c", "1", "-W", "1", "-I", addr, VIP], check=False)
        out = self.lab.run(self.lb, ["nft", "-j", "list", "table", "ip", "pptpkit_lb"]).stdout
        import json

        sets: dict[str, list[str]] = {}
        for item in json.loads(out)["nftables"]:
            if "set" in item:
                sets[item["set"]["name"]] = [e if isinstance(e, str) else e["elem"]["val"]
                                             for e in item["set"].get("elem", [])]
        return sets.get("to_s1", []), sets.get("to_s2", [])

    def start_server(self, name: str, nas_ip: str) -> None:
        ns = self.s1 if name == "s1" else self.s2
        secret = self.tmp / "radius.secret"
        secret.write_text(SECRET + "\n")
        secret.chmod(0o600)
        log = self.tmp / f"{name}.log"
        # A local pool that must never be used: RADIUS gives every address.
        fallback = "198.51.100.200-201" if name == "s1" else "198.51.100.210-211"
        argv = [sys.executable, "-m", "pptpkit", "server", "--listen", VIP, "--local-ip", "198.51.100.1",
                "--remote-ip", fallback, "--radius-server", AAA, "--radius-secret-file", str(secret),
                "--nas-ip-address", nas_ip, "--nas-identifier", name, "--no-mss-clamp", "--no-hooks",
                "--ctl-socket", str(self.tmp / f"{name}.ctl")]
        with open(log, "ab") as f:
            self.servers[name] = self.lab.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=f)
        self.logs[name] = log
        wait_for(lambda: server_ready(log.read_text(errors="replace")), 30, f"{name} to listen")

    def connect(self, user: str, source: str) -> Client:
        pw = self.tmp / f"{user}.pw"
        pw.write_text(f"{user}-pw\n")
        err = self.tmp / f"{user}.err"
        argv = [sys.executable, "-m", "pptpkit", "connect", VIP, "--user", user, "--password-file", str(pw),
                "--json", "--local-address", source, "--ifname", f"t{user}%d", "--no-host-route",
                "--persist", "--echo-interval", "1", "--echo-failure", "2", "--lcp-restart", "1"]
        with err.open("wb") as errf:
            proc = self.lab.popen(self.cli, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=errf)
        return Client(proc, err)


def wait_for(check: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, FreeRadius]]:
    require_root()
    require_binary("freeradius")
    require_binary("nft")
    with NetnsLab("pkdp") as lab:
        dep = Deployment(lab, tmp_path)
        users = [User(u, f"{u}-pw") for u in USERS]
        with FreeRadius(lab, dep.lb, AAA, tmp_path / "aaa", SECRET, users, ippool=POOL) as aaa:
            yield dep, aaa


def test_two_servers_one_aaa_one_pool(deployment: tuple[Deployment, FreeRadius]) -> None:
    dep, aaa = deployment
    to_s1, to_s2 = dep.split()
    assert len(to_s1) >= 2 and len(to_s2) >= 2, (to_s1, to_s2)
    dep.start_server("s1", S1)
    dep.start_server("s2", S2)
    sources = {USERS[0]: to_s1[0], USERS[1]: to_s1[1], USERS[2]: to_s2[0], USERS[3]: to_s2[1]}
    clients = {user: dep.connect(user, src) for user, src in sources.items()}
    try:
        addresses = {user: c.next_event("up", 30)["local_address"] for user, c in clients.items()}
        # Every address unique and from the shared pool, none from a server's own pool.
        assert len(set(addresses.values())) == 4 and set(addresses.values()) <= set(POOL), addresses
        leases = aaa.leases()
        assert {ip: nas for ip, (nas, _) in leases.items()} == {
            addresses[USERS[0]]: S1, addresses[USERS[1]]: S1, addresses[USERS[2]]: S2,
            addresses[USERS[3]]: S2}
        for name, users in (("s1", USERS[:2]), ("s2", USERS[2:])):
            log = dep.logs[name].read_text(errors="replace")
            assert all(f"user {u!r} authenticated" in log for u in users), log

        # s1 crashes: every process of it at once (the server runs a worker per CPU, and a
        # supervisor killed alone takes its workers down cleanly, with Accounting-Stops; a
        # crash sends none).  Its own session's process group, as systemd kills a cgroup.
        os.killpg(dep.servers["s1"].pid, signal.SIGKILL)
        dep.servers["s1"].wait(10)
        wait_for(lambda: not pids_in(dep.s1), 10, "every process of s1 to be gone")
        dep.route_all_to(S2)
        again = {u: clients[u].next_event("up", 60)["local_address"] for u in USERS[:2]}
        now = {**addresses, **again}
        assert len(set(now.values())) == 4 and set(now.values()) <= set(POOL), now
        log2 = dep.logs["s2"].read_text(errors="replace")
        assert all(f"user {u!r} authenticated" in log2 for u in USERS), log2
        # s2 holds the two new leases; s1's old ones are still leased to s1 until it is heard
        # from again, so nothing was handed out twice.
        leased = aaa.leases()
        assert all(leased[again[u]][0] == S2 for u in USERS[:2]), leased
        assert {ip for ip, (nas, _) in leased.items() if nas == S1} == {addresses[u] for u in USERS[:2]}
        # Both servers said Accounting-On when they started; s1, restarted as a supervisor
        # would, says it again, and the AAA releases everything s1 held before its crash.
        ons = [r for r in aaa.detail_records() if r.get("Acct-Status-Type") == "Accounting-On"]
        assert {r.get("NAS-IP-Address") for r in ons} == {S1, S2}
        dep.start_server("s1", S1)
        wait_for(lambda: not any(nas == S1 for nas, _ in aaa.leases().values()), 15,
                 "s1's stale leases to be released")
        assert {ip for ip, (nas, _) in aaa.leases().items()} == set(now.values())
    finally:
        for c in clients.values():
            if c.proc.poll() is None:
                c.proc.terminate()
                c.proc.wait(15)
