"""A pptpsetup profile, unchanged, on the user-space stack: the real ``pptpsetup`` writes it into
a private /etc/ppp, and ``pptpkit ppp call NAME`` runs it - its ``pty "pptp SERVER
--nolaunchpppd"`` starts the real pptp-linux, which carries our PPP to ``pptpkit server``.

No pppd and no /dev/ppp anywhere: this is what a user in a container gets from the guide they
followed.  Each test runs in the client namespace inside a mount namespace of its own, where a
tmpfs hides the machine's /etc/ppp (so neither its scripts nor its secrets are touched).
"""

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
from netns import NetnsLab
from serverlab import LOCAL_IP, SERVER, Server, two_namespaces

pytestmark = [pytest.mark.root, pytest.mark.interop]

USER, PASSWORD = "alice", "alice pw"


@pytest.fixture
def lab() -> Iterator[tuple[NetnsLab, str, str]]:
    require_root()
    require_binary("pptpsetup")
    require_binary("pptp")
    with NetnsLab("pkpf") as lab:
        srv, cli = two_namespaces(lab)
        yield lab, srv, cli


def profile_script(tmp: Path, *extra: str) -> str:
    """Shell run in the client namespace: a private /etc/ppp, pptpsetup, then our pppd."""
    run_dir = tmp / "run"
    run_dir.mkdir(exist_ok=True)
    opts = " ".join(extra)
    return (
        "set -e; mount -t tmpfs -o mode=0755 pptpkit-etc-ppp /etc/ppp; mkdir /etc/ppp/peers; "
        f"pptpsetup --create vpn --server {SERVER} --username {USER} --password '{PASSWORD}' --encrypt; "
        f"cp /etc/ppp/peers/vpn {tmp}/peer.txt; "
        f"PPTPKIT_PPP_RUN={run_dir} exec {sys.executable} -m pptpkit ppp call vpn {opts}"
    )


def wait_for(check: object, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def ping(lab: NetnsLab, ns: str) -> bool:
    done = lab.run(ns, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "-w", "10", LOCAL_IP], check=False)
    return done.returncode == 0


