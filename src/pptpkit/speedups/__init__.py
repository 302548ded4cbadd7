"""The compiled primitives of the per-packet path, or None: which one this process uses.

``pptpkit.speedups._ext`` (C, built from ``_ext.c`` by ``setup.py`` as an *optional* extension)
holds primitives only, no protocol state, in the style of a crypto/buffer helper library: RC4
with the whole-packet MPPE operations and the RFC 3079 key change (SHA-1 included), and the
Internet checksum sum.  The engines stay pure Python and call them through the modules that own
each concern (:mod:`pptpkit.crypto.rc4`, :mod:`pptpkit.io.offload`), each of which keeps a
pure-Python twin with identical results (tests/unit/test_speedups.py checks them against each
other with hypothesis).

:data:`EXT` is the extension module, or None when it is not built (an install without a C
compiler) or when ``PPTPKIT_PURE=1`` asks for the pure path (tools/test.sh runs the per-packet
tests both ways).  The choice is made once, at import.  Nothing is logged here: importing must
stay silent for every command; :func:`log_choice` reports a fallback once per process, called
when a data plane starts.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Final

__all__ = ["EXT", "PURE_ENV", "REASON", "describe", "log_choice"]

#: The environment variable that forces the pure-Python path ("1", "yes", "true").
PURE_ENV: Final = "PPTPKIT_PURE"


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(PURE_ENV, "").strip().lower() in ("1", "yes", "true", "on"):
        return None, f"{PURE_ENV} is set"
    try:
        from pptpkit.speedups import _ext
    except ImportError as exc:
        return None, f"the C extension is not built ({exc})"
    return _ext, ""


_loaded = _load()
#: ``pptpkit.speedups._ext``, or None (pure path; :data:`REASON` says why).
EXT: Final[ModuleType | None] = _loaded[0]
#: Why :data:`EXT` is None ("" when it is not).
REASON: Final[str] = _loaded[1]
_logged = False


def describe() -> str:
    """One word for tables and logs: "compiled" or "pure"."""
    return "compiled" if EXT is not None else "pure"


def log_choice(logger: logging.Logger) -> None:
    """Say once per process that the per-packet path runs pure Python, and why.

    The compiled path is the expected one and is not logged; a missing extension is a warning
    (a plain ``pip install`` without a compiler), a requested pure path is information.
    """
    global _logged
    if _logged or EXT is not None:
        return
    _logged = True
    if REASON.startswith(PURE_ENV):
        logger.info("per-packet path: pure Python (%s)", REASON)
    else:
        logger.warning("per-packet path: pure Python, slower: %s; install gcc and the Python "
                       "headers (python3-dev) and reinstall pptpkit to build it", REASON)
