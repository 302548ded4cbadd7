#!/usr/bin/env bash
# Builds pptpkit's C extension (pptpkit.speedups._ext) in place, next to its source, for a
# checkout run through PYTHONPATH=src without installing. tools/bootstrap.sh builds it as part of
# the install instead. Usage: tools/build_ext.sh [PYTHON] (default: python3 on PATH).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-python3}
include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
out="$here/src/pptpkit/speedups/_ext$suffix"
# Built beside and renamed into place: a running process keeps the file it mapped.
gcc -O3 -Wall -Wextra -fPIC -shared -I"$include" "$here/src/pptpkit/speedups/_ext.c" -o "$out.tmp"
mv "$out.tmp" "$out"
echo "built $out"
