"""The bridges with the REAL pppd (in the VM, real kernel MPPE):

* client bridge: ``pptpkit connect HOST --pppd ...`` inside the guest runs the guest's pppd on a
  pty and bridges it to our built-in server on the host (namespace pkvm-host);
* server bridge: ``pptpkit server --ppp-program /usr/sbin/pppd`` inside the guest spawns the
  guest's pppd per call (pptpd's argv, Debian's pptpd-options) for the guest's pptp-linux +
  pppd client in a guest namespace.

Both: pings through, and pppd logs "MPPE 128-bit stateless compression enabled".
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmlib import (
    HOST_ADDR,
    MPPE_128_ENABLED,
    PASSWORD,
    SERVER_PPP_ADDR,
    USER,
    GuestVm,
    stop,
    vm_fixture,
    vm_session_fixture,
)

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)

GUEST_NS = "brcli"
VETH_SERVER_ADDR = "203.0.113.65"
VETH_CLIENT_ADDR = "203.0.113.66"
BRIDGE_LOG = "pptpkit-bridge.log"
BRIDGE_PPPD_LOG = "pppd-bridge.log"


def test_client_bridge_real_pppd_against_our_builtin_server(vm: GuestVm, tmp_path: Path) -> None:
    secrets = tmp_path / "chap-secrets"
    secrets.write_text(f"{USER} pptpd {PASSWORD} *\n")
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as log:
        server = vm.host_popen([
            sys.executable, "-m", "pptpkit", "server", "--listen", HOST_ADDR,
            "--local-ip", SERVER_PPP_ADDR, "--remote-ip", "198.51.100.10-20", "--secrets", str(secrets),
            "--require-mschap-v2", "--require-mppe-128", "--tun-name", "pkbr%d",
        ], stdout=subprocess.DEVNULL, stderr=log)
    vm.exec(f"rm -f /pk/log/{BRIDGE_LOG} /pk/log/{BRIDGE_PPPD_LOG}")
    try:
        deadline = time.monotonic() + 30
        while "listening on" not in server_log.read_text():
            assert server.poll() is None, server_log.read_text()
            assert time.monotonic() < deadline, "our server did not start: " + server_log.read_text()
            time.sleep(0.1)
        # pptp-linux's classic mode: our process opens the pty and runs the real pppd on it.
        pppd_opts = ["name", USER, "remotename", "pptpd", "require-mppe-128", "refuse-eap", "noauth",
                     "nodefaultroute", "debug", "logfile", f"/pk/log/{BRIDGE_PPPD_LOG}",
                     "linkname", "pkbridge"]
        command = shlex.join(["pk-python", "-m", "pptpkit", "connect", HOST_ADDR, "--timeout", "10",
                              "--pppd", *pppd_opts])
        vm.exec(f"mkdir -p /run/pptpkit; setsid nohup {command} >/pk/log/{BRIDGE_LOG} 2>&1 "
                f"</dev/null & echo $! > /pk/state/bridge.pid", check=True)
        # Generous: Python starts slowly in the TCG guest, more so while the host is busy.
        line = vm.wait_for_log(BRIDGE_PPPD_LOG, MPPE_128_ENABLED, timeout=90)
        assert MPPE_128_ENABLED in line
        vm.wait_for_log(BRIDGE_PPPD_LOG, f"remote IP address {SERVER_PPP_ADDR}", timeout=20)
        iface = vm.wait_until("ip -o -4 addr show | awk '/peer 198.51.100.1\\// {print $2}' | grep .",
                           20, "the guest's ppp interface").split()[0]
        ping = vm.exec(f"ping -n -c 5 -i 0.2 -W 3 -I {iface} {SERVER_PPP_ADDR}")
        assert ping.status == 0 and "5 received" in ping.output, ping.output + server_log.read_text()
        # SIGTERM to our process: it stops pppd (LCP terminate, pppd exits 5) and returns that.
        vm.exec("kill -TERM $(cat /pk/state/bridge.pid)", check=True)
        vm.wait_until("! kill -0 $(cat /pk/state/bridge.pid) 2>/dev/null", 20, "the bridge to exit")
        assert "pppd exited with status 5" in vm.read_log(BRIDGE_LOG), vm.read_log(BRIDGE_LOG)
    finally:
        vm.exec("kill -KILL $(cat /pk/state/bridge.pid) 2>/dev/null; pkill -f 'linkname pkbridge'")
        stop(server)
    text = server_log.read_text() + vm.read_log(BRIDGE_LOG)
    assert "Traceback" not in text, text


@pytest.fixture
def guest_ns(vm: GuestVm) -> Iterator[None]:
    vm.add_client_namespace(GUEST_NS, "vbr", VETH_SERVER_ADDR, VETH_CLIENT_ADDR,
                            before="pk-server --stop >/dev/null 2>&1 || true")
    yield
    if vm.is_running():
        vm.exec(f"pk-client --stop --name br; kill $(cat /pk/state/brserver.pid) 2>/dev/null; "
                f"ip netns del {GUEST_NS}; ip link del vbr0 2>/dev/null; true")


def test_server_bridge_spawns_real_pppd_for_real_client(vm: GuestVm, guest_ns: None) -> None:
    # Debian's stock pptpd-options (MS-CHAPv2, MPPE-128, proxyarp ...), as pptpd would pass it.
    options = "/pk/state/br-options.pptpd"
    vm.exec(f"cp /etc/ppp/pptpd-options {options} && rm -f /pk/log/pppd-brserver.log && "
            f"printf 'debug\\nnodeflate\\nlogfile /pk/log/pppd-brserver.log\\n' >> {options}",
            check=True)
    command = shlex.join(["pk-python", "-m", "pptpkit", "server", "-v", "--listen", VETH_SERVER_ADDR,
                          "--ppp-program", "/usr/sbin/pppd", "--option", options,
                          "--localip", SERVER_PPP_ADDR, "--remoteip", "198.51.100.60-69"])
    vm.exec(f"setsid nohup {command} >/pk/log/pptpkit-brserver.log 2>&1 </dev/null & "
            f"echo $! > /pk/state/brserver.pid", check=True)
    # Python under TCG emulation starts slowly, more so while the host is busy: be patient.
    vm.wait_until(f"ss -ltn | grep -q '{VETH_SERVER_ADDR}:1723'", 90, "our server to listen",
                  logs=("pptpkit-brserver.log",))
    client = vm.start_client(VETH_SERVER_ADDR, name="br", netns=GUEST_NS, timeout=40)
    server_log = vm.read_log("pptpkit-brserver.log")
    assert client.up, vm.read_log(client.log_name) + server_log
    assert client.mppe == MPPE_128_ENABLED
    assert client.remote == SERVER_PPP_ADDR
    # The server side is the real pppd we spawned: pptpd's argv, its log says MPPE-128.
    assert f"local file {options} 115200 {SERVER_PPP_ADDR}:198.51.100.60 ipparam {VETH_CLIENT_ADDR} " \
           f"remotenumber {VETH_CLIENT_ADDR}" in vm.read_log("pptpkit-brserver.log")
    vm.wait_for_log("pppd-brserver.log", MPPE_128_ENABLED, timeout=10)
    ping = vm.exec(f"ip netns exec {GUEST_NS} ping -n -c 5 -i 0.2 -W 3 -I {client.iface} {client.remote}")
    assert ping.status == 0 and "5 received" in ping.output, ping.output
    # The client hangs up: our server clears the call and the spawned pppd is reaped.
    vm.stop_client("br")
    vm.wait_until("grep -q 'PPP program .* exited with status' /pk/log/pptpkit-brserver.log", 20,
               "our server to reap its pppd")
    assert "Traceback" not in vm.read_log("pptpkit-brserver.log")
