"""The vector loader of tests/unit/crypto (one format for every vector file), for these tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "radius_crypto_vectors", Path(__file__).resolve().parents[1] / "crypto" / "crypto_vectors.py")
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
VectorFile = _module.VectorFile
