"""``pptpkit bench`` end to end in its short (CI) mode: complete, sane output, no timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from conftest import require_binary, require_root

pytestmark = [pytest.mark.root]


def bench(*args: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "pptpkit", "bench", *args, "--short", "--json"],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def figures(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["label"].strip() + " [" + f["unit"] + "]": f for f in data["figures"]}


def assert_sane(data: dict[str, Any]) -> None:
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    assert data["figures"], data
    for fig in data["figures"]:
        assert fig["samples"], fig
        assert all(v > 0 for v in fig["samples"]), fig
    assert data["checks"] and all(data["checks"].values()), data["checks"]


def test_bench_throughput_short() -> None:
    require_root()
    require_binary("pptp")
    require_binary("pptpd")
    code, data = bench("throughput", "--seconds", "1")
    figs = figures(data)
    for mode in ("stateless", "stateful", "none"):
        for way in ("client->server", "server->client"):
            assert f"MPPE {mode} {way} [Mbit/s]" in figs
    assert "veth client->server [Mbit/s]" in figs and "veth server->client [Mbit/s]" in figs
    anchors = [k for k in figs if k.startswith("pptp-linux+pptpd") and k.endswith("[frames/s]")]
    assert len(anchors) == 2, (figs, data["notes"])
    assert_sane(data)
    # Every transfer's checksum was compared, both directions, veth and every mode.
    assert sum(1 for k in data["checks"] if "checksum" in k) == 8
    assert {g["name"] for g in data["goals"]} >= {"single-session TCP, MPPE-128 stateless"}
    assert code == 0


def test_bench_setup_short() -> None:
    require_root()
    code, data = bench("setup")
    figs = figures(data)
    median = figs["setup time median (TCP connect -> IPCP up) [ms]"]["value"]
    assert median > 0
    assert figs["setup time p99 [ms]"]["value"] >= median
    assert any(k.startswith("setups per second") for k in figs)
    assert_sane(data)
    # The command section: the real `pptpkit connect` against `pptpkit server`, 3 runs in
    # --short, each up and stopped cleanly; the protocol part is inside the wall time.
    command = {f["label"]: f for f in data["figures"]
               if f["section"] == "command: pptpkit connect -> pptpkit server"}
    wall = command["process start -> up (wall)"]
    setup = command["TCP connect -> IPCP up (setup_ms)"]
    assert len(wall["samples"]) == len(setup["samples"]) == 3
    assert all(s < w for s, w in zip(setup["samples"], wall["samples"], strict=True))
    assert sum(1 for k in data["checks"] if k.startswith("command vs pptpkit server run")) == 3
    goals = {g["name"] for g in data["goals"]}
    assert {"connect command: start -> up, median", "connect command: TCP connect -> IPCP up"} <= goals
    assert code == 0


def test_bench_scale_short() -> None:
    require_root()
    code, data = bench("scale", "--sessions", "200")
    figs = figures(data)
    assert figs["sessions established [sessions]"]["value"] == 200
    assert figs["sessions alive at the end [sessions]"]["value"] == 200
    assert figs["sessions passing a packet at the end [sessions]"]["value"] == 200
    assert figs["RSS per session [KiB]"]["value"] > 0
    assert_sane(data)
    assert code == 0


def test_bench_throughput_offload_side_by_side() -> None:
    require_root()
    code, data = bench("throughput", "--seconds", "1", "--modes", "stateless", "--no-relay",
                       "--offload", "on,off")
    figs = figures(data)
    for way in ("client->server", "server->client"):
        assert f"MPPE stateless {way} [Mbit/s]" in figs
        assert f"MPPE stateless {way}, no offload [Mbit/s]" in figs
        ratio = figs[f"MPPE stateless {way} on/off [x]"]
        on, off = figs[f"MPPE stateless {way} [Mbit/s]"], figs[f"MPPE stateless {way}, no offload [Mbit/s]"]
        assert ratio["value"] == pytest.approx(on["value"] / off["value"])
    assert figs["MPPE stateless client->server [Mbit/s]"]["offload"] is True
    assert figs["MPPE stateless client->server, no offload [Mbit/s]"]["offload"] is False
    assert_sane(data)
    assert sum(1 for k in data["checks"] if "checksum" in k) == 6
    assert code == 0


def test_bench_throughput_pure_side_by_side() -> None:
    """``--pure``: every tunnel row again on the pure-Python path, alternating, with the ratio;
    the agents report which path they ran, and the compiled rows must not be the pure one."""
    require_root()
    code, data = bench("throughput", "--seconds", "1", "--modes", "stateless", "--no-relay", "--pure")
    figs = figures(data)
    for way in ("client->server", "server->client"):
        fast, slow = figs[f"MPPE stateless {way} [Mbit/s]"], figs[f"MPPE stateless {way}, pure [Mbit/s]"]
        assert fast["pure"] is False and slow["pure"] is True
        ratio = figs[f"MPPE stateless {way} compiled/pure [x]"]
        assert ratio["value"] == pytest.approx(fast["value"] / slow["value"])
    assert "MPPE stateless CPU (TCP sender + receiver) [cores]" in figs
    assert data["checks"]["tunnel stateless pure per-packet path"]
    assert data["checks"]["tunnel stateless per-packet path"]
    assert data["machine"]["path"] == "compiled"  # tools/bootstrap.sh builds the extension
    assert_sane(data)
    assert code == 0


def test_bench_workers_short() -> None:
    """Every part of ``bench workers`` once, small: 1 and 2 workers side by side, 100 sessions
    over 2 workers, the ledger and the per-socket cost are all reported."""
    require_root()
    code, data = bench("workers", "--scale-sessions", "100", "--clients", "20")
    figs = figures(data)
    for n in ("1 worker(s)", "2 worker(s)"):
        assert figs[f"8 sessions, {n}, client->server (echoed back) [Mbit/s]"]["value"] > 0
        assert figs[f"{n}: server CPU per GB client->server [CPU s/GB]"]["value"] > 0
        assert figs[f"{n}: client CPU per GB client->server (kernel work included) [CPU s/GB]"]["value"] > 0
        assert figs[f"{n}: machine cores busy (every process) [cores]"]["value"] > 0
        assert figs[f"setups/s, 20 clients at once, {n} [setups/s]"]["value"] > 0
    assert figs["2 workers / 1 worker (side by side, per run) [x]"]["value"] > 0
    assert figs["sessions passing a packet at the end [sessions]"]["value"] == 100
    assert figs["RSS per session (both workers) [KiB]"]["value"] > 0
    assert figs["admit + authenticated + release, both ends in one process [us/session]"]["value"] > 0
    assert figs["GRE packet over loopback, sender's time, no extra socket [ns/packet]"]["value"] > 0
    assert "each extra filtered raw GRE socket [ns/packet]" in figs
    # Among them: no echo lost, and the sampled echoes decrypt to the packets sent.
    assert any("sampled echoes decrypt" in k for k in data["checks"]), data["checks"]
    assert data["checks"] and all(data["checks"].values()), data["checks"]
    # Exit 1 only when a check failed: the goals (2 cores shared with the load) decide nothing.
    assert code == 0
