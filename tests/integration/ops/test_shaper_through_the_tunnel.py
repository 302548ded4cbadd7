"""The shaper against a real ``pptpkit server`` in a namespace: iperf3 through the tunnel each
way, the measured rate within 15 % of the limit, in both TUN modes.  The user's ``rate=`` word
in the secrets file must win over ``--shaper``; in per-session mode the upload's IFB exists
while the session does and is gone after it, and an IFB a dead server left is deleted at
start."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root
from netns import NetnsLab
from serverlab import LOCAL_IP, Server, connect, in_ns, run_in, two_namespaces

pytestmark = [pytest.mark.root]

DOWN_KBIT, UP_KBIT = 4000, 2000
#: The secrets entry's rate wins over --shaper (which would give 1 Mbit/s).
SECRETS = f'alice pptpd "alice pw" * rate={DOWN_KBIT // 1000}M/{UP_KBIT}k\n'
TOLERANCE = 0.15


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    with NetnsLab("pkshp") as lab:
        yield lab


async def iperf(server_ns: str, client_ns: str, port: int, *, reverse: bool) -> float:
    """bit/s the receiver measured over 3 s of TCP (the first second, the bucket's burst and
    TCP's start, left out); ``reverse``: the server sends (the download)."""
    listener = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", LOCAL_IP, "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(50):
            rc, _out = await in_ns(server_ns, "ss", "-ltn", f"sport = :{port}")
            if f":{port}" in _out:
                break
            await asyncio.sleep(0.1)
        rc, out = await in_ns(client_ns, "iperf3", "-c", LOCAL_IP, "-p", str(port), "-t", "4", "-O", "1",
                              "-J", *(["-R"] if reverse else []), timeout=60)
        assert rc == 0, out
    finally:
        if listener.returncode is None:
            listener.kill()
        await listener.wait()
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def ifbs(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "-o", "-d", "link", "show", "type", "ifb"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("mode", ["per-session", "shared"])
def test_rates_through_the_tunnel(lab: NetnsLab, tmp_path: Path, mode: str) -> None:
    srv, cli = two_namespaces(lab)
    if mode == "per-session":
        # What a crashed server leaves: an IFB of ours whose process is gone.
        dead = subprocess.Popen(["true"])
        dead.wait()
        subprocess.run(["ip", "netns", "exec", srv, "ip", "link", "add", "name", "pkifb999", "type", "ifb"],
                       check=True)
        subprocess.run(["ip", "netns", "exec", srv, "ip", "link", "set", "dev", "pkifb999", "alias",
                        f"pptpkit-shaper:{dead.pid}"], check=True)
    server = Server(lab, srv, tmp_path, "--shaper", "1M", "--tun-mode", mode, secrets=SECRETS)
    measured: dict[str, float] = {}

    async def main() -> None:
        session = await connect("alice", "alice pw")
        await server.await_log("shaper: 4000/2000 kbit/s")
        if mode == "per-session":
            assert "pkifb999" not in ifbs(srv)
            assert "pptpkit-shaper:" in ifbs(srv)
        measured["down"] = await iperf(srv, cli, 5201, reverse=True)
        measured["up"] = await iperf(srv, cli, 5202, reverse=False)
        await session.close()
        await server.await_log("session down")

    run_in(cli, main)
    if mode == "per-session":
        # The session's IFB went with it (the TUN and its qdiscs went with the kernel).
        for _ in range(50):
            if "pkifb" not in ifbs(srv):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert "pkifb" not in ifbs(srv), ifbs(srv)
    else:
        assert "shaper dropped" in server.log(), server.log()
    print(f"{mode}: down {measured['down'] / 1e6:.2f} Mbit/s, up {measured['up'] / 1e6:.2f} Mbit/s")
    for direction, kbit in (("down", DOWN_KBIT), ("up", UP_KBIT)):
        rate = measured[direction] / 1000
        assert abs(rate - kbit) <= TOLERANCE * kbit, (direction, rate, kbit, server.log())
