"""Line coverage of the modules the fuzz targets reach, from a corpus:

    python tools/fuzz_coverage.py [CORPUS_ROOT]     (default: tests/fuzz/corpus)

Replays every input of every target (seeds, or what ``tools/fuzz.sh`` found, which it keeps in
``$PPTPKIT_FUZZ_DIR/corpus``) under coverage.py and prints a Markdown table: module, statements,
covered, percent.  The modules listed are the decoders and engines the targets exist for.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "control/messages.py", "control/connection.py", "gre/packet.py", "gre/call.py", "gre/demux.py",
    "ppp/hdlc.py", "ppp/frame.py", "ppp/fsm.py", "ppp/lcp.py", "ppp/ipcp.py", "ppp/ipv6cp.py",
    "ppp/ccp.py", "ppp/mppe.py", "ppp/session.py", "auth/pap.py", "auth/chap.py", "auth/mschap.py",
    "auth/eap.py", "crypto/mppe.py", "compat/callmgr/codec.py", "compat/pptpdconf.py",
    "compat/pppdopts.py", "auth/secrets.py", "wire.py",
]


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fuzz" / "corpus"
    src = ROOT / "src" / "pptpkit"
    cov = coverage.Coverage(data_file=None, source=[str(src)])
    cov.start()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "fuzz")]
    from targets import TARGETS

    inputs = 0
    for name, target in TARGETS.items():
        folder = corpus / name
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            target(path.read_bytes())
            inputs += 1
    cov.stop()
    print(f"{inputs} inputs from {corpus}\n")
    print("| module | statements | covered | % |")
    print("| --- | ---: | ---: | ---: |")
    for module in MODULES:
        _, statements, _, missing, _ = cov.analysis2(str(src / module))
        covered = len(statements) - len(missing)
        share = 100 * covered / max(1, len(statements))
        print(f"| `pptpkit/{module}` | {len(statements)} | {covered} | {share:.0f} |")


if __name__ == "__main__":
    main()
