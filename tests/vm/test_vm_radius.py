"""The real pptp-linux + pppd in the VM log in to ``pptpkit server`` through the real FreeRADIUS:
MS-CHAPv2 verified by FreeRADIUS, MPPE-128 on the keys it sent.

pppd derives its MPPE keys from the password itself; ours come from FreeRADIUS's
MS-MPPE-Send/Recv-Key.  Pings through the tunnel both ways prove the two are the same keys, and
pppd accepting our Success proves FreeRADIUS's MS-CHAP2-Success reached it intact.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from fullstack_support import OurServer, our_pids, read_counter
from vmlib import (
    HOST_ADDR,
    MPPE_128_ENABLED,
    NAMESPACE,
    PASSWORD,
    SERVER_PPP_ADDR,
    USER,
    GuestVm,
    vm_fixture,
    vm_session_fixture,
)

from conftest import require_binary
from freeradius import FreeRadius, User
from netns import NetnsLab

pytestmark = [pytest.mark.vm, pytest.mark.root]
FIXTURES = (vm_fixture, vm_session_fixture)

GUEST_CLIENT = "rad"
SECRET = "vm-radius-secret"


class _VmNamespace:
    """What :class:`FreeRadius` needs of a lab (``popen``/``run`` in a namespace), for the VM's
    host namespace, which the VM harness owns."""

    def __init__(self, vm: GuestVm) -> None:
        self.vm = vm

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        assert ns == NAMESPACE
        return self.vm.host_popen(argv, **kwargs)

    def run(self, ns: str, argv: Sequence[str], *, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
        assert ns == NAMESPACE
        return self.vm.host(argv, check=check, timeout=timeout)


@pytest.fixture
def radius(vm: GuestVm, tmp_path: Path) -> Iterator[FreeRadius]:
    require_binary("freeradius")
    vm.exec(f"pk-client --stop --name {GUEST_CLIENT}; pk-server --stop", timeout=60, check=True)
    lab = cast(NetnsLab, _VmNamespace(vm))
    with FreeRadius(lab, NAMESPACE, HOST_ADDR, tmp_path / "fr", SECRET, [User(USER, PASSWORD, nt_only=True)],
                    auth_port=18120, acct_port=18130) as server:
        yield server
    for pid in our_pids():
        vm.host(["kill", "-KILL", str(pid)], check=False)
    if vm.is_running():
        vm.exec(f"pk-client --stop --name {GUEST_CLIENT}", timeout=60)


def test_real_pppd_logs_in_through_freeradius_with_mppe_keys_from_it(vm: GuestVm, radius: FreeRadius,
                                                                     tmp_path: Path) -> None:
    secret = tmp_path / "radius.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    server = OurServer(vm, tmp_path / "no-chap-secrets", tmp_path / "server.log",
                       "--radius-server", f"{HOST_ADDR}:18120", "--radius-acct-server", f"{HOST_ADDR}:18130",
                       "--radius-secret-file", str(secret))
    try:
        guest = vm.start_client(HOST_ADDR, name=GUEST_CLIENT)
        assert guest.up, vm.read_log(guest.log_name)
        assert guest.mppe == MPPE_128_ENABLED
        session = server.wait_session_up()
        assert (session.user, session.mppe) == (USER, "MPPE 128-bit stateless")
        assert "RADIUS authentication: " in server.log()
        # Both directions through MPPE: the guest's keys (from the password) match ours (RADIUS).
        rx_before = read_counter(vm, session.interface, "rx_packets")
        result = vm.exec(f"ping -n -c 3 -i 0.2 -W 3 {SERVER_PPP_ADDR}", timeout=30)
        assert result.status == 0 and " 0% packet loss" in result.output, result.output
        assert read_counter(vm, session.interface, "rx_packets") >= rx_before + 3
        done = vm.host(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", guest.local], check=False)
        assert done.returncode == 0, done.stdout.decode(errors="replace")
        vm.stop_client(GUEST_CLIENT)
        server.wait_log("session down: user 'alice'", timeout=15)
    finally:
        server.signal()
    assert SECRET not in server.log() and PASSWORD not in server.log()
