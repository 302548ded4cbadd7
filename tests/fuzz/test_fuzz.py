"""The fuzz targets in CI: every seed replayed, then a short coverage-guided pass of each.

``tools/fuzz.sh`` runs the targets for as long as you like; this is the few-seconds-each pass
the test command runs, so a decoder change that lets a non-pptpkit exception escape on the
seeds, or on what a minute of fuzzing finds, fails the build.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from targets import TARGETS  # noqa: E402


def _seeds() -> list[tuple[str, Path]]:
    out = []
    for name in TARGETS:
        folder = HERE / "corpus" / name
        out += [(name, path) for path in sorted(folder.iterdir())] if folder.is_dir() else []
    return out


def test_every_target_has_seeds() -> None:
    have = {name for name, _ in _seeds()}
    assert have == set(TARGETS), set(TARGETS) - have


@pytest.mark.parametrize(("name", "seed"), _seeds(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_seed_replays(name: str, seed: Path) -> None:
    data = seed.read_bytes()
    TARGETS[name](data)
    # And every prefix of it: truncation is the commonest malformation.
    for cut in range(0, len(data), max(1, len(data) // 16)):
        TARGETS[name](data[:cut])


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
def test_recorded_conversations_still_reach_the_network_phase(server: bool) -> None:
    # The PPP targets start the fuzzer from a replayed real conversation; if the sessions or
    # their test configurations change so that it no longer authenticates, the fuzzing would
    # silently stay in LCP.  Then rerun tools/fuzz_seeds.py (and look at why).
    from targets import _feed_session, ppp_conversations

    from pptpkit.ppp.session import Phase

    for case, conversation in enumerate(ppp_conversations()):
        session = _feed_session(server, bytes([case, len(conversation[0 if server else 1])]))
        assert session.phase is Phase.NETWORK, (case, session.phase)  # type: ignore[attr-defined]


def test_a_short_fuzz_pass(tmp_path: Path) -> None:
    require(importlib.util.find_spec("atheris") is not None, "needs atheris (pip install atheris)")
    seconds = os.environ.get("PPTPKIT_FUZZ_SECONDS", "3")
    proc = subprocess.run(["bash", str(ROOT / "tools" / "fuzz.sh"), seconds],
                          env={**os.environ, "PPTPKIT_FUZZ_DIR": str(tmp_path), "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok (") == len(TARGETS), proc.stdout
