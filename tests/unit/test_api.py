"""The public API: every exported name resolves, and importing pptpkit loads nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pptpkit
from pptpkit.errors import PptpkitError


def test_every_exported_name_resolves() -> None:
    for name in pptpkit.__all__:
        assert getattr(pptpkit, name) is not None, name
    assert set(pptpkit.__all__) <= set(dir(pptpkit))


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pptpkit.nope  # type: ignore[attr-defined]


def test_names_are_the_defining_modules_objects() -> None:
    from pptpkit.ppp.session import PppSession
    from pptpkit.vpn.tunnel import open_tunnel

    assert pptpkit.PppSession is PppSession and pptpkit.open_tunnel is open_tunnel
    assert pptpkit.PptpkitError is PptpkitError
    assert issubclass(pptpkit.ConfigError, pptpkit.PptpkitError)


def test_import_is_lazy() -> None:
    code = ("import sys, pptpkit; "
            "print(sorted(m for m in sys.modules if m.startswith('pptpkit.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
