"""Run one fuzz target under atheris (libFuzzer, coverage-guided):

    python tests/fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

``tools/fuzz.sh`` is the usual way in.  Every pptpkit module is instrumented, so the fuzzer
steers by the coverage of the code under test.  A crash (any exception but the ones the
target allows) stops the run and leaves ``crash-<hash>`` with the input behind.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _instrument_pptpkit() -> None:
    # Every module is imported (and so instrumented) here, before the targets import them.
    with atheris.instrument_imports(include=["pptpkit"]):
        import pptpkit

        for info in pkgutil.walk_packages(pptpkit.__path__, "pptpkit."):
            if info.name.startswith(("pptpkit.cli", "pptpkit.lab")) or info.name.endswith("__main__"):
                continue
            importlib.import_module(info.name)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: run.py TARGET [libFuzzer options] [CORPUS_DIR ...]")
    _instrument_pptpkit()
    from targets import TARGETS

    name = sys.argv[1]
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
