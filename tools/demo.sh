#!/usr/bin/env bash
# The main job on embedded defaults: a pptpkit server and client in two fresh network
# namespaces (TEST-NET addresses only), a tunnel between them, figures printed, all torn down.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash tools/bootstrap.sh
exec "$here/.venv/bin/pptpkit" demo "$@"
