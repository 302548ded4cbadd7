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
