"""Two ``pptpkit connect --pppd`` tunnels to the real pptpd at once, with the real pppd at both
ends (issue 15).

Both run in a guest namespace and share one call manager.  pptpd answers Maximum Channels 1, so
the manager must give each call its own control connection; before it did, pptpd tore the first
call down when the second one's Outgoing-Call-Request arrived on the same connection.  Both
links come up with MPPE-128, carry pings at the same time, and each hangs up alone.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest
from vmlib import MPPE_128_ENABLED, SERVER_PPP_ADDR, SYSLOG, USER, GuestVm, vm_fixture, vm_session_fixture

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)

GUEST_NS = "cmcli"
VETH_SERVER_ADDR = "203.0.113.129"
VETH_CLIENT_ADDR = "203.0.113.130"
TUNNELS = ("cm1", "cm2")
RUN_DIR = "/run/pptpkit-cm"
CALLMGR_LOG = "pptpkit-callmgr.log"
# The guest namespace's PPP interfaces (those whose peer is the server's tunnel address).
PPP_IFACES = f"ip -n {GUEST_NS} -o -4 addr show | awk '/peer 198.51.100.1\\// {{print $2}}' | grep ."


@pytest.fixture
def guest_ns(vm: GuestVm) -> Iterator[None]:
    vm.add_client_namespace(GUEST_NS, "vcm", VETH_SERVER_ADDR, VETH_CLIENT_ADDR,
                            after=f"rm -rf {RUN_DIR} /pk/log/{CALLMGR_LOG} /pk/log/pptpkit-cm?.log "
                                  "/pk/log/pppd-cm?.log")
    yield
    if vm.is_running():
        kills = "; ".join(f"kill -TERM $(cat /pk/state/{name}.pid) 2>/dev/null" for name in TUNNELS)
        vm.exec(f"{kills}; sleep 1; pkill -f 'linkname cm[12]'; "
                f"pkill -f 'pptpkit.compat.callmgr.*{RUN_DIR}'; "
                f"pk-server --stop; ip netns del {GUEST_NS}; ip link del vcm0 2>/dev/null; true")


def start_tunnel(vm: GuestVm, name: str) -> None:
    pppd_opts = ["name", USER, "remotename", "pptpd", "require-mppe-128", "refuse-eap", "noauth",
                 "nodefaultroute", "debug", "logfile", f"/pk/log/pppd-{name}.log", "linkname", name]
    command = shlex.join(["pk-python", "-m", "pptpkit", "connect", VETH_SERVER_ADDR, "--timeout", "20",
                          "--pppd", *pppd_opts])
    vm.exec(f"PPTPKIT_RUN_DIR={RUN_DIR} PPTPKIT_CALLMGR_LOG=/pk/log/{CALLMGR_LOG} "
            f"setsid nohup ip netns exec {GUEST_NS} {command} >/pk/log/pptpkit-{name}.log 2>&1 "
            f"</dev/null & echo $! > /pk/state/{name}.pid", check=True)


def control_connections(vm: GuestVm) -> int:
    out = vm.exec(f"ip netns exec {GUEST_NS} ss -Htn state established '( dport = :1723 )'").output
    return len([line for line in out.splitlines() if line.strip()])


def ping_all(vm: GuestVm, ifaces: list[str]) -> str:
    """Pings through every link at the same time; the output of each, status non-zero if any failed."""
    pings = " ".join(f"(ping -n -c 5 -i 0.2 -W 3 -I {iface} {SERVER_PPP_ADDR} > /tmp/cm-ping-{iface} 2>&1 "
                     f"|| echo FAILED {iface}) &" for iface in ifaces)
    result = vm.exec(f"ip netns exec {GUEST_NS} sh -c '{pings} wait'; "
                     f"cat /tmp/cm-ping-*; rm -f /tmp/cm-ping-*")
    return result.output


def test_two_connect_pppd_to_real_pptpd(vm: GuestVm, guest_ns: None) -> None:
    vm.start_server()  # Debian's pptpd: MS-CHAPv2, MPPE-128, Maximum Channels 1
    for name in TUNNELS:
        start_tunnel(vm, name)
    logs = (CALLMGR_LOG, SYSLOG, *(f"pptpkit-{n}.log" for n in TUNNELS), *(f"pppd-{n}.log" for n in TUNNELS))
    for name in TUNNELS:
        # Generous: Python starts slowly in the TCG guest.
        try:
            vm.wait_for_log(f"pppd-{name}.log", MPPE_128_ENABLED, timeout=120)
            vm.wait_for_log(f"pppd-{name}.log", f"remote IP address {SERVER_PPP_ADDR}", timeout=30)
        except Exception as exc:
            raise AssertionError("\n".join(f"--- {n}:\n{vm.read_log(n)}" for n in logs)) from exc
    ifaces = vm.wait_until(PPP_IFACES, 20, "the two ppp interfaces", logs=logs).split()
    assert len(ifaces) == 2, ifaces
    assert control_connections(vm) == 2  # one per call: pptpd allows one call per connection

    for _ in range(2):
        out = ping_all(vm, ifaces)
        assert "FAILED" not in out and out.count("5 received") == 2, out
    syslog = vm.read_log(SYSLOG)
    assert "call is already open" not in syslog and "not handled well" not in syslog, syslog
    for name in TUNNELS:
        assert "Connection terminated" not in vm.read_log(f"pppd-{name}.log")

    # The first hangs up alone: its pppd ends, the other link still carries traffic.
    first, second = TUNNELS
    vm.exec(f"kill -TERM $(cat /pk/state/{first}.pid)", check=True)
    vm.wait_until(f"! kill -0 $(cat /pk/state/{first}.pid) 2>/dev/null", 30, "the first tunnel to end",
               logs=logs)
    established = f"ip netns exec {GUEST_NS} ss -Htn state established '( dport = :1723 )' | wc -l"
    vm.wait_until(f"[ $({established}) = 1 ]", 20, "the first control connection to close", logs=logs)
    left = vm.wait_until(PPP_IFACES, 20, "the second interface").split()
    assert len(left) == 1
    out = ping_all(vm, left)
    assert "FAILED" not in out and "5 received" in out, out
    vm.exec(f"kill -TERM $(cat /pk/state/{second}.pid)", check=True)
    vm.wait_until(f"! kill -0 $(cat /pk/state/{second}.pid) 2>/dev/null", 30, "the second tunnel to end",
               logs=logs)
    vm.wait_until(f"! pgrep -f 'pptpkit.compat.callmgr.*{RUN_DIR}'", 20, "the call manager to exit",
               logs=logs)
    text = "".join(vm.read_log(name) for name in logs)
    assert "Traceback" not in text, text
    assert "room for 1 call" in vm.read_log(CALLMGR_LOG), vm.read_log(CALLMGR_LOG)