def test_pptpsetup_profile_runs_unchanged(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = Server(nl, srv, tmp_path, secrets=f'{USER} pptpd "{PASSWORD}" *\n')
    log = tmp_path / "ppp.log"
    with log.open("wb") as f:
        proc = nl.popen(cli, ["sh", "-c", profile_script(tmp_path, "nodetach", "linkname", "office")],
                        stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "remote IP address" in log.read_text(errors="replace") or proc.poll() is not None,
                 30, "the link")
        text = log.read_text(errors="replace")
        assert proc.poll() is None, text
        peer = (tmp_path / "peer.txt").read_text()
        assert 'pty "/usr/sbin/pptp 192.0.2.1 --nolaunchpppd"' in peer and "require-mppe-128" in peer
        assert "MPPE 128-bit stateless compression enabled" in text, text
        assert ping(nl, cli), text
        # pppd's pid files: the unit's and the link name's (pid, then the interface).
        pid_lines = (tmp_path / "run" / "ppp-office.pid").read_text().split()
        assert pid_lines[0] == str(proc.pid) and pid_lines[1].startswith("ppp"), pid_lines
        assert (tmp_path / "run" / f"{pid_lines[1]}.pid").exists()
        # The profile names the server "vpn" (remotename): the secrets line pptpsetup wrote for it
        # is the one used, and the server saw the user.
        server.wait_log(f"user '{USER}' authenticated")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 5, log.read_text(errors="replace")  # pppd: terminated by a signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "run" / "ppp-office.pid").exists()


def test_persist_redials_after_a_server_restart(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    secrets = f'{USER} pptpd "{PASSWORD}" *\n'
    server = Server(nl, srv, tmp_path, secrets=secrets)
    log = tmp_path / "ppp.log"
    with log.open("wb") as f:
        proc = nl.popen(cli, ["sh", "-c", profile_script(tmp_path, "nodetach", "persist", "holdoff", "1",
                                                         "lcp-echo-interval", "1", "lcp-echo-failure", "2")],
                        stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: log.read_text(errors="replace").count("remote IP address") >= 1, 30, "the link")
        server.crash()
        wait_for(lambda: "waiting 1 s before dialling again" in log.read_text(errors="replace"), 30,
                 "the redial")
        again = tmp_path / "again"
        again.mkdir()
        server = Server(nl, srv, again, secrets=secrets)
        wait_for(lambda: log.read_text(errors="replace").count("remote IP address") >= 2, 60,
                 "the second link")
        assert ping(nl, cli)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_updetach_returns_once_the_link_is_up(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    Server(nl, srv, tmp_path, secrets=f'{USER} pptpd "{PASSWORD}" *\n')
    done = nl.run(cli, ["sh", "-c", profile_script(tmp_path, "updetach", "linkname", "bg")], check=False,
                  timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "remote IP address" in done.stdout + done.stderr  # said on the terminal before detaching
    pid = int((tmp_path / "run" / "ppp-bg.pid").read_text().split()[0])
    try:
        assert ping(nl, cli)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not (tmp_path / "run" / "ppp-bg.pid").exists(), 15, "the background pppd to end")


def test_replacedefaultroute_and_its_undo(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    Server(nl, srv, tmp_path, secrets=f'{USER} pptpd "{PASSWORD}" *\n')
    nl.ip(cli, "route", "add", "default", "via", SERVER)
    log = tmp_path / "ppp.log"
    with log.open("wb") as f:
        proc = nl.popen(cli, ["sh", "-c", profile_script(tmp_path, "nodetach", "defaultroute",
                                                         "replacedefaultroute")],
                        stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "remote IP address" in log.read_text(errors="replace"), 30, "the link")
        routes = nl.ip(cli, "route", "show", "default")
        assert "dev ppp" in routes and "via" not in routes, routes
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    restored = nl.ip(cli, "route", "show", "default").strip()
    assert restored.startswith(f"default via {SERVER} dev veth-b"), log.read_text(errors="replace")


def test_connect_peer_takes_the_same_profile(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    server = Server(nl, srv, tmp_path, secrets=f'{USER} pptpd "{PASSWORD}" *\n')
    script = (
        "set -e; mount -t tmpfs -o mode=0755 pptpkit-etc-ppp /etc/ppp; mkdir /etc/ppp/peers; "
        f"pptpsetup --create vpn --server {SERVER} --username {USER} --password '{PASSWORD}' --encrypt; "
        f"exec {sys.executable} -m pptpkit connect --peer vpn --json --lcp-restart 1"
    )
    out = tmp_path / "connect.out"
    with out.open("wb") as f:
        proc = nl.popen(cli, ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=f,
                        stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: '"event": "up"' in out.read_text(errors="replace") or proc.poll() is not None, 30,
                 "the tunnel")
        text = out.read_text(errors="replace")
        assert '"mppe": "MPPE 128-bit stateless"' in text, text  # require-mppe-128 from the profile
        assert ping(nl, cli), text
        server.wait_log(f"user '{USER}' authenticated")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert "ipparam: no ip-up scripts" in out.read_text(errors="replace")


SCRIPT = """#!/bin/sh
{{ printf '%s\\n' "$@"; echo ---; env | sort; }} > {out}/$(basename "$0").txt
"""


def run_with_scripts(nl: NetnsLab, cli: str, tmp_path: Path, names: tuple[str, ...],
                     *options: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The profile run with ``names`` installed in its /etc/ppp as :data:`SCRIPT`: (the process,
    where the scripts write, its log)."""
    out = tmp_path / "hooks"
    out.mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in names:
        (scripts / name).write_text(SCRIPT.format(out=out))
        (scripts / name).chmod(0o755)
    install = "; ".join(f"cp {scripts}/{n} /etc/ppp/{n}" for n in names)
    script = profile_script(tmp_path, *options).replace("pptpsetup --create",
                                                        f"{install}; pptpsetup --create")
    log = tmp_path / "ppp.log"
    with log.open("wb") as f:
        proc = nl.popen(cli, ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=f,
                        stderr=subprocess.STDOUT)
    return proc, out, log


def test_scripts_get_pppds_arguments_and_environment(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    nl, srv, cli = lab
    Server(nl, srv, tmp_path, secrets=f'{USER} pptpd "{PASSWORD}" *\n')  # pushes DNS 203.0.113.53
    proc, out, log = run_with_scripts(nl, cli, tmp_path, ("ip-pre-up", "ip-up", "ip-down"), "nodetach",
                                      "usepeerdns")
    try:
        wait_for(lambda: (out / "ip-up.txt").exists(), 30, "ip-up")
        assert ping(nl, cli)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 5, log.read_text(errors="replace")
    args, env_text = (out / "ip-up.txt").read_text().split("---\n")
    ifname, tty, speed, local, remote, ipparam = args.split()
    assert ifname.startswith("ppp") and tty.startswith("/dev/pts/") and speed == "115200"
    assert (remote, ipparam) == (LOCAL_IP, "vpn") and local.startswith("198.51.100.")
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert env["IFNAME"] == ifname and env["IPLOCAL"] == local and env["IPREMOTE"] == remote
    assert env["DEVICE"] == tty and env["CALL_FILE"] == "vpn" and env["PPPD_PID"] == str(proc.pid)
    assert env["USEPEERDNS"] == "1" and env["DNS1"] == "203.0.113.53"
    assert "PEERNAME" not in env  # the server did not authenticate to us
    assert (out / "ip-pre-up.txt").read_text().split("---\n")[0] == args
    down_text = (out / "ip-down.txt").read_text().split("---\n")[1]
    down_env = dict(line.split("=", 1) for line in down_text.splitlines())
    assert int(down_env["BYTES_SENT"]) >= 168 and int(down_env["BYTES_RCVD"]) >= 168
    assert int(down_env["CONNECT_TIME"]) >= 0


def test_ipv6_scripts_run_with_ipv6cp(lab: tuple[NetnsLab, str, str], tmp_path: Path) -> None:
    # pppd's ipv6-up/ipv6-down: the link-local pair as arguments 4 and 5 and LLLOCAL/LLREMOTE.
    nl, srv, cli = lab
    Server(nl, srv, tmp_path, "--ipv6", secrets=f'{USER} pptpd "{PASSWORD}" *\n')
    proc, out, log = run_with_scripts(nl, cli, tmp_path, ("ip-up", "ipv6-up", "ipv6-down"), "nodetach",
                                      "+ipv6")
    try:
        wait_for(lambda: (out / "ipv6-up.txt").exists(), 30, "ipv6-up")
        args, env_text = (out / "ipv6-up.txt").read_text().split("---\n")
        ifname, tty, speed, local, remote, ipparam = args.split()
        # The addresses were on the interface before the script ran.
        shown = nl.run(cli, ["ip", "-6", "addr", "show", "dev", ifname]).stdout
        assert f"inet6 {local} peer {remote}/128" in shown, shown
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 5, log.read_text(errors="replace")
    assert local.startswith("fe80::") and remote.startswith("fe80::") and local != remote
    assert tty.startswith("/dev/pts/") and speed == "115200" and ipparam == "vpn"
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert (env["LLLOCAL"], env["LLREMOTE"], env["IFNAME"]) == (local, remote, ifname)
    assert "IPLOCAL" not in env
    assert (out / "ip-up.txt").exists()
    down_args, down_text = (out / "ipv6-down.txt").read_text().split("---\n")
    assert down_args == args
    down_env = dict(line.split("=", 1) for line in down_text.splitlines())
    assert down_env["LLLOCAL"] == local and int(down_env["CONNECT_TIME"]) >= 0
