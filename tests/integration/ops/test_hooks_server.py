"""Hook scripts under a real ``pptpkit server`` in a namespace: the exact arguments and
environment of ip-up and ip-down (with the traffic counted), a hanging ip-up killed after
``--hook-timeout`` while another session comes up, and ip-down run by a shutdown."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_root
from netns import NetnsLab
from serverlab import CLIENT, LOCAL_IP, Server, connect, ping, run_in, two_namespaces

pytestmark = [pytest.mark.root]

DUMP = """#!/bin/sh
# Arguments one per line, then the environment.
out={out}/$(basename "$0").$PEERNAME
printf '%s\\n' "$@" > "$out.args.tmp"
env | sort > "$out.env.tmp"
mv "$out.env.tmp" "$out.env"; mv "$out.args.tmp" "$out.args"
"""


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    with NetnsLab("pkhook") as lab:
        yield lab


def dump_scripts(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    out.mkdir()
    flags = []
    for kind in ("ip-up", "ip-down"):
        path = tmp_path / kind
        path.write_text(DUMP.format(out=out))
        path.chmod(0o755)
        flags += [f"--{kind}", str(path)]
    return flags


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


async def wait_file(path: Path, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        await asyncio.sleep(0.05)


def test_ip_up_and_down_get_pppds_arguments_and_environment(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    server = Server(lab, srv, tmp_path, *dump_scripts(tmp_path), "--speed", "57600")
    out = tmp_path / "out"

    async def main() -> None:
        alice = await connect("alice", "alice pw")
        await wait_file(out / "ip-up.alice.args")
        found = re.search(r"\[([0-9A-F]{16})\] session up: user 'alice'", server.log())
        assert found is not None, server.log()
        sid = found.group(1)
        args = (out / "ip-up.alice.args").read_text().splitlines()
        assert args == ["pptpkit0", "", "57600", LOCAL_IP, "198.51.100.10", CLIENT]
        env = read_env(out / "ip-up.alice.env")
        env.pop("PWD", None)
        env.pop("SHLVL", None)
        env.pop("_", None)
        assert env == {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IFNAME": "pptpkit0",
            "DEVICE": "", "SPEED": "57600", "IPLOCAL": LOCAL_IP, "IPREMOTE": "198.51.100.10",
            "PEERNAME": "alice", "LINKNAME": sid, "ORIG_UID": "0", "PPPLOGNAME": "root",
            # The process that holds the session: the server, or with workers (by default one
            # per CPU) the worker whose session it is.
            "PPPD_PID": str(server.pid_of("session up: user 'alice'"))}
        if server.workers > 1:
            status = Path(f"/proc/{env['PPPD_PID']}/status").read_text()
            assert f"\nPPid:\t{server.proc.pid}\n" in status, status
        for _ in range(3):
            rc, text = await ping(cli, LOCAL_IP)
            assert rc == 0, text
        await asyncio.sleep(1.1)
        await alice.close()
        await wait_file(out / "ip-down.alice.args")
        assert (out / "ip-down.alice.args").read_text().splitlines() == args
        down = read_env(out / "ip-down.alice.env")
        # Six echo requests of 84 octets in, their replies out (at least).
        assert int(down["BYTES_RCVD"]) >= 6 * 84 and int(down["BYTES_SENT"]) >= 6 * 84
        assert 1 <= int(down["CONNECT_TIME"]) < 30
        assert {k: down[k] for k in ("IFNAME", "IPREMOTE", "PEERNAME", "LINKNAME")} == {
            "IFNAME": "pptpkit0", "IPREMOTE": "198.51.100.10", "PEERNAME": "alice", "LINKNAME": sid}

    run_in(cli, main)
    assert server.proc.poll() is None
    server.proc.terminate()
    server.proc.wait(15)


def test_hanging_ip_up_is_killed_and_others_come_up(lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = two_namespaces(lab)
    flags = dump_scripts(tmp_path)
    hang = tmp_path / "hang-up"
    # alice's ip-up hangs (with a child, which must die too); everyone else's is the dump.
    hang.write_text(f'#!/bin/sh\n[ "$PEERNAME" = alice ] || exec {tmp_path}/ip-up "$@"\n'
                    f"sleep 300 & echo $! > {tmp_path}/child; sleep 300\n")
    hang.chmod(0o755)
    flags[1] = str(hang)
    server = Server(lab, srv, tmp_path, *flags, "--hook-timeout", "2")
    out = tmp_path / "out"

    async def main() -> None:
        alice = await connect("alice", "alice pw")
        await wait_file(tmp_path / "child")
        child = int((tmp_path / "child").read_text())
        bob = await connect("bob", "bobpw", tun="pkb%d")
        await wait_file(out / "ip-up.bob.args", 5)
        assert bob.link.interface is not None
        rc, text = await ping(cli, LOCAL_IP, "-I", bob.link.interface)
        assert rc == 0, text
        await server.await_log(f"ip-up {hang}: still running after 2 s: killed", 10)
        # The whole group: the script's background child too.
        end = time.monotonic() + 5
        while alive(child):
            assert time.monotonic() < end, "the hanging script's child survived"
            await asyncio.sleep(0.05)
        await alice.close()
        await wait_file(out / "ip-down.alice.args")
        # A shutdown with bob still up: his ip-down runs before the server exits.
        server.proc.terminate()
        await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 15)
        assert server.proc.returncode == 0, server.log()
        assert (out / "ip-down.bob.args").exists(), server.log()
        await bob.close()

    run_in(cli, main)
