"""Operating ``pptpkit server`` with the real pptp-linux + pppd in the VM as the client: the
session is listed and killed with ``pptpkit ctl`` (and pppd sees the kill), the metrics count
it, and the hook scripts run with pppd's arguments."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fullstack_support import OurServer, our_pids
from vmlib import (
    GUEST_ADDR,
    HOST_ADDR,
    PASSWORD,
    SERVER_PPP_ADDR,
    USER,
    GuestVm,
    vm_fixture,
    vm_session_fixture,
)

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)

GUEST_CLIENT = "ops"
METRICS_PORT = 19100


@pytest.fixture
def quiet(vm: GuestVm) -> Iterator[None]:
    vm.exec(f"pk-client --stop --name {GUEST_CLIENT}; pk-server --stop", timeout=60, check=True)
    yield
    for pid in our_pids():
        vm.host(["kill", "-KILL", str(pid)], check=False)
    if vm.is_running():
        vm.exec(f"pk-client --stop --name {GUEST_CLIENT}", timeout=60)


def ctl(vm: GuestVm, socket: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return vm.host([sys.executable, "-m", "pptpkit", "ctl", "--socket", str(socket), *args], check=False)


def metric(vm: GuestVm, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = vm.host([sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen("
                                          f"'http://{HOST_ADDR}:{METRICS_PORT}/metrics').read().decode())"]
                   ).stdout.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no {name} in the scrape")


def test_ctl_metrics_and_hooks_with_the_real_client(vm: GuestVm, quiet: None, tmp_path: Path) -> None:
    secrets = tmp_path / "chap-secrets"
    secrets.write_text(f"{USER} pptpd {PASSWORD} *\n")
    up_script = tmp_path / "ip-up"
    up_script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/ip-up.args\n')
    up_script.chmod(0o755)
    socket = tmp_path / "ctl.sock"
    server = OurServer(vm, secrets, tmp_path / "server.log", "--metrics", f"{HOST_ADDR}:{METRICS_PORT}",
                       "--ip-up", str(up_script), "--ctl-socket", str(socket))
    try:
        guest = vm.start_client(HOST_ADDR, name=GUEST_CLIENT)
        assert guest.up, vm.read_log(guest.log_name)
        session = server.wait_session_up()
        # The hook ran with pppd's arguments: interface, no tty, speed, local, remote, ipparam.
        end = time.monotonic() + 10
        while not (tmp_path / "ip-up.args").exists():
            assert time.monotonic() < end, "ip-up did not run"
            time.sleep(0.1)
        args = (tmp_path / "ip-up.args").read_text().split()
        assert args == [session.interface, "115200", SERVER_PPP_ADDR, guest.local, GUEST_ADDR], args
        listed = json.loads(ctl(vm, socket, "--json", "sessions").stdout)
        [row] = listed["sessions"]
        assert (row["user"], row["peer"], row["address"]) == (USER, GUEST_ADDR, guest.local)
        assert metric(vm, "pptpkit_sessions_up") == 1
        killed = ctl(vm, socket, "kill", row["id"])
        assert killed.returncode == 0, killed.stderr
        gone = vm.wait_client_exit(GUEST_CLIENT, timeout=30)
        assert gone.state == "down", gone
        assert "LCP terminated by peer" in vm.read_log(guest.log_name)
        server.wait_log("cause Admin-Reset", timeout=15)
        assert metric(vm, "pptpkit_sessions_up") == 0
    finally:
        server.signal()
    assert "Traceback" not in server.log()
