"""``pptpkit bench datapath``: a real server and client in process, GRE in memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pptpkit.lab.bench.datapath import measure_datapath


@pytest.mark.parametrize("mppe", ["none", "stateless", "stateful"])
def test_every_packet_reaches_the_sink(mppe: str) -> None:
    result = measure_datapath(mppe=mppe, packets=300, size=200, repeat=2)
    # Two passes of 300 packets each, all delivered in order (the bench raises otherwise).
    assert result.delivered == 600
    assert len(result.ns_per_packet) == 2 and all(ns > 0 for ns in result.ns_per_packet)
    # The packets the server received are what the client's timed send produced.
    assert result.send_batch == 47 and len(result.send_ns_per_packet) == 2
    assert all(ns > 0 for ns in result.send_ns_per_packet)


@pytest.mark.parametrize("batch", [1, 7])
def test_the_send_timing_takes_batches_of_any_size(batch: int) -> None:
    result = measure_datapath(mppe="stateless", packets=100, size=200, repeat=1, send_batch=batch)
    assert result.delivered == 100 and result.send_batch == batch and result.send_median_ns > 0


def test_command_prints_json() -> None:
    out = subprocess.run([sys.executable, "-m", "pptpkit", "bench", "datapath", "--short", "--json",
                          "--packets", "200", "--mppe", "none"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(out)
    assert data["packets"] == 200 and data["mppe"] == "none" and data["median_ns"] > 0
    assert data["send_batch"] == 47 and data["send_median_ns"] > 0


def test_command_refuses_a_bad_size() -> None:
    proc = subprocess.run([sys.executable, "-m", "pptpkit", "bench", "datapath", "--size", "9000"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--size must be 28..1400" in proc.stderr
