"""Proof that the VM harness works, with real peers only: Debian's pptp-linux + pppd against
Debian's pptpd + pppd inside the guest, and the guest's pptpd / pptp-linux seen from the host
namespace with hand-built RFC 2637 messages.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from vmlib import (
    BRIDGE,
    GUEST_ADDR,
    HOST_ADDR,
    LINKS_LOG,
    LOCAL_IP_LINE,
    MPPE_128_ENABLED,
    NAMESPACE,
    PPPD_EXIT_PEER_AUTH_FAILED,
    PPPD_EXIT_SIGNALLED,
    REMOTE_IP_LINE,
    SERVER_LOG,
    SERVER_PPP_ADDR,
    TAP,
    USER,
    GuestVm,
    parse_status_fields,
    stop,
    vm_fixture,
    vm_session_fixture,
)

pytestmark = [pytest.mark.vm, pytest.mark.root]
# pytest collects fixtures from the module namespace; this also marks the imports as used.
FIXTURES = (vm_fixture, vm_session_fixture)

# The real client sits in its own guest namespace behind a veth pair: with both tunnel ends in
# one namespace, both PPP addresses would be local and the kernel would answer pings over lo.
GUEST_NS = "selfcli"
VETH_SERVER_ADDR = "203.0.113.1"
VETH_CLIENT_ADDR = "203.0.113.2"

MAGIC = 0x1A2B3C4D
SCCRQ, SCCRP, STOP_CCRQ, STOP_CCRP = 1, 2, 3, 4
HEADER = struct.Struct("!HHIHH")  # Length, PPTP Message Type, Magic Cookie, Control Type, Reserved0
SCCR_BODY = struct.Struct("!HBBIIHH64s64s")  # version, result/reserved, error/reserved, ...


def sccrq() -> bytes:
    """Start-Control-Connection-Request (RFC 2637 section 2.1), 156 bytes."""
    body = SCCR_BODY.pack(0x0100, 0, 0, 1, 1, 1, 1, b"pkvm-test", b"pptpkit")
    return HEADER.pack(HEADER.size + len(body), 1, MAGIC, SCCRQ, 0) + body


def stop_ccrq() -> bytes:
    """Stop-Control-Connection-Request (section 2.3), reason 1 (none), 16 bytes."""
    return HEADER.pack(16, 1, MAGIC, STOP_CCRQ, 0) + struct.pack("!BBH", 1, 0, 0)


# Runs in the host namespace: sends each hex argument as one message and prints every control
# message received in reply, one hex line each, reading by the Length field.
EXCHANGE = r"""
import socket, struct, sys
sock = socket.create_connection((sys.argv[1], 1723), timeout=15)
def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data
for message in sys.argv[2:]:
    sock.sendall(bytes.fromhex(message))
    head = read_exact(2)
    print((head + read_exact(struct.unpack("!H", head)[0] - 2)).hex(), flush=True)
sock.close()
"""

# Runs in the host namespace: accepts one PPTP control connection, prints the first message.
LISTEN_ONCE = r"""
import socket, sys
server = socket.create_server((sys.argv[1], 1723))
server.settimeout(60)
print("LISTENING", flush=True)
conn, _ = server.accept()
conn.settimeout(15)
data = b""
while len(data) < 156:
    chunk = conn.recv(156 - len(data))
    if not chunk:
        break
    data += chunk
