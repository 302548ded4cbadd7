"""Two ``pptpkit ppp`` processes back to back on a socketpair, each in its own namespace: one
given pptpctrl's argv and options (server side), one a pptp-linux user's pppd options (client
side).  A ping crosses; a wrong password ends both with pppd's exit statuses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from netns import NetnsLab, namespace_exists

pytestmark = [pytest.mark.root]

LOCAL, REMOTE = "198.51.100.1", "198.51.100.2"


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require_binary("ping")
    with NetnsLab("pkup") as netlab:
        yield netlab, netlab.add_namespace("s"), netlab.add_namespace("c")
    assert netlab.leftovers() == []
    assert all(not namespace_exists(ns) for ns in netlab.namespaces)


def etc_dir(path: Path, secret: str) -> Path:
    path.mkdir()
    (path / "chap-secrets").write_text(f"alice pptpd {secret} *\n")
    return path


def start(netlab: NetnsLab, ns: str, fd: int, etc: Path, args: list[str],
          log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return netlab.popen(ns, [sys.executable, "-m", "pptpkit.cli.ppp", *args], stdin=fd,
                            stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, "PPTPKIT_PPP_ETC": str(etc)})


SERVER_ARGS = ["local", "115200", f"{LOCAL}:{REMOTE}", "remotenumber", "192.0.2.1", "name", "pptpd",
               "require-mschap-v2", "refuse-pap", "require-mppe-128", "ms-dns", "198.51.100.53",
               "proxyarp"]
CLIENT_ARGS = ["name", "alice", "remotename", "pptpd", "require-mppe-128", "noauth", "usepeerdns",
               "nodetach", "ifname", "vpn0"]


@pytest.mark.parametrize("secret", ["right", "wrong"])
def test_pptpkit_ppp_back_to_back(lab: tuple[NetnsLab, str, str], tmp_path: Path, secret: str) -> None:
    netlab, server_ns, client_ns = lab
    server_etc = etc_dir(tmp_path / "server-etc", "right")
    client_etc = etc_dir(tmp_path / "client-etc", secret)
    # A "LAN" on the server side holding the client's address: proxyarp publishes it there.
    netlab.ip(server_ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
    netlab.ip(server_ns, "addr", "add", "198.51.100.254/24", "dev", "lan0")
    netlab.ip(server_ns, "link", "set", "lan0", "up")
    a, b = socket.socketpair()
    server = start(netlab, server_ns, a.fileno(), server_etc, SERVER_ARGS, tmp_path / "server.log")
    client = start(netlab, client_ns, b.fileno(), client_etc, CLIENT_ARGS, tmp_path / "client.log")
    a.close()
    b.close()
    logs = lambda: (tmp_path / "server.log").read_text() + (tmp_path / "client.log").read_text()  # noqa: E731
    if secret == "wrong":
        # pppd: the client that failed to authenticate exits 19, the server whose peer failed 11.
        assert client.wait(20) == 19, logs()
        assert server.wait(20) == 11, logs()
        return
    end = time.monotonic() + 20
    while f"inet {REMOTE} peer {LOCAL}/32 scope global vpn0" not in netlab.ip(client_ns, "addr"):
        assert time.monotonic() < end and client.poll() is None, logs()
        time.sleep(0.1)
    ping = netlab.run(client_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "2", LOCAL], check=False)
    assert ping.returncode == 0, ping.stdout + logs()
    assert (client_etc / "resolv.conf").read_text() == "nameserver 198.51.100.53\n"
    assert f"{REMOTE} dev lan0" in netlab.ip(server_ns, "neigh", "show", "proxy"), logs()
    client.terminate()  # pppd: SIGTERM -> LCP Terminate, exit 5
    assert client.wait(10) == 5, logs()
    # The server saw the peer terminate a link that was up: pppd's status is 0... or the line
    # closing right after (hang-up, 16) when the Terminate-Ack raced the close.
    assert server.wait(10) in (0, 16), logs()
    assert not (client_etc / "resolv.conf").exists()
    assert REMOTE not in netlab.ip(server_ns, "neigh", "show", "proxy")  # unpublished at the end
    text = logs()
    assert "Traceback" not in text
    assert "MPPE 128-bit stateless compression enabled" in text
    assert "peer authenticated with mschap-v2 as 'alice'" in text
