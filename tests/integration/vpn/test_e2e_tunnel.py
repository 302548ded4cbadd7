"""The whole VPN end to end: ``pptpkit server`` (built-in PPP, MS-CHAPv2 + MPPE-128 required)
in one namespace, ``pptpkit connect`` in another, both as the real CLI processes.

Traffic both ways, a 100 MB TCP transfer with a checksum, clean shutdown leaving nothing
behind, --dns, --persist across a server restart, wrong password, GRE blocked by nft, the
routing-loop refusal, and 20 concurrent clients.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from e2e_support import CLIENT, PUSHED_DNS, PY, SERVER, TUNNEL_LOCAL, USER, VpnLab, wait_for
from netns import NetnsLab

pytestmark = [pytest.mark.root]


@pytest.fixture
def vpn(tmp_path: Path) -> Iterator[VpnLab]:
    require_root()
    require_binary("ip")
    lab = NetnsLab("pke2e")
    try:
        yield VpnLab(lab, tmp_path)
    finally:
        lab.close()
    assert not lab.leftovers()


def test_ping_both_ways_and_clean_shutdown(vpn: VpnLab) -> None:
    vpn.start_server()
    routes_before = vpn.routes(vpn.client_ns)
    client = vpn.connect("--require-mppe-128", "--route", "203.0.113.0/24")
    up = client.wait_up()
    assert up["mppe"] == "MPPE 128-bit stateless" and up["auth"] == "mschap-v2" and up["username"] == USER
    assert up["peer_address"] == TUNNEL_LOCAL and ipaddress.IPv4Address(up["local_address"]) in \
        ipaddress.IPv4Network("198.51.100.0/24")
    ifname = up["interface"]
    assert ifname in vpn.links(vpn.client_ns)
    routes = vpn.routes(vpn.client_ns)
    # The host route to the server, outside the tunnel, and the requested route through it.
    assert any(r.startswith(f"{SERVER} dev veth-c") for r in routes), routes
    assert any(r.startswith(f"203.0.113.0/24 dev {ifname}") for r in routes), routes

    out = vpn.ping(vpn.client_ns, TUNNEL_LOCAL)
    assert out.returncode == 0, out.stdout + out.stderr
    back = vpn.ping(vpn.server_ns, up["local_address"])
    assert back.returncode == 0, back.stdout + back.stderr
    assert "3 received" in out.stdout and "3 received" in back.stdout

    server_links_up = [n for n in vpn.links(vpn.server_ns) if n.startswith("pptpkit")]
    assert len(server_links_up) == 1
    assert client.stop(signal.SIGTERM) == 0, client.stderr
    # Nothing left in the client namespace: interface, routes (the host route too), processes.
    assert ifname not in vpn.links(vpn.client_ns)
    assert vpn.routes(vpn.client_ns) == routes_before
    wait_for(lambda: not vpn.processes(vpn.client_ns), 5, "client processes to go")
    # The server heard the hang-up at once (LCP Terminate / Call-Clear): its session is gone.
    wait_for(lambda: not [n for n in vpn.links(vpn.server_ns) if n.startswith("pptpkit")], 5,
             "the server to remove the session's interface")
    log = vpn.server_text()
    assert "Terminate" in log or "cleared" in log, log


def test_local_address_pins_tcp_and_gre(vpn: VpnLab) -> None:
    """--local-address: TCP and GRE both leave from the chosen address, though routing would
    pick the primary one (the server keys GRE on the address its control connection came from)."""
    vpn.lab.ip(vpn.client_ns, "addr", "add", "192.0.2.20/24", "dev", "veth-c")
    assert f"src {CLIENT}" in vpn.lab.ip(vpn.client_ns, "route", "get", SERVER)
    vpn.start_server()
    client = vpn.connect("--local-address", "192.0.2.20", "--ignore-peer-window", "--nobuffer")
    up = client.wait_up()
    assert vpn.ping(vpn.client_ns, TUNNEL_LOCAL, interface=up["interface"]).returncode == 0
    assert "connection from 192.0.2.20:" in vpn.server_text()
    assert client.stop() == 0, client.stderr


def test_sigint_also_tears_down(vpn: VpnLab) -> None:
    vpn.start_server()
    routes_before = vpn.routes(vpn.client_ns)
    client = vpn.connect("--default-route")
    up = client.wait_up()
    routes = vpn.routes(vpn.client_ns)
    assert any(r.startswith(f"0.0.0.0/1 dev {up['interface']}") for r in routes)
    assert any(r.startswith(f"128.0.0.0/1 dev {up['interface']}") for r in routes)
    # With everything routed into the tunnel, the server itself must still be reached outside.
    got = vpn.lab.run(vpn.client_ns, ["ip", "route", "get", SERVER]).stdout
    assert "dev veth-c" in got, got
    assert vpn.ping(vpn.client_ns, TUNNEL_LOCAL).returncode == 0
    assert client.stop(signal.SIGINT) == 0, client.stderr
    assert vpn.routes(vpn.client_ns) == routes_before
    assert up["interface"] not in vpn.links(vpn.client_ns)


RECEIVER = textwrap.dedent("""
    import hashlib, socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], 5001)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b); n += len(b)
    c.sendall(h.hexdigest().encode()); c.close()
    print(n, h.hexdigest(), flush=True)