print(data.hex(), flush=True)
conn.close()
"""


@pytest.fixture(scope="module")
def guest_lab(vm_session: GuestVm) -> Iterator[None]:
    """The client namespace and veth pair inside the guest."""
    vm_session.up()
    vm_session.exec(
        f"""
        set -e
        ip netns del {GUEST_NS} 2>/dev/null || true
        ip link del vlab0 2>/dev/null || true
        ip netns add {GUEST_NS}
        ip link add vlab0 type veth peer name vlab1 netns {GUEST_NS}
        ip addr add {VETH_SERVER_ADDR}/24 dev vlab0
        ip link set vlab0 up
        ip -n {GUEST_NS} link set lo up
        ip -n {GUEST_NS} addr add {VETH_CLIENT_ADDR}/24 dev vlab1
        ip -n {GUEST_NS} link set vlab1 up
        ip netns exec {GUEST_NS} ping -c 1 -W 3 {VETH_SERVER_ADDR}
        """,
        check=True,
    )
    yield
    if vm_session.is_running():
        vm_session.exec(f"pk-client --stop --name self; pk-server --stop; ip netns del {GUEST_NS}")


def test_guest_has_real_peers_and_the_checkout(vm: GuestVm) -> None:
    result = vm.exec(
        """
        set -e
        test -c /dev/ppp
        for m in ppp_generic ppp_async ppp_mppe ppp_deflate bsd_comp slhc tun veth virtio_net 9p; do
            grep -q "^$m " /proc/modules || { echo "module $m not loaded"; exit 1; }
        done
        dpkg-query -W -f '${Package} ${Version}\n' ppp pptpd pptp-linux
        python3 -c 'import Crypto.Cipher.ARC4, pyroute2; print("debian-python-ok")'
        pk-python -c 'import pptpkit, pptpkit.wire; print("pptpkit-importable")'
        test -f /pptpkit/pyproject.toml
        if touch /pptpkit/.pkvm-write-test 2>/dev/null; then echo "checkout writable"; exit 1; fi
        """,
        check=True,
    )
    assert "ppp 2.4.9" in result.output
    assert "pptpd 1.4.0" in result.output
    assert "pptp-linux 1.10.0" in result.output
    assert "debian-python-ok" in result.output
    assert "pptpkit-importable" in result.output


def test_command_channel_reports_status_output_and_timeout(vm: GuestVm) -> None:
    result = vm.exec("echo out; echo err >&2; exit 7")
    assert (result.status, result.output.split()) == (7, ["out", "err"])
    assert vm.exec("sleep 10", timeout=1).status == 124


def test_host_namespace_is_test_net_only(vm: GuestVm) -> None:
    routes = vm.host(["ip", "-4", "route", "show", "table", "all"]).stdout.decode()
    unicast = [line for line in routes.splitlines() if not line.startswith(("local ", "broadcast "))]
    assert unicast == [f"192.0.2.0/24 dev {BRIDGE} proto kernel scope link src {HOST_ADDR} "]
    assert "master " + BRIDGE in vm.host(["ip", "-o", "link", "show", "dev", TAP]).stdout.decode()
    vm.host(["ping", "-c", "1", "-W", "3", GUEST_ADDR])


def test_real_client_real_server_mschapv2_mppe128(vm: GuestVm, guest_lab: None) -> None:
    vm.start_server()
    client = vm.start_client(VETH_SERVER_ADDR, name="self", netns=GUEST_NS)
    assert client.up, vm.read_log(client.log_name)
    assert client.remote == SERVER_PPP_ADDR
    assert client.mppe == MPPE_128_ENABLED
    for log in (SERVER_LOG, client.log_name):
        vm.wait_for_log(log, MPPE_128_ENABLED, timeout=10)
        vm.wait_for_log(log, LOCAL_IP_LINE, timeout=10)
        vm.wait_for_log(log, REMOTE_IP_LINE, timeout=10)
    server_link = parse_status_fields(vm.share.joinpath("state", f"link-{VETH_CLIENT_ADDR}").read_text())
    assert (server_link["STATE"], server_link["REMOTE"]) == ("up", client.local)

    # The server's PPP interface must see the echo requests: they crossed GRE + MPPE.
    counter = f"/sys/class/net/{server_link['IFACE']}/statistics/rx_packets"
    before = int(vm.exec(f"cat {counter}", check=True).output)
    ping = vm.exec(
        f"ip netns exec {GUEST_NS} ping -n -c 5 -i 0.2 -W 3 -I {client.iface} {client.remote}",
        check=True,
    )
    assert "5 received" in ping.output
    assert int(vm.exec(f"cat {counter}", check=True).output) >= before + 5

    links_mark = vm.log_size(LINKS_LOG)
    stopped = vm.stop_client("self")
    assert (stopped.state, stopped.running, stopped.exit_status) == ("down", False, PPPD_EXIT_SIGNALLED)
    # The server's pppd notices the hangup too.
    vm.wait_for_log(LINKS_LOG, f"down {server_link['IFACE']} {SERVER_PPP_ADDR}", since=links_mark, timeout=15)


def test_wrong_password_makes_pppd_exit_19(vm: GuestVm, guest_lab: None) -> None:
    vm.start_server()
    client = vm.start_client(
        VETH_SERVER_ADDR, name="self", netns=GUEST_NS, password="not-" + "wonderland", timeout=30
    )
    assert (client.state, client.exit_status) == ("exited", PPPD_EXIT_PEER_AUTH_FAILED)
    vm.wait_for_log(client.log_name, "MS-CHAP authentication failed", timeout=10)
    vm.wait_for_log(SERVER_LOG, f"Peer {USER} failed CHAP authentication", timeout=10)
    vm.wait_for_log(SERVER_LOG, "CHAP Failure", timeout=10)  # carries E=691, access denied


def test_host_reaches_guest_pptpd_with_hand_built_sccrq(vm: GuestVm) -> None:
    vm.start_server()
    done = vm.host([sys.executable, "-c", EXCHANGE, GUEST_ADDR, sccrq().hex(), stop_ccrq().hex()], timeout=30)
    replies = [bytes.fromhex(line) for line in done.stdout.decode().split()]
    assert len(replies) == 2
    reply = replies[0]
    length, msg_type, magic, ctrl_type, _ = HEADER.unpack_from(reply)
    assert (length, msg_type, magic, ctrl_type) == (156, 1, MAGIC, SCCRP)
    version, result, error, _, _, _, _, _, vendor = SCCR_BODY.unpack_from(reply, HEADER.size)
    assert (version, result, error) == (0x0100, 1, 0)  # result 1: channel established
    assert vendor.rstrip(b"\0") == b"linux"
    assert HEADER.unpack_from(replies[1])[:4] == (16, 1, MAGIC, STOP_CCRP)


def test_guest_client_role_reaches_host_listener(vm: GuestVm) -> None:
    listener = vm.host_popen(
        [sys.executable, "-c", LISTEN_ONCE, HOST_ADDR], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == b"LISTENING"
        vm.start_client(HOST_ADDR, name="tohost", open_=True, wait=False)
        request = bytes.fromhex(listener.stdout.readline().decode())
        assert listener.wait(timeout=30) == 0
    finally:
        stop(listener)
    length, msg_type, magic, ctrl_type, _ = HEADER.unpack_from(request)
    assert (length, msg_type, magic, ctrl_type) == (156, 1, MAGIC, SCCRQ)
    assert SCCR_BODY.unpack_from(request, HEADER.size)[8].rstrip(b"\0") == b"cananian"
    # The listener hung up without answering: pppd gives up and reports why it exited.
    gone = vm.wait_client_exit("tohost", timeout=30)
    assert gone.state == "exited" and gone.exit_status not in (None, 0), gone


def test_down_leaves_nothing_behind(vm: GuestVm) -> None:
    pid = vm.qemu_pid()
    assert pid is not None
    vm.down()
    assert vm.qemu_pid() is None
    assert not pid_alive(pid)
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, check=True).stdout.decode()
    assert NAMESPACE not in netns_list.split()
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, check=True).stdout.decode()
    assert TAP not in root_links and BRIDGE not in root_links
    assert not vm.is_running()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie (state Z) has already exited; only its parent has not reaped it yet.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
