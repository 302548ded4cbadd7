"""``pptpkit connect SERVER --pppd [options]`` (pptp-linux's mode) against our built-in server:
the PPP program on the pty is ``pptpkit ppp`` (the host has no kernel PPP for the real pppd;
the VM test runs the real one).  Two such processes share one control connection through the
call manager; it stays while one call lives and goes with the last.  Pings cross both links."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from netns import NetnsLab, control_connections, managed_socket, tcp_rows, two_hosts

pytestmark = [pytest.mark.root]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require_binary("ping")
    with two_hosts("pkcp", SERVER, CLIENT) as lab:
        yield lab




def wait_until(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_pppd_calls_share_one_control_connection(lab: tuple[NetnsLab, str, str],
                                                     tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    (tmp_path / "chap-secrets").write_text("alice pptpd s3cret *\nbob pptpd hunter2 *\n")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "chap-secrets").write_text("alice pptpd s3cret *\nbob pptpd hunter2 *\n")
    wrapper = tmp_path / "pppd"
    wrapper.write_text(f"#!/bin/sh\nPPTPKIT_PPP_ETC={etc} exec {sys.executable} -m pptpkit ppp \"$@\"\n")
    wrapper.chmod(0o755)
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as log:
        server = netlab.popen(server_ns, [
            sys.executable, "-m", "pptpkit", "server", "--listen", SERVER,
            "--local-ip", "198.51.100.1,198.51.100.2", "--remote-ip", "198.51.100.10-11",
            "--secrets", str(tmp_path / "chap-secrets"), "--require-mschap-v2", "--require-mppe-128",
            "--no-hooks",
        ], stdout=subprocess.DEVNULL, stderr=log)
    wait_until(lambda: any(r[3] == "0A" and r[1].endswith(":06BB") for r in tcp_rows(server_ns)), 10,
               "the server to listen")
    env = {**os.environ, "PPTPKIT_PPPD": str(wrapper), "PPTPKIT_RUN_DIR": str(tmp_path / "run"),
           "PPTPKIT_CALLMGR_LOG": str(tmp_path / "callmgr.log")}
    clients = {}
    for user, ifname in (("alice", "vpn0"), ("bob", "vpn1")):
        err = open(tmp_path / f"{user}.log", "wb")  # noqa: SIM115 - closed with the process
        clients[user] = netlab.popen(client_ns, [
            sys.executable, "-m", "pptpkit", "connect", SERVER, "--timeout", "5", "--pppd",
            "name", user, "remotename", "pptpd", "require-mppe-128", "noauth", "ifname", ifname,
            "logfd", "2",
        ], env=env, stdout=subprocess.DEVNULL, stderr=err)
        err.close()

    def logs() -> str:
        return "".join(p.read_text() for p in sorted(tmp_path.glob("*.log")))

    def peer_of(ifname: str) -> str | None:
        out = netlab.ip(client_ns, "-4", "-o", "addr", "show")
        for line in out.splitlines():
            words = line.split()
            if words[1] == ifname and "peer" in words:
                return words[words.index("peer") + 1].split("/")[0]
        return None

    for user, ifname in (("alice", "vpn0"), ("bob", "vpn1")):
        proc = clients[user]
        wait_until(lambda p=proc, i=ifname: (p.poll() is None or pytest.fail(logs())) and peer_of(i),
                   20, f"{ifname} to come up")
    assert control_connections(client_ns) == 1, logs()
    for ifname in ("vpn0", "vpn1"):
        peer = peer_of(ifname)
        assert peer is not None
        ping = netlab.run(client_ns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", ifname, peer],
                          check=False)
        assert ping.returncode == 0, ping.stdout + logs()

    # Alice hangs up (SIGTERM, as to pptp): her pppd ends LCP and exits 5, which is our status.
    clients["alice"].send_signal(signal.SIGTERM)
    assert clients["alice"].wait(15) == 5, logs()
    time.sleep(0.5)
    assert control_connections(client_ns) == 1, logs()
    peer = peer_of("vpn1")
    assert peer is not None
    ping = netlab.run(client_ns, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "-I", "vpn1", peer], check=False)
    assert ping.returncode == 0, ping.stdout + logs()

    clients["bob"].send_signal(signal.SIGTERM)
    assert clients["bob"].wait(15) == 5, logs()
    wait_until(lambda: control_connections(client_ns) == 0, 10, "the control connection to close")
    wait_until(lambda: not managed_socket(tmp_path / "run", SERVER).exists(), 10, "the manager to exit")
    text = logs()
    assert "Traceback" not in text, text
    assert text.count("MPPE 128-bit stateless compression enabled") >= 2, text
    server.send_signal(signal.SIGTERM)
    server.wait(10)