""")

SENDER = textwrap.dedent("""
    import hashlib, socket, sys
    total = int(sys.argv[2]); chunk = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    s = socket.create_connection((sys.argv[1], 5001), timeout=60); h = hashlib.sha256(); sent = 0
    i = 0
    while sent < total:
        block = (i.to_bytes(4, "big") + chunk)[: min(len(chunk), total - sent)]
        s.sendall(block); h.update(block); sent += len(block); i += 1
    s.shutdown(socket.SHUT_WR)
    answer = s.recv(100).decode()
    print(sent, h.hexdigest(), answer, flush=True)
""")


def test_100_megabytes_through_the_tunnel(vpn: VpnLab) -> None:
    vpn.start_server()
    client = vpn.connect("--require-mppe-128")
    up = client.wait_up()
    receiver = vpn.lab.popen(vpn.server_ns, [PY, "-c", RECEIVER, TUNNEL_LOCAL], stdout=subprocess.PIPE,
                             text=True)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    total = 100 * 1024 * 1024
    sent = vpn.lab.run(vpn.client_ns, [PY, "-c", SENDER, TUNNEL_LOCAL, str(total)], timeout=240)
    count, digest, answer = sent.stdout.split()
    assert int(count) == total
    assert answer == digest, "the receiver's checksum differs from the sender's"
    line = receiver.stdout.readline().split()
    assert int(line[0]) == total and line[1] == digest
    receiver.wait(10)
    assert up["mppe"].startswith("MPPE 128-bit")
    assert client.stop() == 0


def test_dns_written_and_restored(vpn: VpnLab, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    original = "nameserver 192.0.2.250\nsearch example.test\n"
    resolv.write_text(original)
    vpn.start_server()
    client = vpn.connect("--dns", "--resolv-conf", str(resolv))
    up = client.wait_up()
    assert up["dns"] == [PUSHED_DNS]
    text = resolv.read_text()
    assert f"nameserver {PUSHED_DNS}" in text and "nameserver 192.0.2.250" not in text
    assert "search example.test" in text
    assert client.stop() == 0
    assert resolv.read_text() == original
    assert not (tmp_path / "resolv.conf.pptpkit-orig").exists()


def test_dns_untouched_without_the_flag(vpn: VpnLab, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.250\n")
    vpn.start_server()
    client = vpn.connect("--resolv-conf", str(resolv), "-vv")
    assert client.wait_up()["dns"] == [PUSHED_DNS]
    assert resolv.read_text() == "nameserver 192.0.2.250\n"
    assert client.stop() == 0
    # -vv: one line per PPP frame each way (LCP c021 among them).
    assert "to server" in client.stderr and "from server" in client.stderr and "c021" in client.stderr


def test_wrong_password_exits_19(vpn: VpnLab, tmp_path: Path) -> None:
    vpn.start_server()
    bad = tmp_path / "bad"
    bad.write_text("not-the-password\n")
    client = vpn.connect("--persist", password_file=bad)  # --persist must not retry this
    assert client.wait_exit(30) == 19, client.stderr
    lines = [ln for ln in client.stderr.splitlines() if ln.startswith("pptpkit connect:")]
    assert len(lines) == 1 and f"authentication to {SERVER} failed" in lines[0], client.stderr
    assert not [n for n in vpn.links(vpn.client_ns) if n.startswith("pptp")]


def test_server_down_exits_30(vpn: VpnLab) -> None:
    client = vpn.connect("--timeout", "3")
    assert client.wait_exit(20) == 30, client.stderr
    assert "cannot open the PPTP control connection" in client.stderr
    # Words, not Python's "[Errno 111] Connect call failed (...)".
    assert "connection refused: nothing listens there" in client.stderr and "Errno" not in client.stderr
    assert vpn.routes(vpn.client_ns) == [f"192.0.2.0/24 dev veth-c proto kernel scope link src {CLIENT}"]


def test_persist_reconnects_after_a_server_restart(vpn: VpnLab) -> None:
    vpn.start_server()
    client = vpn.connect("--persist", "--echo-interval", "1", "--echo-failure", "3")
    first = client.wait_up()
    assert vpn.ping(vpn.client_ns, TUNNEL_LOCAL).returncode == 0
    vpn.kill_server()
    down = client.next_event("down", 20)
    assert down["code"] in (15, 16), down
    client.next_event("retry", 10)
    vpn.start_server()
    second = client.wait_up(40)
    assert second["local_address"]
    out = vpn.ping(vpn.client_ns, TUNNEL_LOCAL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert client.proc.poll() is None
    assert client.stop() == 0
    assert first["interface"] not in vpn.links(vpn.client_ns)
    assert second["interface"] not in vpn.links(vpn.client_ns)


def test_gre_blocked(vpn: VpnLab) -> None:
    require_binary("nft")
    vpn.start_server()
    vpn.lab.run(vpn.client_ns, ["nft", "add table inet pkblock"])
    vpn.lab.run(vpn.client_ns, ["nft", "add chain inet pkblock in { type filter hook input priority 0 ; }"])
    vpn.lab.run(vpn.client_ns, ["nft", "add rule inet pkblock in meta l4proto gre drop"])
    routes_before = vpn.routes(vpn.client_ns)
    client = vpn.connect()
    assert client.wait_exit(30) == 31, client.stderr
    lines = [ln for ln in client.stderr.splitlines() if ln.startswith("pptpkit connect:")]
    assert lines == [f"pptpkit connect: GRE return path broken: the control connection to {SERVER} works "
                     "but no GRE (IP protocol 47) packet came back (a firewall dropping GRE, or a NAT "
                     "without PPTP support?)"], client.stderr
    assert "LCP" not in lines[0]
    assert vpn.routes(vpn.client_ns) == routes_before


@pytest.mark.parametrize("flags", [["--no-host-route", "--route", "192.0.2.0/24"],
                                   ["--no-host-route", "--default-route"],
                                   ["--route", f"{SERVER}/32"]])
def test_routing_loop_refused(vpn: VpnLab, flags: list[str]) -> None:
    vpn.start_server()
    routes_before = vpn.routes(vpn.client_ns)
    client = vpn.connect(*flags, "--persist")  # permanent: not retried
    assert client.wait_exit(20) == 32, client.stderr
    lines = [ln for ln in client.stderr.splitlines() if ln.startswith("pptpkit connect:")]
    assert len(lines) == 1 and "tunnel would carry its own GRE and TCP" in lines[0], client.stderr
    assert vpn.routes(vpn.client_ns) == routes_before
    assert not [n for n in vpn.links(vpn.client_ns) if n.startswith("pptp")]
    assert "connection from" not in vpn.server_text()  # refused before dialling


def test_twenty_concurrent_clients(vpn: VpnLab) -> None:
    vpn.start_server()
    clients = [vpn.connect("--ifname", f"pptp{i}") for i in range(20)]
    ups = [c.wait_up(60) for c in clients]
    addresses = [u["local_address"] for u in ups]
    assert len(set(addresses)) == 20, addresses
    for i, up in enumerate(ups):
        assert up["interface"] == f"pptp{i}"
    for up in ups:
        out = vpn.ping(vpn.client_ns, TUNNEL_LOCAL, count=1, interface=up["interface"])
        assert out.returncode == 0, (up, out.stdout, out.stderr)
    # And from the server to every client address.  Twenty clients in one namespace share the
    # server as peer: each must answer from its own tunnel (source routing, as a multi-homed
    # host would), or the server drops the reply that left through another client's session
    # with this one's address (anti-spoofing).
    for i, up in enumerate(ups):
        vpn.lab.ip(vpn.client_ns, "rule", "add", "from", up["local_address"], "table", str(100 + i))
        vpn.lab.ip(vpn.client_ns, "route", "add", f"{TUNNEL_LOCAL}/32", "dev", up["interface"],
                   "table", str(100 + i))
    for up in ups:
        assert vpn.ping(vpn.server_ns, up["local_address"], count=1).returncode == 0
    # Each tunnel pinned a host route of its own: the first to leave unpins only itself.
    pins = vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").splitlines()
    assert len(pins) == 20, pins
    assert clients[0].stop() == 0, clients[0].stderr
    assert len(vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").splitlines()) == 19
    for c in clients[1:]:
        c.proc.send_signal(signal.SIGTERM)
    for c in clients[1:]:
        assert c.wait_exit(20) == 0, c.stderr
    assert not [n for n in vpn.links(vpn.client_ns) if n.startswith("pptp")]
    assert vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").strip() == ""


def test_call_refused_exits_8(vpn: VpnLab) -> None:
    vpn.start_server("--max-sessions", "1")
    first = vpn.connect()
    first.wait_up()
    second = vpn.connect()
    assert second.wait_exit(20) == 8, second.stderr
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("pptpkit connect:")]
    assert len(lines) == 1 and f"{SERVER} refused the call" in lines[0], second.stderr
    assert first.proc.poll() is None  # the first tunnel is not disturbed
    assert first.stop() == 0


def test_first_lcp_exchange_needs_no_retransmission(vpn: VpnLab) -> None:
    """The server's first LCP Configure-Request arrives while the client is still attaching PPP
    to its new call; it must wait for PPP, not be dropped.  Dropped, the link comes up only on
    the server's retransmission, one restart interval (3 s, pppd's default, which both sides use
    here) after the call: so every one of these connects must be up well before that."""
    vpn.start_server()
    for _ in range(3):
        started = time.monotonic()
        client = vpn.connect("--lcp-restart", "3")
        client.wait_up()
        took = time.monotonic() - started
        assert client.stop(signal.SIGTERM) == 0, client.stderr
        assert took < 2.5, f"up after {took:.2f} s: the first LCP exchange was retransmitted"


def test_json_down_event_on_a_clean_stop(vpn: VpnLab) -> None:
    vpn.start_server()
    client = vpn.connect()
    client.wait_up()
    assert client.stop(signal.SIGTERM) == 0, client.stderr
    down = client.next_event("down", 5)
    assert down["code"] == 0 and down["message"] == "stopped", down


def test_plain_mode_says_link_up_once(vpn: VpnLab) -> None:
    vpn.start_server()
    out = vpn.tmp / "plain.out"
    argv = [PY, "-m", "pptpkit", "connect", SERVER, "--user", USER, "--password-file", str(vpn.password_file),
            "--lcp-restart", "1"]
    with out.open("wb") as f:
        proc = vpn.lab.popen(vpn.client_ns, argv, stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT)
    wait_for(lambda: "link up" in out.read_text(errors="replace"), 20, "link up")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert out.read_text(errors="replace").count("link up") == 1, out.read_text(errors="replace")


def test_a_killed_run_s_host_route_is_removed_by_the_next(vpn: VpnLab) -> None:
    vpn.start_server()
    first = vpn.connect()
    first.wait_up()
    first.proc.kill()
    first.proc.wait(10)
    pins = vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").splitlines()
    assert len(pins) == 1, pins  # SIGKILL: nobody removed it
    second = vpn.connect()
    second.wait_up()
    pins = vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").splitlines()
    assert len(pins) == 1 and "metric" not in pins[0], pins  # the old one gone, ours at metric 0
    assert second.stop() == 0
    assert vpn.lab.ip(vpn.client_ns, "route", "show", f"{SERVER}/32").strip() == ""
    assert "left by a pptpkit connect that was killed" in second.stderr, second.stderr


def test_gre_blocked_towards_the_server(vpn: VpnLab) -> None:
    require_binary("nft")
    vpn.start_server()
    vpn.lab.run(vpn.client_ns, ["nft", "add table inet pkblock"])
    vpn.lab.run(vpn.client_ns, ["nft", "add chain inet pkblock out { type filter hook output priority 0 ; }"])
    vpn.lab.run(vpn.client_ns, ["nft", "add rule inet pkblock out meta l4proto gre drop"])
    started = time.monotonic()
    client = vpn.connect()
    assert client.wait_exit(30) == 31, client.stderr
    assert time.monotonic() - started < 15
    lines = [ln for ln in client.stderr.splitlines() if ln.startswith("pptpkit connect:")]
    assert len(lines) == 1 and f"GRE (IP protocol 47) from us does not reach {SERVER}" in lines[0], lines


def test_verbose_shows_the_protocol_not_library_noise(vpn: VpnLab) -> None:
    vpn.start_server()
    client = vpn.connect("-v")
    client.wait_up()
    assert client.stop() == 0
    err = client.stderr
    assert "PPP phase authenticate -> network" in err and "LCP up: MRU" in err, err
    assert "pyroute2" not in err and "asyncio" not in err, err


def _link_local_pair(vpn: VpnLab, ns: str, ifname: str) -> tuple[str, str]:
    out = vpn.lab.run(ns, ["ip", "-6", "-o", "addr", "show", "dev", ifname]).stdout
    for line in out.splitlines():
        if " peer " in line:
            words = line.split()
            local, peer = words[words.index("inet6") + 1], words[words.index("peer") + 1]
            return local.split("/")[0], peer.split("/")[0]
    raise AssertionError(f"no link-local pair on {ifname}: {out}")


def test_ipv6_inside_the_tunnel(vpn: VpnLab) -> None:
    vpn.start_server("--ipv6")
    client = vpn.connect("--ipv6")
    up = client.wait_up()
    ours, theirs = _link_local_pair(vpn, vpn.client_ns, up["interface"])
    assert ours.startswith("fe80::") and theirs.startswith("fe80::") and ours != theirs
    # The server's side of the same session has the mirror image.
    server_if = next(n for n in vpn.links(vpn.server_ns) if n.startswith("pptpkit"))
    assert _link_local_pair(vpn, vpn.server_ns, server_if) == (theirs, ours)
    for ns, target, ifname in ((vpn.client_ns, theirs, up["interface"]), (vpn.server_ns, ours, server_if)):
        done = vpn.lab.run(ns, ["ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", f"{target}%{ifname}"],
                           check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert client.stop() == 0


def test_ipv6_prefix_routed_to_the_client(vpn: VpnLab) -> None:
    vpn.start_server("--ipv6", "--ipv6-prefix", "2001:db8:100::/48")
    client = vpn.connect("--ipv6")
    up = client.wait_up()
    wait_for(lambda: " routed to " in vpn.server_text(), 10, "the prefix route")
    routed = re.search(r"(?:worker (\d+): )?\[[0-9A-F]{16}\] IPv6 prefix (\S+) routed", vpn.server_text())
    assert routed is not None, vpn.server_text()
    # The first prefix of the process that holds the session: with workers (by default one per
    # CPU) worker i hands out every N-th /64 from the i-th on.
    worker = int(routed.group(1) or 0)
    prefix = ipaddress.IPv6Network(routed.group(2))
    assert prefix == ipaddress.IPv6Network(f"2001:db8:100:{worker:x}::/64"), vpn.server_text()
    # What a client does with its prefix is its own business: here, one address on its loopback.
    address = str(prefix[1])
    vpn.lab.ip(vpn.client_ns, "-6", "addr", "add", f"{address}/128", "dev", "lo")
    done = vpn.lab.run(vpn.server_ns, ["ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2",
                                       address], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert up["interface"]
    assert client.stop() == 0
