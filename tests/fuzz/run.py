"""Run one fuzz target under atheris (libFuzzer, coverage-guided):

    python tests/fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

``tools/fuzz.sh`` is the usual way in.  The pptpkit modules the target reaches are
instrumented, so the fuzzer steers by the coverage of the code under test.  A crash (any
exception but the ones the target allows) stops the run and leaves ``crash-<hash>`` with the
input behind; ``run.py TARGET crash-<hash>`` runs that one input again, with the traceback.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _warm_up(name: str, seeds: list[Path]) -> None:
    """Import, and so instrument, the pptpkit modules target ``name`` reaches.

    The targets import what they drive lazily, so running one on its seeds (and on nothing)
    under the import hook instruments exactly the code it exercises: a few seconds less per
    target than instrumenting all of pptpkit (the command line, the I/O adapters), which the
    short CI pass spends on fuzzing instead, and no coverage counters the target can never move.
    """
    from targets import TARGETS

    with atheris.instrument_imports(include=["pptpkit"]):
        for folder in seeds:
            for path in sorted(folder.iterdir())[:8]:
                # An input that fails is libFuzzer's to report (with its artifact), right after.
                with contextlib.suppress(Exception):
                    TARGETS[name](path.read_bytes())


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: run.py TARGET [libFuzzer options] [CORPUS_DIR or INPUT ...]")
    name = sys.argv[1]
    from targets import TARGETS

    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    folders = [Path(a) for a in sys.argv[2:] if not a.startswith("-") and Path(a).is_dir()]
    _warm_up(name, [*folders, Path(__file__).resolve().parent / "corpus" / name])
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
