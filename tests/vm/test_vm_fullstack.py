"""Full stack against the real pppd in the VM, in both roles.

* ``pptpkit connect`` in the host namespace -> the guest's pptpd + pppd: the production setup
  (MS-CHAPv2, MPPE-128 required) and the open one (PAP, CHAP-MD5, no MPPE).
* The guest's pptp-linux + pppd -> ``pptpkit server`` (built-in PPP) in the host namespace:
  MS-CHAPv2 + MPPE-128 required, and PAP without MPPE.

Each test brings the link up, pings through the tunnel both ways, tears it down from one side
or the other and checks that nothing of ours is left in the namespace.  The production client
test and the server tests also capture the bridge and run Wireshark's dissectors over it.

Run serially with other VM tests (one VM per machine), e.g. under
``flock /run/pptpkit-vm.lock``.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fullstack_support import (
    Capture,
    HostState,
    OurClient,
    OurServer,
    gre_call_ids,
    host_leftovers,
    host_state,
    our_pids,
    ppp_protocols,
    pptp_message_types,
    read_counter,
    tshark_problems,
    wait_for,
)
from vmlib import (
    BRIDGE,
    GUEST_ADDR,
    HOST_ADDR,
    LINKS_LOG,
    MPPE_128_ENABLED,
    NAMESPACE,
    PASSWORD,
    PPPD_EXIT_SIGNALLED,
    SERVER_LOG,
    SERVER_PPP_ADDR,
    USER,
    GuestVm,
    vm_fixture,
    vm_session_fixture,
)

from conftest import require_binary

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)

GUEST_CLIENT = "fs"
GUEST_POOL = ipaddress.IPv4Network("198.51.100.0/24")

# pptpkit connect's documented exit statuses (pptpkit connect --help).
EXIT_STOPPED = 0
EXIT_HANGUP = 16
PPPD_EXIT_HANGUP = 16  # pppd(8): "the link was terminated by the modem hanging up"

# RFC 2637 control message types, PPP protocol numbers.
SCCRQ, SCCRP, OCRQ, OCRP, CCRQ = 1, 2, 7, 8, 12
LCP, PAP, CHAP, IPCP, CCP = 0xC021, 0xC023, 0xC223, 0x8021, 0x80FD
IP_DATA, MPPE_DATA = 0x0021, 0x00FD

# What pppd logs when an MPPE link goes up; with MPPE off it must log none of these.
MPPE_ANY = "compression enabled"


@pytest.fixture
def lab(vm: GuestVm, tmp_path: Path) -> Iterator[HostState]:
    """A quiet guest (no pptpd, no client) and the namespace's state to compare against."""
    require_binary("ping")
    vm.exec(f"pk-client --stop --name {GUEST_CLIENT}; pk-server --stop", timeout=60, check=True)
    assert not our_pids(), "pptpkit already running in the VM's host namespace"
    before = host_state(vm)
    yield before
    # Whatever a failed test left running is ours to end; the test itself checked cleanliness.
    for pid in our_pids():
        vm.host(["kill", "-KILL", str(pid)], check=False)
    if vm.is_running():
        vm.exec(f"pk-client --stop --name {GUEST_CLIENT}; pk-server --stop", timeout=60)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    path = tmp_path / "chap-secrets"
    path.write_text(f"{USER} pptpd {PASSWORD} *\n")
    path.chmod(0o600)
    return path


def assert_clean(vm: GuestVm, before: HostState) -> None:
    """Nothing of ours left in the namespace: no pptpkit process, interface or route."""
    try:
        wait_for(lambda: not host_leftovers(vm, before), 10, "the namespace to be clean")
    except AssertionError:
        raise AssertionError("left behind: " + "; ".join(host_leftovers(vm, before))) from None


