#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder and engine (atheris, libFuzzer):
#   bash tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]      (default 60 s, every target)
# Each target starts from its seed corpus in tests/fuzz/corpus/TARGET (read only); what the
# fuzzer finds new goes to $PPTPKIT_FUZZ_DIR/corpus/TARGET, crashes with their input to
# $PPTPKIT_FUZZ_DIR/crashes (default /tmp/pptpkit-fuzz).  Exits 1 when any target crashed.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
python=${PYTHON:-$here/.venv/bin/python}
out=${PPTPKIT_FUZZ_DIR:-/tmp/pptpkit-fuzz}
mkdir -p "$out/crashes"
if [ $# -eq 0 ]; then
  mapfile -t targets < <(cd "$here/tests/fuzz" && "$python" -c 'from targets import TARGETS; print("\n".join(TARGETS))')
else
  targets=("$@")
fi
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t"
  seeds="$here/tests/fuzz/corpus/$t"
  [ -d "$seeds" ] || seeds=""
  if PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "$python" "$here/tests/fuzz/run.py" "$t" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -artifact_prefix="$out/crashes/$t-" -print_final_stats=1 \
      "$out/corpus/$t" $seeds > "$out/$t.log" 2>&1; then
    echo "fuzz: $t: ok ($(grep -o 'stat::number_of_executed_units: [0-9]*' "$out/$t.log" | grep -o '[0-9]*$') runs, $(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1))"
  else
    echo "fuzz: $t: CRASH, see $out/$t.log and $out/crashes/$t-*" >&2
    failed=1
  fi
done
exit $failed
