"""docs/api.md's example, run as written, in a private network namespace (loopback only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (TUN, raw GRE, a network namespace)")


def _blocks(lang: str) -> list[str]:
    """The fenced blocks whose info string is ``lang`` ("" for a bare fence), in order."""
    blocks: list[str] = []
    current: list[str] | None = None
    current_lang = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, current_lang = [], line[3:].strip()
            else:
                if current_lang == lang:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_example_runs_and_prints_what_the_doc_says(tmp_path: Path) -> None:
    code = _blocks("python")[0]
    promised = _blocks("")[0].strip().splitlines()
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}"'],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == promised