def ping_from_host(vm: GuestVm, address: str, interface: str) -> None:
    """Three echoes from the host namespace, counted on our TUN interface on the way back."""
    rx_before = read_counter(vm, interface, "rx_packets")
    done = vm.host(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", address], check=False, timeout=30)
    output = done.stdout.decode()
    assert done.returncode == 0 and " 0% packet loss" in output, output + done.stderr.decode()
    assert read_counter(vm, interface, "rx_packets") >= rx_before + 3


def ping_from_guest(vm: GuestVm, address: str, interface: str) -> None:
    """Three echoes from the guest, seen arriving on our TUN interface."""
    rx_before = read_counter(vm, interface, "rx_packets")
    result = vm.exec(f"ping -n -c 3 -i 0.2 -W 3 {address}", timeout=30)
    assert result.status == 0 and " 0% packet loss" in result.output, result.output
    assert read_counter(vm, interface, "rx_packets") >= rx_before + 3


def check_capture(pcap: Path, *, needed: set[int], calls: int = 1) -> None:
    """Wireshark finds nothing wrong, and there was a whole PPTP session to look at: the
    control messages and, in GRE, the PPP protocols ``needed``."""
    assert tshark_problems(pcap) == []
    assert {SCCRQ, SCCRP, OCRQ, OCRP} <= pptp_message_types(pcap)
    assert needed <= ppp_protocols(pcap)
    assert len(gre_call_ids(pcap)) == 2 * calls  # each end's call ID, in the GRE key field


def wait_guest_ppp_up(vm: GuestVm, local: str, since: int) -> None:
    """pppd's interface is configured (ip-up ran): only then does the guest route to us.

    Our side reports the link up as soon as IPCP is open here; pppd configures its
    interface a moment later, and an echo sent in between is lost."""
    vm.wait_for_log(LINKS_LOG, f"up ppp0 {SERVER_PPP_ADDR} {local}", since=since, timeout=15)


# -- our client against the guest's pptpd + pppd ---------------------------------------------------


def test_client_production_mppe128_pings_and_sigterm(
    vm: GuestVm, lab: HostState, tmp_path: Path, password_file: Path
) -> None:
    vm.start_server()
    links_mark = vm.log_size(LINKS_LOG)
    pcap = tmp_path / "client-production.pcap"
    with Capture(NAMESPACE, BRIDGE, pcap):
        client = OurClient(vm, GUEST_ADDR, password_file, tmp_path / "connect.log", "--require-mppe-128")
        up = client.wait_up()
        assert (up["auth"], up["username"], up["mppe"]) == ("mschap-v2", USER, "MPPE 128-bit stateless")
        assert up["peer_address"] == SERVER_PPP_ADDR
        local = up["local_address"]
        assert ipaddress.IPv4Address(local) in GUEST_POOL
        vm.wait_for_log(SERVER_LOG, MPPE_128_ENABLED, timeout=10)
        vm.wait_for_log(SERVER_LOG, f"remote IP address {local}", timeout=10)
        wait_guest_ppp_up(vm, local, links_mark)
        # pppd opens IPCP only after CCP when it requires MPPE; an IPCP request sent earlier
        # is answered with Terminate-Ack and costs a restart interval (the bug this found).
        assert "sent [IPCP TermAck" not in vm.read_log(SERVER_LOG)

        ping_from_host(vm, SERVER_PPP_ADDR, up["interface"])
        ping_from_guest(vm, local, up["interface"])

        assert client.signal(signal.SIGTERM) == EXIT_STOPPED, client.log()[-4000:]
        vm.wait_for_log(SERVER_LOG, "LCP terminated by peer", timeout=15)
        vm.wait_for_log(SERVER_LOG, "Connection terminated", timeout=15)
        vm.wait_for_log(LINKS_LOG, f"down ppp0 {SERVER_PPP_ADDR} {local}", since=links_mark, timeout=15)
    assert_clean(vm, lab)
    check_capture(pcap, needed={LCP, CHAP, CCP, IPCP, MPPE_DATA})
    assert CCRQ in pptp_message_types(pcap)  # we cleared the call before closing


def test_client_production_torn_down_by_the_server(
    vm: GuestVm, lab: HostState, tmp_path: Path, password_file: Path
) -> None:
    vm.start_server()
    links_mark = vm.log_size(LINKS_LOG)
    client = OurClient(vm, GUEST_ADDR, password_file, tmp_path / "connect.log", "--require-mppe-128")
    up = client.wait_up()
    assert up["mppe"] == "MPPE 128-bit stateless"
    vm.wait_for_log(SERVER_LOG, MPPE_128_ENABLED, timeout=10)
    wait_guest_ppp_up(vm, up["local_address"], links_mark)
    ping_from_host(vm, SERVER_PPP_ADDR, up["interface"])

    # Stopping pptpd takes its control connections (and pptpctrl's pty) along: pppd sees the
    # hangup, and we see the call and the control connection go.
    vm.stop_server()
    vm.wait_for_log(SERVER_LOG, "Connection terminated", timeout=15)
    down = client.next_event(timeout=30)
    assert down["event"] == "down" and down["code"] == EXIT_HANGUP, down
    assert client.wait_exit(timeout=15) == EXIT_HANGUP, client.log()[-4000:]
    assert_clean(vm, lab)


@pytest.mark.parametrize(
    ("method", "refuse", "server_says"),
    [
        (
            "pap",
            ["--refuse-chap", "--refuse-mschap", "--refuse-mschap-v2", "--refuse-eap"],
            "sent [PAP AuthAck",
        ),
        (
            "chap",
            ["--refuse-pap", "--refuse-mschap", "--refuse-mschap-v2", "--refuse-eap"],
            "<auth chap MD5>",
        ),
    ],
)
def test_client_open_server_without_mppe(
    vm: GuestVm,
    lab: HostState,
    tmp_path: Path,
    password_file: Path,
    method: str,
    refuse: list[str],
    server_says: str,
) -> None:
    vm.start_server(open_=True)
    links_mark = vm.log_size(LINKS_LOG)
    client = OurClient(vm, GUEST_ADDR, password_file, tmp_path / "connect.log", *refuse)
    up = client.wait_up()
    assert (up["auth"], up["username"], up["mppe"]) == (method, USER, "none")
    local = up["local_address"]
    vm.wait_for_log(SERVER_LOG, f"remote IP address {local}", timeout=10)
    wait_guest_ppp_up(vm, local, links_mark)
    server_log = vm.read_log(SERVER_LOG)
    assert server_says in server_log
    assert MPPE_ANY not in server_log

    ping_from_host(vm, SERVER_PPP_ADDR, up["interface"])
    ping_from_guest(vm, local, up["interface"])

    assert client.signal(signal.SIGTERM) == EXIT_STOPPED, client.log()[-4000:]
    vm.wait_for_log(SERVER_LOG, "LCP terminated by peer", timeout=15)
    assert_clean(vm, lab)


def assert_guest_hung_up_by_us(vm: GuestVm, log_name: str) -> None:
    """Our server's shutdown ended the guest's link with an LCP Terminate-Request."""
    gone = vm.wait_client_exit(GUEST_CLIENT, timeout=30)
    assert (gone.state, gone.exit_status) == ("down", PPPD_EXIT_HANGUP), gone
    client_log = vm.read_log(log_name)
    assert "LCP terminated by peer (server shutting down)" in client_log, client_log[-3000:]


# -- the guest's pptp-linux + pppd against our server ---------------------------------------------------


@pytest.mark.parametrize(
    ("config", "server_flags", "guest_open", "mppe"),
    [
        ("production", [], False, "MPPE 128-bit stateless"),
        ("open-pap", ["--no-mppe", "--require-pap"], True, "none"),
    ],
)
def test_server_both_teardowns(
    vm: GuestVm,
    lab: HostState,
    tmp_path: Path,
    secrets: Path,
    config: str,
    server_flags: list[str],
    guest_open: bool,
    mppe: str,
) -> None:
    pcap = tmp_path / f"server-{config}.pcap"
    with Capture(NAMESPACE, BRIDGE, pcap):
        server = OurServer(vm, secrets, tmp_path / "server.log", *server_flags)

        # First link: brought down by the guest's client.
        guest = vm.start_client(HOST_ADDR, name=GUEST_CLIENT, open_=guest_open)
        assert guest.up, vm.read_log(guest.log_name)
        assert guest.remote == SERVER_PPP_ADDR
        client_log = vm.read_log(guest.log_name)
        if guest_open:
            assert guest.mppe == "" and MPPE_ANY not in client_log
            assert "PAP authentication succeeded" in client_log
        else:
            assert guest.mppe == MPPE_128_ENABLED
            vm.wait_for_log(guest.log_name, MPPE_128_ENABLED, timeout=10)
            assert "sent [IPCP TermAck" not in client_log
        session = server.wait_session_up()
        assert (session.user, session.peer, session.address) == (USER, GUEST_ADDR, guest.local)
        assert (session.local, session.mppe) == (SERVER_PPP_ADDR, mppe)

        ping_from_host(vm, guest.local, session.interface)
        ping_from_guest(vm, SERVER_PPP_ADDR, session.interface)

        stopped = vm.stop_client(GUEST_CLIENT)
        assert (stopped.state, stopped.exit_status) == ("down", PPPD_EXIT_SIGNALLED)
        server.wait_log("session down: user 'alice'", timeout=15)
        wait_for(lambda: session.interface not in host_state(vm).links, 10, "the session's interface to go")
        assert server.proc.poll() is None, "the server must outlive its sessions"

        # Second link: brought down by our server's shutdown.
        guest = vm.start_client(HOST_ADDR, name=GUEST_CLIENT, open_=guest_open)
        assert guest.up, vm.read_log(guest.log_name)
        second = server.wait_session_up(after=1)
        ping_from_guest(vm, SERVER_PPP_ADDR, second.interface)

        assert server.signal(signal.SIGTERM) == 0, server.log()[-4000:]
        assert_guest_hung_up_by_us(vm, guest.log_name)
    assert_clean(vm, lab)
    if guest_open:
        check_capture(pcap, needed={LCP, PAP, IPCP, IP_DATA}, calls=2)
        assert MPPE_DATA not in ppp_protocols(pcap)
    else:
        check_capture(pcap, needed={LCP, CHAP, CCP, IPCP, MPPE_DATA}, calls=2)
