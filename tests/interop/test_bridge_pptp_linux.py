"""The real ``pptp SERVER --nolaunchpppd`` with ``pptpkit ppp`` on its fd 0 (a socketpair, as
pptp-linux's users wire a PPP program) against our built-in server started from a pptpd.conf
(``pptpkit server --config``).  The real C relay is in the data path: a ping crosses it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_pptp

from conftest import require_binary, require_root
from netns import NetnsLab, inside, pids_in, two_hosts

pytestmark = [pytest.mark.root, pytest.mark.interop]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    for binary in ("pptp", "busybox", "unshare", "ping"):
        require_binary(binary)
    with two_hosts("pkpl", SERVER, CLIENT) as lab:
        yield lab


def wait_until(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def listening(ns: str) -> bool:
    with inside(ns):
        rows = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[3] == "0A" and r.split()[1].endswith(":06BB") for r in rows)


def test_pptp_linux_with_pptpkit_ppp_against_our_builtin_server(
        lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    server_etc = tmp_path / "server-etc"
    server_etc.mkdir()
    (server_etc / "options.pptpd").write_text(
        "name pptpd\nrefuse-pap\nrefuse-chap\nrefuse-mschap\nrequire-mschap-v2\nrequire-mppe-128\n"
        "ms-dns 198.51.100.53\nnodefaultroute\nlock\nnobsdcomp\nnovj\nnovjccomp\nnologfd\n")
    (server_etc / "chap-secrets").write_text("alice pptpd s3cret *\n")
    conf = tmp_path / "pptpd.conf"
    conf.write_text(f"option {server_etc}/options.pptpd\nlocalip 198.51.100.1\n"
                    f"remoteip 198.51.100.10-20\nlisten {SERVER}\nlogwtmp\n")
    client_etc = tmp_path / "client-etc"
    client_etc.mkdir()
    (client_etc / "chap-secrets").write_text("alice pptpd s3cret *\n")
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as log:
        server = netlab.popen(server_ns, [sys.executable, "-m", "pptpkit", "server", "--config", str(conf),
                                          "--no-hooks"],
                              env={**os.environ, "PPTPKIT_PPP_ETC": str(server_etc)},
                              stdout=subprocess.DEVNULL, stderr=log)
    wait_until(lambda: listening(server_ns) or server.poll() is not None, 10, "the server")
    assert server.poll() is None, server_log.read_text()
    # The unsupported logwtmp keyword was read, and named, not dropped silently.
    assert f"{conf}:5: logwtmp: not supported" in server_log.read_text()

    ours, theirs = socket.socketpair()
    pptp = start_pptp(client_ns, tmp_path, SERVER, stdin=theirs.fileno())
    ppp_log = tmp_path / "ppp.log"
    with open(ppp_log, "wb") as err:
        ppp = netlab.popen(client_ns, [
            sys.executable, "-m", "pptpkit", "ppp", "name", "alice", "remotename", "pptpd",
            "require-mppe-128", "noauth", "ifname", "vpn0", "debug"],
            stdin=ours.fileno(), stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PPTPKIT_PPP_ETC": str(client_etc)})
    ours.close()
    theirs.close()

    def logs() -> str:
        return server_log.read_text() + ppp_log.read_text() + pptp.syslog()

    try:
        def up() -> bool:
            assert ppp.poll() is None, logs()
            return "peer 198.51.100.1/32 scope global vpn0" in netlab.ip(client_ns, "addr")

        wait_until(up, 20, "vpn0")
        ping = netlab.run(client_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.1"],
                          check=False)
        assert ping.returncode == 0, ping.stdout + logs()
        assert "MPPE 128-bit stateless compression enabled" in ppp_log.read_text()
        assert "Outgoing call established" in pptp.syslog()
        ppp.send_signal(signal.SIGTERM)
        assert ppp.wait(10) == 5, logs()  # pppd's status for a signal
        wait_until(lambda: not pptp.running, 10, "pptp to exit after EOF on its fd 0")
    finally:
        pptp.stop()
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    text = logs()
    assert "Traceback" not in text, text
    assert [p for p in pids_in(client_ns) if p != os.getpid()] == []
