"""``pptpkit server`` with RADIUS, and ``pptpkit connect`` clients, in namespaces (a helper module
for the RADIUS integration tests, not a test file; its fixtures ``lab`` and ``radius`` reach
every test through ``pytest_plugins`` in tests/conftest.py, and a module's own fixtures of the
same names win)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from e2e_support import Client
from freeradius import FreeRadius, User
from netns import NetnsLab
from serverlab import LOCAL_IP, SERVER, two_namespaces, wait_until_ready

RADIUS = "192.0.2.10"
SECRET = "radius-secret-7"
#: The users of the FreeRADIUS these tests start (tests/integration/radius/conftest.py).
USERS = [
    User("alice", "wonderland", reply=[("Framed-IP-Address", "198.51.100.20"), ("Class", '"gold"'),
                                       ("Filter-Id", '"none"')]),
    User("bob", "builder", nt_only=True),
    User("carol", "c@rol pw", reply=[("Session-Timeout", "4")]),
]


class RadiusServer:
    """``pptpkit server`` with RADIUS authentication and no secrets file at all."""

    def __init__(self, lab: NetnsLab, ns: str, tmp: Path, *extra: str) -> None:
        secret = tmp / "radius.secret"
        secret.write_text(f"# shared with FreeRADIUS\n{SECRET}\n")
        secret.chmod(0o600)
        self.log_path = tmp / "server.log"
        argv = [sys.executable, "-m", "pptpkit", "server", "--listen", SERVER, "--local-ip", LOCAL_IP,
                "--remote-ip", "198.51.100.10-19", "--secrets", str(tmp / "absent-chap-secrets"),
                "--radius-server", RADIUS, "--radius-secret-file", str(secret),
                "--radius-timeout", "0.5", "--radius-retries", "1", "--nas-identifier", "pptpkit-test",
                "--auth-fail-limit", "0", "--ctl-socket", str(tmp / "ctl.sock"), *extra]
        with open(self.log_path, "wb") as log:
            self.proc = lab.popen(ns, argv, stdout=subprocess.DEVNULL, stderr=log)
        wait_until_ready(self.log, lambda: self.proc.poll() is None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while text not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < end, f"no {text!r} in the server log:\n{self.log()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def connect(lab: NetnsLab, ns: str, tmp: Path, user: str, password: str, *flags: str) -> Client:
    pw = tmp / f"{user}.pw"
    pw.write_text(password + "\n")
    err = tmp / f"{user}-{time.monotonic_ns()}.err"
    argv = [sys.executable, "-m", "pptpkit", "connect", SERVER, "--user", user, "--password-file", str(pw),
            "--json", "--lcp-restart", "1", "--ifname", f"ppt{user[:3]}%d", *flags]
    with err.open("wb") as errf:
        proc = lab.popen(ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
    return Client(proc, err)


def ping_ok(lab: NetnsLab, ns: str, count: int = 3) -> bool:
    done = lab.run(ns, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-w", "10", LOCAL_IP],
                   check=False, timeout=20)
    return done.returncode == 0


def hang_up(client: Client) -> None:
    if client.proc.poll() is None:
        client.proc.terminate()
        client.proc.wait(15)




# -- fixtures: the namespaces (the server's holds FreeRADIUS on its own address) and FreeRADIUS --


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require_binary("freeradius")
    with NetnsLab("pkra") as lab:
        srv, cli = two_namespaces(lab)
        lab.ip(srv, "addr", "add", f"{RADIUS}/24", "dev", "veth-a")
        yield lab, srv, cli


@pytest.fixture
def radius(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> Iterator[FreeRadius]:
    with FreeRadius(lab[0], lab[1], RADIUS, tmp_path / "fr", SECRET, USERS) as server:
        yield server
