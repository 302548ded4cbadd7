"""Three ``pptpkit connect`` clients behind one Linux NAT (nftables masquerade) to one
``pptpkit server``, with the kernel's PPTP conntrack/NAT helper and without it.

GRE has no ports.  A NAT tells the clients' GRE flows apart only if it knows PPTP: the kernel's
``pptp`` helper watches each control connection, learns the call IDs and tracks (and
rewrites) GRE by them.  Without it the kernel tracks GRE from one inside address to the server
without the call IDs it would need to match the server's answers, which carry the client's call
ID as their key: no answer matches, and no client hears from the server's GRE.  That is what
each client then says ("GRE return path broken ... a NAT without PPTP support?"), with exit 31.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from e2e_support import Client
from netns import NetnsLab
from serverlab import LOCAL_IP, Server

pytestmark = [pytest.mark.root]

SERVER, NAT_OUT = "192.0.2.1", "192.0.2.2"
NAT_IN, INSIDE = "203.0.113.1", ["203.0.113.11", "203.0.113.12", "203.0.113.13"]
USERS = ["amy", "ben", "cat"]
SECRETS = "".join(f"{u} pptpd {u}-pw *\n" for u in USERS)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[NetnsLab, str, str, str]]:
    require_root()
    require_binary("nft")
    with NetnsLab("pknat") as lab:
        srv, nat, cli = lab.add_namespace("s"), lab.add_namespace("n"), lab.add_namespace("c")
        lab.add_veth(srv, nat, addr_a=f"{SERVER}/24", addr_b=f"{NAT_OUT}/24", name_a="veth-a", name_b="n-out")
        lab.add_veth(nat, cli, addr_a=f"{NAT_IN}/24", addr_b=f"{INSIDE[0]}/24", name_a="n-in", name_b="c0")
        for addr in INSIDE[1:]:
            lab.ip(cli, "addr", "add", f"{addr}/24", "dev", "c0")
        lab.ip(cli, "route", "add", "default", "via", NAT_IN)
        lab.run(nat, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        yield lab, srv, nat, cli


def nat_rules(helper: bool) -> str:
    rules = """
        table ip pptpkit_nat {
            chain post {
                type nat hook postrouting priority srcnat; policy accept;
                oifname "n-out" masquerade
            }
    """
    if helper:
        # Helpers are no longer attached automatically (nf_conntrack_helper=0): say so.
        rules += """
            ct helper pptp { type "pptp" protocol tcp; }
            chain pre {
                type filter hook prerouting priority filter; policy accept;
                tcp dport 1723 ct helper set "pptp"
            }
        """
    return rules + "}\n"


def connect(lab: NetnsLab, ns: str, tmp: Path, n: int) -> Client:
    pw = tmp / f"pw{n}"
    pw.write_text(f"{USERS[n]}-pw\n")
    err = tmp / f"c{n}.err"
    argv = [sys.executable, "-m", "pptpkit", "connect", SERVER, "--user", USERS[n],
            "--password-file", str(pw), "--json", "--local-address", INSIDE[n], "--ifname", f"nat{n}x%d",
            "--no-host-route", "--lcp-restart", "1"]
    with err.open("wb") as f:
        proc = lab.popen(ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f)
    return Client(proc, err)


@pytest.mark.parametrize("helper", [True, False], ids=["pptp-helper", "no-helper"])
def test_three_clients_behind_one_nat(lab: tuple[NetnsLab, str, str, str], tmp_path: Path,
                                      helper: bool) -> None:
    nl, srv, nat, cli = lab
    nl.run(nat, ["nft", "-f", "-"], input=nat_rules(helper))
    server = Server(nl, srv, tmp_path, "--mtu", "1400", secrets=SECRETS)
    clients = []
    try:
        for n in range(3):
            clients.append(connect(nl, cli, tmp_path, n))
        if helper:
            up = [c.wait_up(20) for c in clients]
            assert len({u["local_address"] for u in up}) == 3
            # Every tunnel carries traffic: each client pings the server through its own.
            for n, u in enumerate(up):
                done = nl.run(cli, ["ping", "-n", "-c", "2", "-W", "2", "-I", u["interface"], LOCAL_IP],
                              check=False)
                assert done.returncode == 0, (n, done.stdout)
        else:
            for c in clients:
                assert c.wait_exit(30) == 31, c.stderr
                lines = [ln for ln in c.stderr.splitlines() if ln.startswith("pptpkit connect:")]
                assert len(lines) == 1 and "GRE return path broken" in lines[0], lines
                assert "a NAT without PPTP support?" in lines[0], lines
    finally:
        for c in clients:
            if c.proc.poll() is None:
                c.proc.terminate()
                c.proc.wait(15)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("helper", [True, False], ids=["pptp-helper", "no-helper"])
def test_probe_behind_the_nat(lab: tuple[NetnsLab, str, str, str], tmp_path: Path, helper: bool) -> None:
    # ``pptpkit probe`` tells the two NATs apart the way connect does, and names the helper.
    nl, srv, nat, cli = lab
    nl.run(nat, ["nft", "-f", "-"], input=nat_rules(helper))
    server = Server(nl, srv, tmp_path, "--mtu", "1400", secrets=SECRETS)
    out = nl.run(cli, [sys.executable, "-m", "pptpkit", "probe", SERVER, "--json", "--timeout", "3"],
                 check=False, timeout=60)
    report = json.loads(out.stdout)
    if helper:
        assert out.returncode == 0, out.stderr
        assert report["gre_in"] is True and report["gre_out"] is True
    else:
        assert out.returncode == 31, out.stderr
        assert report["gre_in"] is False
        assert 'ct helper set "pptp"' in report["verdicts"][0]["fix"]
    assert "Traceback" not in server.log()
