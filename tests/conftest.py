"""Shared fixtures and the prerequisite policy.

Tests that need root, namespaces or real peer binaries call :func:`require`; locally a missing
prerequisite skips the test, under ``PPTPKIT_REQUIRE_ALL=1`` (the test command, CI) it fails,
so a green run always means the whole suite ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Fixtures shared by the tests of one area, defined beside that area's helpers.
pytest_plugins = ("radiuslab",)


def require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("PPTPKIT_REQUIRE_ALL") == "1":
        pytest.fail(f"prerequisite missing: {why}")
    pytest.skip(why)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces)")


def require_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    require(path is not None, f"needs the {name} binary")
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def _private_control_socket(tmp_path_factory: pytest.TempPathFactory,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``pptpkit server`` a test starts gets a control socket of its own (through
    ``$PPTPKIT_CTL_SOCKET``), so no test meets another's server, or the machine's."""
    monkeypatch.setenv("PPTPKIT_CTL_SOCKET", str(tmp_path_factory.mktemp("ctl") / "ctl.sock"))
