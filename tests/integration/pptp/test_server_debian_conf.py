"""``pptpkit server --config`` with the pptpd.conf and pptpd-options Debian 12 ships
(from the installed packages, tests/debianfiles.py), only localip/remoteip added to the one and
``mtu``/``logfile`` to the other: a client session comes up, the interface has the MTU the
``mtu`` line says, and the log is copied to the ``logfile``."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from debianfiles import stock_dir
from netns import NetnsLab
from serverlab import LOCAL_IP, Server, connect, in_ns, ping, run_in, two_namespaces

DEBIAN = stock_dir()

pytestmark = [pytest.mark.root]



@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    with NetnsLab("pkd") as lab:
        yield lab


def test_stock_debian_config_serves_a_session(lab: NetnsLab, tmp_path: Path) -> None:
    require_binary("ping")
    srv, cli = two_namespaces(lab)
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(DEBIAN / "options", etc / "options")
    (etc / "chap-secrets").write_text('alice pptpd "alice pw" *\n')
    logfile = tmp_path / "pptpd.log"
    options = etc / "pptpd-options"
    options.write_text((DEBIAN / "pptpd-options").read_text() + f"mtu 1300\nlogfile {logfile}\n")
    conf = tmp_path / "pptpd.conf"
    conf.write_text((DEBIAN / "pptpd.conf").read_text().replace(
        "option /etc/ppp/pptpd-options\n", f"option {options}\n")
        + f"localip {LOCAL_IP}\nremoteip 198.51.100.10-20\n")
    server = Server(lab, srv, tmp_path, "--config", str(conf), builtin=False,
                    env={**os.environ, "PPTPKIT_PPP_ETC": str(etc)})

    async def main() -> None:
        s = await connect("alice", "alice pw")
        assert s.up.mppe == "MPPE 128-bit stateless" and str(s.up.peer_address) == LOCAL_IP
        # The client's side: the server asked for the default MRU (mtu does not change it).
        assert s.up.mtu == 1396
        await server.await_log("session up: user 'alice', peer 192.0.2.2, address 198.51.100.10")
        _, links = await in_ns(srv, "ip", "-o", "link", "show", "pptpkit0")
        assert " mtu 1300 " in links, links
        # The server sends at most 1300 octets: a full-size DF ping fits, one more does not.
        rc, out = await ping(srv, "198.51.100.10", "-M", "do", "-s", str(1300 - 28))
        assert rc == 0, out
        rc, out = await ping(srv, "198.51.100.10", "-M", "do", "-s", str(1300 - 27))
        assert rc != 0, out
        server.proc.send_signal(signal.SIGTERM)
        await s.link.closed
        await s.client.close()

    run_in(cli, main)
    assert server.proc.wait(10) == 0, server.log()
    stderr_log, copy = server.log(), logfile.read_text()
    assert "Traceback" not in stderr_log
    # pptpd.conf's logwtmp (line 39 of the stock file) is said, not dropped.
    assert f"{conf}:39: logwtmp: not supported" in stderr_log
    for line in ("session up: user 'alice', peer 192.0.2.2, address 198.51.100.10", "listening on",
                 "session down: user 'alice'", "stopped"):
        assert line in stderr_log and line in copy, (line, copy)
