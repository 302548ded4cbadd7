"""The server's listen backlog follows max_connections, capped by net.core.somaxconn."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from pptpkit.gre import GreDemux
from pptpkit.io import driver
from pptpkit.io.driver import listen_backlog
from pptpkit.pptp.server import CallHandler, PptpServer, PptpServerConfig, ServerCall


def test_backlog_capped_by_somaxconn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sysctl = tmp_path / "somaxconn"
    sysctl.write_text("300\n")
    monkeypatch.setattr(driver, "_SOMAXCONN_PATH", str(sysctl))
    assert listen_backlog(100) == 100
    assert listen_backlog(10_000) == 300
    assert listen_backlog(0) == 1


def test_backlog_unreadable_sysctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "_SOMAXCONN_PATH", str(tmp_path / "missing"))
    assert listen_backlog(5000) == 5000
    garbage = tmp_path / "garbage"
    garbage.write_text("many\n")
    monkeypatch.setattr(driver, "_SOMAXCONN_PATH", str(garbage))
    assert listen_backlog(5000) == 5000


class _NoGre(GreDemux):
    closed = False

    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        return True

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), bytes(packet))

    def close(self) -> None:
        self.closed = True


async def _refuse(call: ServerCall) -> CallHandler:
    raise AssertionError("no call expected")


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss(8) to read a listener's backlog")
def test_server_listens_with_max_connections_backlog() -> None:
    wanted = min(1500, listen_backlog(1500))

    async def main() -> str:
        server = PptpServer(PptpServerConfig(listen="127.0.0.1", port=0, max_connections=1500),
                            _refuse, gre_socket=_NoGre())  # type: ignore[arg-type]
        await server.start()
        try:
            port = server.addresses[0].rsplit(":", 1)[1]
            # For a listening socket ss reports the backlog as Send-Q.
            return subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                  text=True, check=True).stdout
        finally:
            await server.close()

    out = asyncio.run(main())
    fields = out.split()
    assert fields[0] == "LISTEN"
    assert int(fields[2]) == wanted
