#!/usr/bin/env bash
# Installs everything pptpkit's demo and tests need on a Debian 12 machine (run as root):
# Debian packages for the real peers and packet checks, and a virtualenv with pptpkit in it.
# Idempotent and quick when everything is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# gcc and python3-dev build pptpkit's C extension (pptpkit.speedups, the per-packet path); a
# pyenv or other non-Debian interpreter brings its own headers, python3-dev is harmless then.
apt_pkgs=(pptp-linux pptpd busybox tshark freeradius freeradius-utils iproute2 nftables iperf3 procps psmisc python3-venv qemu-system-x86 debootstrap cpio kmod iputils-ping gcc python3-dev)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the answer does not matter to us.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.pptpkit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ src/pptpkit/speedups/_ext.c -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[test,fast,fuzz]"
  touch "$stamp"
fi
# The extension is optional for a plain `pip install` (pure-Python fallback), but not here: the
# compiler is installed above, so a failed build is a bug the test command must not hide.
if ! PPTPKIT_PURE= .venv/bin/python -c "import pptpkit.speedups._ext" 2>/dev/null; then
  echo "bootstrap: the C extension pptpkit.speedups._ext did not build; rebuilding verbosely" >&2
  .venv/bin/pip install -e ".[test,fast,fuzz]" 2>&1 | grep -iE "error|warning|_ext" >&2 || true
  rm -f "$stamp"
  PPTPKIT_PURE= .venv/bin/python -c "import pptpkit.speedups._ext"
  touch "$stamp"
fi
