"""pptpkit.io.loop: uvloop when installed, PPTPKIT_LOOP to choose."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from pptpkit.errors import ConfigError
from pptpkit.io import loop as loopmod
from pptpkit.io.loop import ENV_VAR, loop_kind, run

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_choice_runs_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "asyncio")
    assert loop_kind() == "asyncio"
    assert run(_loop_module()).startswith("asyncio")


@pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop not installed")
def test_auto_prefers_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert loop_kind() == "uvloop"
    assert run(_loop_module()).startswith("uvloop")
    # The global policy is untouched: a plain asyncio.run still gets the standard loop.
    assert asyncio.run(_loop_module()).startswith("asyncio")


def test_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loopmod, "_uvloop", lambda: None)
    assert loop_kind("auto") == "asyncio"
    assert loop_kind("") == "asyncio"
    with pytest.raises(ConfigError, match="not installed"):
        loop_kind("uvloop")


def test_unknown_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "trio")
    with pytest.raises(ConfigError, match=ENV_VAR):
        loop_kind()


_FREEZE_PROBE = """
import gc, weakref
from pptpkit.io.loop import freeze_startup_heap

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

before = cycle()            # start-up garbage: collected by the freeze's own collection
kept = Node()               # alive at start-up: frozen
freeze_startup_heap()
assert before() is None, "garbage alive at the freeze was not collected"
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert not any(o is kept for o in gc.get_objects()), "a start-up object is still scanned"
after = cycle()             # built while serving: still the collector's
gc.collect()
assert after() is None, "a cycle made after the freeze was not collected"
print("ok")
"""


def test_freeze_startup_heap_freezes_what_exists_and_still_collects_later_cycles() -> None:
    # In a child: freezing the test process would keep every later test's garbage alive.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
