"""Benchmark reports as a text table or JSON, with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from pptpkit.crypto.rc4 import RC4_BACKEND
from pptpkit.errors import ConfigError
from pptpkit.io.loop import loop_kind
from pptpkit.lab.bench.runner import Report
from pptpkit.speedups import describe

__all__ = ["machine", "to_json", "to_table"]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": sys.version.split()[0], "rc4": RC4_BACKEND, "loop": _loop_kind(),
            "path": describe()}


def _loop_kind() -> str:
    # The agents pick their loop the same way (PPTPKIT_LOOP, else uvloop when installed).
    try:
        return loop_kind()
    except ConfigError as exc:
        return f"invalid ({exc})"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def to_table(report: Report) -> str:
    lines = [f"pptpkit bench {report.benchmark}" + (f"   ({report.command})" if report.command else "")]
    m = machine()
    lines.append(f"machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
                 f"RC4 via {m['rc4']}, event loop {m['loop']}, per-packet path {m['path']}")
    width = max([len(f.label) for f in report.figures] + [20])
    section = None
    for fig in report.figures:
        if fig.section != section:
            section = fig.section
            lines.append("")
            lines.append(f"[{section}]")
        lo, hi = fig.spread
        spread = f"  (min {_fmt(lo)}, max {_fmt(hi)}, n={len(fig.samples)})" if len(fig.samples) > 1 else ""
        lines.append(f"  {fig.label.strip():<{width}}  {_fmt(fig.value):>10} {fig.unit}{spread}")
    if report.goals:
        lines.append("")
        lines.append("[goals]")
        for goal in report.goals:
            mark = "met" if goal.met else "NOT MET"
            lines.append(f"  {goal.name:<{width}}  target {goal.target:<12} "
                         f"measured {goal.measured:<16} {mark}")
    if report.checks:
        bad = [k for k, ok in report.checks.items() if not ok]
        lines.append("")
        lines.append(f"[checks] {len(report.checks) - len(bad)}/{len(report.checks)} passed"
                     + ("" if not bad else ": FAILED " + "; ".join(bad)))
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps({
        "benchmark": report.benchmark,
        "command": report.command,
        "machine": machine(),
        "figures": [f.as_dict() for f in report.figures],
        "goals": [{"name": g.name, "target": g.target, "measured": g.measured, "met": g.met}
                  for g in report.goals],
        "checks": report.checks,
        "notes": report.notes,
    }, indent=2)
