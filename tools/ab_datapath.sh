#!/bin/bash
# The server receive path per packet, two trees side by side in one run, interleaved:
#   bash tools/ab_datapath.sh BEFORE_SRC [AFTER_SRC] [ROUNDS]
# BEFORE_SRC/AFTER_SRC: the src/ directories of two checkouts (AFTER_SRC defaults to this one).
set -euo pipefail
before=${1:?usage: tools/ab_datapath.sh BEFORE_SRC [AFTER_SRC] [ROUNDS]}
after=${2:-$(cd "$(dirname "$0")/.." && pwd)/src}
rounds=${3:-4}
python=${PYTHON:-python3}
for round in $(seq "$rounds"); do
  for mppe in none stateless; do
    for side in before after; do
      if [ "$side" = before ]; then src=$before; else src=$after; fi
      out=$(PYTHONPATH=$src "$python" -m pptpkit bench datapath --json --mppe "$mppe" --packets 20000 --repeat 5)
      echo "round $round $side $mppe $(echo "$out" | "$python" -c 'import json,sys; print(round(json.load(sys.stdin)["median_ns"]))') ns/packet"
    done
  done
done
