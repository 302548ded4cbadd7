"""``pptpkit demo`` (what tools/demo.sh runs): the whole VPN in two namespaces, its report, and
nothing left behind afterwards - also when it is interrupted half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from netns import pids_in
from pptpkit.lab.demo import parse_ping

pytestmark = [pytest.mark.root]


def _demo_namespaces() -> list[str]:
    netns = Path("/run/netns")
    return sorted(n for n in os.listdir(netns) if n.startswith("pkdemo")) if netns.exists() else []


def _connect_running(ns: str) -> bool:
    for pid in pids_in(ns):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"connect" in cmdline:
            return True
    return False


def test_demo_runs_and_cleans_up() -> None:
    require_root()
    require_binary("ping")
    before = _demo_namespaces()
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pptpkit", "demo", "--seconds", "1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - started < 30
    text = out.stdout
    assert "authentication   mschap-v2 as 'demo'" in text
    assert "encryption       MPPE 128-bit stateless" in text
    assert "interfaces       client pptp" in text and "server pptpkit" in text
    assert " 0% loss" in text and "Mbit/s" in text
    assert "client stopped with SIGTERM: exit 0" in text
    assert "cleanup: namespaces, interfaces, processes and temporary files removed" in text
    assert _demo_namespaces() == before


def test_demo_interrupted_leaves_nothing() -> None:
    require_root()
    before = _demo_namespaces()
    proc = subprocess.Popen([sys.executable, "-m", "pptpkit", "demo", "--seconds", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until this demo's client runs in its namespace, give it a moment, then Ctrl-C.
    end = time.monotonic() + 30
    while time.monotonic() < end and not _connect_running(f"pkdemo{proc.pid}-c"):
        time.sleep(0.1)
    assert _connect_running(f"pkdemo{proc.pid}-c"), "the demo never started its client"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "removed" in err
    assert _demo_namespaces() == before


def test_parse_ping() -> None:
    text = ("5 packets transmitted, 4 received, 20% packet loss, time 804ms\n"
            "rtt min/avg/max/mdev = 0.512/0.771/1.020/0.190 ms\n")
    result = parse_ping(text)
    assert (result.transmitted, result.received, result.loss_percent) == (5, 4, 20.0)
    assert (result.rtt_min, result.rtt_avg, result.rtt_max) == (0.512, 0.771, 1.020)
    nothing = parse_ping("3 packets transmitted, 0 received, 100% packet loss, time 2ms\n")
    assert nothing.received == 0 and nothing.rtt_avg is None
