"""Line coverage of the modules the fuzz targets exist for, from a corpus:

    python tools/fuzz_coverage.py [--missing] [CORPUS_ROOT ...]    (default: tests/fuzz/corpus)

Replays every input of every target under coverage.py and prints two Markdown tables: per
target, the modules it is there to exercise; per module, all targets together.  Give the seeds
and what ``tools/fuzz.sh`` found (it keeps that in ``$PPTPKIT_FUZZ_DIR/corpus``) to see what a
fuzz run reached.  ``--missing`` adds the lines no input reached, per module.

Each target is measured in a fresh interpreter, so a module's top-level lines (imports,
``def``s) count for every target that loads it, not only the first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "pptpkit"

_CONTROL = ["control/connection.py", "control/messages.py", "control/callids.py"]
_PPP = ["ppp/session.py", "ppp/fsm.py", "ppp/lcp.py", "ppp/ipcp.py", "ppp/ipv6cp.py", "ppp/ccp.py",
        "ppp/mppe.py", "ppp/frame.py", "ppp/packet.py"]
_AUTH = ["auth/pap.py", "auth/chap.py", "auth/mschap.py", "auth/eap.py", "auth/base.py"]
#: What each target is there to exercise (the rows of the per-target table).
TARGET_MODULES: dict[str, list[str]] = {
    "control_messages": ["control/messages.py"],
    "control_fresh_server": _CONTROL,
    "control_fresh_client": _CONTROL,
    "control_established_server": _CONTROL,
    "control_established_client": _CONTROL,
    "gre_packet": ["gre/packet.py"],
    "gre_call": ["gre/call.py", "gre/packet.py"],
    "gre_demux": ["gre/demux.py", "gre/call.py"],
    "hdlc_stream": ["ppp/hdlc.py", "io/hdlcstream.py"],
    "ppp_session_server": _PPP,
    "ppp_session_client": _PPP,
    "auth_authenticator": _AUTH,
    "auth_peer": _AUTH,
    "mppe_decrypt": ["crypto/mppe.py"],
    "mppe_link": ["crypto/mppe.py"],
    "callmgr_codec": ["compat/callmgr/codec.py"],
    "pptpd_conf": ["compat/pptpdconf.py", "vpn/pool.py"],
    "pppd_options": ["compat/pppdopts.py"],
    "chap_secrets": ["auth/secrets.py"],
}

_CHILD = r"""
import json, sys
from pathlib import Path
import coverage
root, name, folders = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
cov = coverage.Coverage(data_file=None, source=[str(root / "src" / "pptpkit")])
cov.start()
sys.path[:0] = [str(root / "src"), str(root / "tests" / "fuzz")]
from targets import TARGETS
n = 0
for folder in map(Path, folders):
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        TARGETS[name](path.read_bytes())
        n += 1
cov.stop()
out = {"inputs": n, "modules": {}}
for path in (root / "src" / "pptpkit").rglob("*.py"):
    _, statements, _, missing, _ = cov.analysis2(str(path))
    if len(missing) < len(statements):
        out["modules"][str(path.relative_to(root / "src" / "pptpkit"))] = [statements, missing]
print(json.dumps(out))
"""


def measure(name: str, corpora: list[Path]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), name,
                           *[str(c / name) for c in corpora]],
                          capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def ranges(lines: list[int]) -> str:
    out: list[str] = []
    for line in sorted(lines):
        if out and out[-1].split("-")[-1] == str(line - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{line}"
        else:
            out.append(str(line))
    return ", ".join(out)


def main() -> None:
    args = sys.argv[1:]
    show_missing = "--missing" in args
    corpora = [Path(a) for a in args if a != "--missing"] or [ROOT / "tests" / "fuzz" / "corpus"]
    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
    from targets import TARGETS

    union: dict[str, tuple[set[int], set[int]]] = {}
    print(f"Corpus: {', '.join(str(c) for c in corpora)}\n")
    print("| target | inputs | module | statements | covered | % |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name in TARGETS:
        result = measure(name, corpora)
        modules = result["modules"]
        assert isinstance(modules, dict)
        for module, (statements, missing) in modules.items():
            stmts, hit = union.setdefault(module, (set(statements), set()))
            hit |= set(statements) - set(missing)
        for module in TARGET_MODULES.get(name, []):
            statements, missing = modules.get(module, [[], []])
            if not statements:  # never imported: count every statement as missed
                _, statements, _, missing, _ = _static(module)
            covered = len(statements) - len(missing)
            print(f"| {name} | {result['inputs']} | `{module}` | {len(statements)} | {covered} | "
                  f"{100 * covered / max(1, len(statements)):.0f} |")
    print("\n| module (all targets) | statements | covered | % |")
    print("| --- | ---: | ---: | ---: |")
    wanted = sorted({m for ms in TARGET_MODULES.values() for m in ms})
    for module in wanted:
        stmts, hit = union.get(module, (set(), set()))
        share = 100 * len(hit) / max(1, len(stmts))
        print(f"| `pptpkit/{module}` | {len(stmts)} | {len(hit)} | {share:.0f} |")
    if show_missing:
        print("\nLines no input reached:\n")
        for module in wanted:
            stmts, hit = union.get(module, (set(), set()))
            print(f"- `pptpkit/{module}`: {ranges(sorted(stmts - hit)) or 'none'}")


def _static(module: str) -> tuple[object, list[int], object, list[int], object]:
    import coverage

    cov = coverage.Coverage(data_file=None)
    _, statements, excluded, missing, text = cov.analysis2(str(SRC / module))
    return _, statements, excluded, missing, text


if __name__ == "__main__":
    main()
