"""Which asyncio event loop the long-running processes use: uvloop when it is installed.

uvloop (the optional ``fast`` extra: ``pip install pptpkit[fast]``) replaces the event loop's
Python machinery (selector, handles, timers, transports) with libuv; the engines, which never
see the loop, are unchanged.  ``PPTPKIT_LOOP`` chooses explicitly: ``asyncio`` (the standard
loop even when uvloop is installed), ``uvloop`` (required: an error when it is missing), or
unset / ``auto`` (uvloop when importable).

uvloop does not support netlink sockets, so a process that configures interfaces through
:mod:`pptpkit.io.netconfig` (pyroute2's ``AsyncIPRoute``) must run on the standard loop
(``choice="asyncio"``).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from pptpkit.errors import ConfigError

__all__ = ["ENV_VAR", "freeze_startup_heap", "loop_kind", "run"]

ENV_VAR: Final = "PPTPKIT_LOOP"
_KINDS: Final = ("auto", "asyncio", "uvloop")

T = TypeVar("T")


def _uvloop() -> Any | None:
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def loop_kind(choice: str | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: what :func:`run` will use for ``choice`` (default: the
    ``PPTPKIT_LOOP`` environment variable).  Raises :class:`ConfigError` for an unknown choice
    or for ``uvloop`` when it is not installed."""
    if choice is None:
        choice = os.environ.get(ENV_VAR, "") or "auto"
    choice = choice.strip().lower() or "auto"
    if choice not in _KINDS:
        raise ConfigError(f"{ENV_VAR} must be one of {', '.join(_KINDS)}, not {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    if _uvloop() is not None:
        return "uvloop"
    if choice == "uvloop":
        raise ConfigError(f"{ENV_VAR}=uvloop but uvloop is not installed (pip install 'pptpkit[fast]')")
    return "asyncio"


def run(main: Coroutine[Any, Any, T], *, choice: str | None = None) -> T:
    """:func:`asyncio.run` on the loop :func:`loop_kind` picks."""
    kind = loop_kind(choice)
    if kind == "asyncio":
        return asyncio.run(main)
    uvloop = _uvloop()
    assert uvloop is not None  # loop_kind checked
    # asyncio.Runner takes a loop factory (Python 3.11+); no global policy is changed.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, classes, functions, settings: what start-up built,
    and what lives as long as the process) out of the cyclic garbage collector's reach.

    Called once by the long-running processes before they serve.  The collector's oldest
    generation is scanned in full when it has grown by a quarter; in a fresh process the first
    such scan walks all of start-up's objects (about 10 ms of CPU here, measured with
    ``gc.callbacks``), and it fell inside the first burst of call setups.  Frozen, those objects
    are never scanned again, and each later full scan walks only what the sessions built.  They
    are never freed either, which changes nothing for objects that live as long as the process
    anyway.  Collections still run as before for everything created afterwards.
    """
    gc.collect()
    gc.freeze()
