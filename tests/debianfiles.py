"""The configuration files Debian's packages ship, taken from the installed system (a helper
module for tests, not a test file).

The tests need pptpd's /etc/pptpd.conf and /etc/ppp/pptpd-options and ppp's /etc/ppp/options
exactly as the packages ship them.  Rather than carry copies of another project's files, the
tests read the installed ones, and check each against the checksum dpkg recorded for it as a
conffile: a file edited on this machine fails the check instead of passing for the stock one.
(tools/bootstrap.sh installs the packages, so a fresh machine has them as shipped.)
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Package -> its conffiles the tests use.
FILES = {"pptpd": ("/etc/pptpd.conf", "/etc/ppp/pptpd-options"), "ppp": ("/etc/ppp/options",)}


def _conffiles(package: str) -> dict[str, str]:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", package], capture_output=True, text=True,
                          check=False)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) >= 2:
            found[words[0]] = words[1]
    return found


@functools.cache
def stock_dir() -> Path:
    """A directory (made once per test run) with copies of the stock files, named by their base
    names.  Tests parametrize over their lines at collection, so a missing package is an error
    there, not a skip: these files are part of what the suite must check."""
    assert shutil.which("dpkg-query") is not None, "needs dpkg-query (Debian)"
    dest = Path(tempfile.mkdtemp(prefix="pptpkit-debian-"))
    for package, paths in FILES.items():
        sums = _conffiles(package)
        for path in paths:
            assert path in sums and Path(path).exists(), \
                f"needs {path} from the {package} package (bash tools/bootstrap.sh installs it)"
            data = Path(path).read_bytes()
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            assert digest == sums[path], f"{path} was edited on this machine: not the file {package} ships"
            (dest / Path(path).name).write_bytes(data)
    return dest
