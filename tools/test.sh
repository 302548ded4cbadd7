#!/usr/bin/env bash
# The whole test suite: lint, strict typing, unit + fuzz + namespace + real-peer interop tests.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash tools/bootstrap.sh
export PATH="$here/.venv/bin:$PATH"
# Tests whose prerequisites are missing fail instead of skipping, so CI cannot go green by
# silently running less.
export PPTPKIT_REQUIRE_ALL=${PPTPKIT_REQUIRE_ALL:-1}
ruff check src tests
mypy --strict src
pytest -q "$@"
# The per-packet tests once more on the pure-Python path (the fallback of an install without a
# compiler): the engines must behave the same without pptpkit.speedups' compiled primitives.
PPTPKIT_PURE=1 pytest -q tests/unit/crypto tests/unit/gre tests/unit/io tests/unit/ppp \
  tests/unit/test_speedups.py tests/unit/test_enginepair.py tests/unit/pptp
