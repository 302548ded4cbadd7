"""``pptpkit bench soak --short --json``: the soak's report is complete and its leaks are measured.

What this asserts, and what it leaves to the report: the structure (every section, the restart,
reconnect and probe figures, the attack counters, the server's descriptors, interfaces and routes
before and after) and the leak figures (present, numbers).  It does not assert the goals (every
session survives, 100 % back within 30 s, 0 leaks): the server does not meet all of them yet
(issue 14), and other work fixes the server, not this test.  The command's exit status follows
the report's checks (everything ran and was measured), so it is asserted too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from conftest import require_binary, require_root

pytestmark = [pytest.mark.root]


def _figures(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["label"]: f for f in data["figures"]}


def test_bench_soak_short() -> None:
    require_root()
    require_binary("nft")
    proc = subprocess.run([sys.executable, "-m", "pptpkit", "bench", "soak", "--short", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.stdout, proc.stderr
    data = json.loads(proc.stdout)
    assert data["benchmark"] == "soak" and data["machine"]["python"]
    figs = _figures(data)
    sections = {f["section"] for f in data["figures"]}
    assert {"sessions", "restart", "probes", "attack", "server", "leaks", "path"} <= sections
    for label in ("library sessions established", "of those, survived until the restart",
                  "server down (SIGTERM -> listening again)", "sessions reconnected",
                  "reconnected within 30 s", "probe loss under attack (before the restart)",
                  "control messages sent (Echo-Request + unknown types)",
                  "forged GRE packets (random call ID, seq far ahead)", "unauthenticated calls answered",
                  "open descriptors before (idle, first server)",
                  "open descriptors after (all closed, second server)",
                  "GRE dropped by the lossy path"):
        assert label in figs, (label, sorted(figs))
    assert figs["library sessions established"]["value"] == 20
    # The leaks: present, and numbers (their goal is reported, not asserted here).
    for label in ("descriptors leaked (after - before)", "interfaces leaked (after - before)",
                  "routes leaked (after - before)", "RSS growth (after - before)",
                  "interfaces + routes left by the SIGTERMed server",
                  "interfaces + routes left after the final exit"):
        assert isinstance(figs[label]["value"], (int, float)), label
    assert figs["open descriptors before (idle, first server)"]["value"] > 0
    goals = {g["name"] for g in data["goals"]}
    assert "leaks (descriptors, interfaces, routes)" in goals
    assert "reconnected within 30 s of the restart" in goals
    # The floods ran and the path dropped GRE; the checks decide the exit status.
    assert figs["control messages sent (Echo-Request + unknown types)"]["total"] > 0
    assert 0 < figs["GRE dropped by the lossy path"]["value"] < 20
    assert data["checks"] and all(data["checks"].values()), data["checks"]
    assert proc.returncode == 0
