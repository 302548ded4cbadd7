"""The client as people set it up, against the real pptpd + pppd in the VM: a pptpsetup profile
run unchanged by ``pptpkit ppp call NAME`` through the real pptp-linux, and IPv6 inside the
tunnel with the real ``pppd +ipv6``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fullstack_support import OurClient, host_state, our_pids
from vmlib import GUEST_ADDR, PASSWORD, SERVER_PPP_ADDR, USER, GuestVm, vm_fixture, vm_session_fixture

from conftest import require_binary

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)


@pytest.fixture
def quiet(vm: GuestVm) -> Iterator[None]:
    vm.exec("pk-server --stop", timeout=60, check=True)
    before = host_state(vm)
    yield
    for pid in our_pids():
        vm.host(["kill", "-KILL", str(pid)], check=False)
    if vm.is_running():
        vm.exec("pk-server --stop", timeout=60)
    # pptp-linux adds a host route to its server and leaves it behind when it is terminated
    # (as under the real pppd, which ends its pty command the same way): not ours, removed so
    # the namespace is as the other VM tests expect it.
    for route in host_state(vm).routes:
        if route not in before.routes and route.startswith(f"{GUEST_ADDR} dev "):
            vm.host(["ip", "route", "del", GUEST_ADDR], check=False)
    assert host_state(vm).routes == before.routes


def test_pptpsetup_profile_against_the_real_pptpd(vm: GuestVm, quiet: None, tmp_path: Path) -> None:
    require_binary("pptpsetup")
    vm.start_server()
    script = (
        "set -e; mount -t tmpfs -o mode=0755 pptpkit-etc-ppp /etc/ppp; mkdir /etc/ppp/peers; "
        f"pptpsetup --create guest --server {GUEST_ADDR} --username {USER} --password '{PASSWORD}' "
        f"--encrypt; PPTPKIT_PPP_RUN={tmp_path} exec {sys.executable} -m pptpkit ppp call guest nodetach "
        "linkname guest"
    )
    log = tmp_path / "ppp.log"
    with log.open("wb") as f:
        proc = vm.host_popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        end = time.monotonic() + 40
        while "remote IP address" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < end, log.read_text(errors="replace")
            time.sleep(0.2)
        text = log.read_text(errors="replace")
        assert "MPPE 128-bit stateless compression enabled" in text, text
        assert f"remote IP address {SERVER_PPP_ADDR}" in text, text
        ifname = (tmp_path / "ppp-guest.pid").read_text().split()[1]
        done = vm.host(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", "-I", ifname, SERVER_PPP_ADDR],
                       check=False)
        assert done.returncode == 0, done.stdout.decode(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 5, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ipv6_with_the_real_pppd(vm: GuestVm, quiet: None, tmp_path: Path) -> None:
    vm.start_server(pppd_options=["+ipv6"])
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    client = OurClient(vm, GUEST_ADDR, pw, tmp_path / "connect.log", "--ipv6", "--require-mppe-128")
    try:
        up = client.wait_up()
        ifname = up["interface"]
        peer = ""
        end = time.monotonic() + 15
        while not peer:
            out = vm.host(["ip", "-6", "-o", "addr", "show", "dev", ifname]).stdout.decode()
            words = out.split()
            if "peer" in words:
                peer = words[words.index("peer") + 1].split("/")[0]
            else:
                assert time.monotonic() < end, f"no IPv6 link-local pair on {ifname}: {out}"
                time.sleep(0.2)
        assert peer.startswith("fe80::")
        ours = words[words.index("inet6") + 1].split("/")[0]
        done = vm.host(["ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "3", f"{peer}%{ifname}"],
                       check=False)
        assert done.returncode == 0, done.stdout.decode(errors="replace")
        back = vm.exec(f"ping -6 -n -c 3 -i 0.2 -W 3 {ours}%ppp0", timeout=30)
        assert back.status == 0 and " 0% packet loss" in back.output, back.output
    finally:
        client.signal(signal.SIGTERM)


def test_probe_against_the_real_pptpd(vm: GuestVm, quiet: None, tmp_path: Path) -> None:
    import json

    vm.start_server()
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    done = vm.host([sys.executable, "-m", "pptpkit", "probe", GUEST_ADDR, "--json", "--user", USER,
                    "--password-file", str(pw), "--timeout", "10"], check=False, timeout=90)
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    text = json.dumps(report)
    assert "mschap-v2" in text.lower() and "128" in text, report
    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + PASSWORD + "\n")
    bad = vm.host([sys.executable, "-m", "pptpkit", "probe", GUEST_ADDR, "--user", USER, "--password-file",
                   str(wrong), "--timeout", "10"], check=False, timeout=90)
    assert bad.returncode == 19, bad.stdout.decode(errors="replace")
