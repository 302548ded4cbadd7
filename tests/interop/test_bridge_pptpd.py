"""``pptpkit ppp`` as pptpd's PPP program: the real pptpd + pptpctrl relay the call, our PPP
stack runs the link on pptpctrl's pty, ``pptpkit connect`` is the client.  A ping crosses the
tunnel, so the real C relay is in the data path both ways."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_pptpd

from conftest import require_binary, require_root
from netns import NetnsLab, pids_in, two_hosts

pytestmark = [pytest.mark.root, pytest.mark.interop]

SERVER, CLIENT = "192.0.2.2", "192.0.2.1"
LOCAL, REMOTE = "198.51.100.1", "198.51.100.2"

OPTIONS = """\
# as Debian's pptpd-options, MS-CHAPv2 + MPPE-128 only
name pptpd
refuse-pap
refuse-chap
refuse-mschap
require-mschap-v2
require-mppe-128
ms-dns 198.51.100.53
nodefaultroute
lock
nobsdcomp
novj
novjccomp
nologfd
debug
"""


def write_etc(tmp_path: Path, log: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "options.pptpd").write_text(OPTIONS + f"logfile {log}\n")
    (etc / "chap-secrets").write_text("# client server secret addresses\nalice pptpd s3cret *\n")
    return etc


def write_wrapper(tmp_path: Path, etc: Path) -> Path:
    """What an admin puts after pptpd.conf's ``ppp``.  The sandbox's private /dev has no TUN
    node; a host's /dev has one, so the first line only matters in the test."""
    wrapper = tmp_path / "pptpkit-ppp"
    wrapper.write_text(
        "#!/bin/sh\n"
        "[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }\n"
        f"PPTPKIT_PPP_ETC={etc} exec {sys.executable} -m pptpkit.cli.ppp \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    for binary in ("pptpd", "pptpctrl", "busybox", "unshare", "ping"):
        require_binary(binary)
    with two_hosts("pkbr", SERVER, CLIENT) as lab:
        yield lab


def wait_until(cond: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_real_pptpd_runs_pptpkit_ppp(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    netlab, server_ns, client_ns = lab
    ppp_log = tmp_path / "ppp.log"
    etc = write_etc(tmp_path, ppp_log)
    wrapper = write_wrapper(tmp_path, etc)
    pptpd = start_pptpd(server_ns, tmp_path, ppp_program=wrapper, listen=SERVER,
                        localip=LOCAL, remoteip=REMOTE, extra_lines=[f"option {etc}/options.pptpd"])
    client_err = tmp_path / "connect.err"
    try:
        with open(client_err, "wb") as err:
            client = netlab.popen(client_ns, [
                sys.executable, "-m", "pptpkit", "connect", SERVER, "-u", "alice",
                "--require-mppe-128", "--timeout", "5", "--echo-interval", "0",
            ], env={**os.environ, "PPTPKIT_PASSWORD": "s3cret"}, stdout=subprocess.DEVNULL, stderr=err)

        def client_up() -> bool:
            assert client.poll() is None, client_err.read_text() + ppp_log.read_text()
            return f"inet {REMOTE} peer {LOCAL}/32" in netlab.ip(client_ns, "addr")

        wait_until(client_up, 20, "the client's interface")
        ping = netlab.run(client_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", LOCAL], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr + ppp_log.read_text()
        assert "3 received" in ping.stdout
        # Our PPP stack ran as pppd would: argv from pptpctrl, the options file, MS-CHAPv2, MPPE.
        text = ppp_log.read_text()
        assert "pptpkit ppp: server role" in text, text
        assert "remotenumber 192.0.2.1" in text
        assert "peer authenticated with mschap-v2 as 'alice'" in text
        assert "MPPE 128-bit stateless compression enabled" in text
        assert f"local  IP address {LOCAL}" in text and f"remote IP address {REMOTE}" in text
        # The client hangs up: pptpctrl sees the call go, our program is told (EOF/SIGTERM) and
        # pptpctrl reaps it.
        client.send_signal(signal.SIGTERM)
        client.wait(15)
        pptpd.wait_for_syslog(r"CTRL: Reaping child PPP", timeout=15)
        wait_until(lambda: "connection terminated" in ppp_log.read_text(), 10, "our PPP to end")
    finally:
        pptpd.stop()
    text = ppp_log.read_text()
    assert "Traceback" not in text and "Traceback" not in client_err.read_text()
    assert "GRE: Bad checksum" not in pptpd.syslog()
    # Everything pptpd started (pptpctrl, our program) goes with its PID namespace; the
    # kernel may take a moment to finish the last exits.
    wait_until(lambda: [p for p in pids_in(server_ns) if p != os.getpid()] == [], 5,
               "every process in the server namespace to end")
