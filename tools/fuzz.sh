#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder and engine (atheris, libFuzzer):
#   bash tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]      (default 60 s, every target)
# Each target starts from its seed corpus in tests/fuzz/corpus/TARGET (read only); what the
# fuzzer finds new goes to $PPTPKIT_FUZZ_DIR/corpus/TARGET, crashes with their input to
# $PPTPKIT_FUZZ_DIR/crashes (default /tmp/pptpkit-fuzz), each with a .sh that reproduces it.
# $PPTPKIT_FUZZ_JOBS targets run at once (default: one per CPU).  Exits 1 when any crashed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON
export PPTPKIT_FUZZ_DIR=${PPTPKIT_FUZZ_DIR:-/tmp/pptpkit-fuzz}
out=$PPTPKIT_FUZZ_DIR
mkdir -p "$out/crashes"
if [ $# -eq 0 ]; then
  mapfile -t targets < <(cd "$here/tests/fuzz" && PYTHONPATH="$here/src" "$PYTHON" -c 'from targets import TARGETS; print("\n".join(TARGETS))')
else
  targets=("$@")
fi
export here seconds out

one() {
  local t=$1 seeds="$here/tests/fuzz/corpus/$1" log="$out/$1.log"
  mkdir -p "$out/corpus/$t"
  [ -d "$seeds" ] || seeds=""
  # -timeout: one input running 10 s is a hang, and a finding; -max_len: bigger inputs only
  # repeat what the chunked targets already see.
  if PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$here/tests/fuzz/run.py" "$t" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -artifact_prefix="$out/crashes/$t-" -print_final_stats=1 \
      "$out/corpus/$t" $seeds > "$log" 2>&1; then
    echo "fuzz: $t: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') runs, $(grep -o 'cov: [0-9]*' "$log" | tail -1))"
  else
    local found=0
    for crash in "$out/crashes/$t-"*; do
      case $crash in *.sh|'*') continue ;; esac
      [ -f "$crash" ] || continue
      found=1
      printf '#!/bin/sh\n# %s: the input that crashed; prints its traceback.\ncd %q && PYTHONPATH=%q exec %q tests/fuzz/run.py %q %q\n' \
        "$t" "$here" "$here/src" "$PYTHON" "$t" "$crash" > "$crash.sh"
      echo "fuzz: $t: CRASH, reproduce with: sh $crash.sh (log: $log)" >&2
    done
    [ $found = 1 ] || echo "fuzz: $t: FAILED without a crash input, see $log" >&2
    return 1
  fi
}
export -f one

printf '%s\n' "${targets[@]}" | xargs -P "${PPTPKIT_FUZZ_JOBS:-$(nproc)}" -I{} bash -c 'one "$@"' _ {}
status=("${PIPESTATUS[@]}")
[ "${status[1]}" = 0 ] || exit 1
