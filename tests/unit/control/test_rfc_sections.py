"""Every control message knows its RFC 2637 section, and the engine's handler for it says so.

A newcomer reading a handler should land on the right part of the RFC at once; this keeps the
references from drifting.  Sections and titles come from a data file copied from the RFC.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from pptpkit.control import MESSAGE_TYPES, connection

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "rfc2637_messages.txt"


def _rfc() -> dict[int, tuple[str, str]]:
    out: dict[int, tuple[str, str]] = {}
    for line in VECTORS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            section, number, title = line.split()
            out[int(number)] = (section, title)
    return out


def _handlers() -> dict[str, str]:
    """Message class name -> the engine method its ``case`` dispatches to (read from the source)."""
    tree = ast.parse(inspect.getsource(connection))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchClass):
            cls = node.pattern.cls
            if not isinstance(cls, ast.Name):
                continue
            for stmt in node.body:
                for call in ast.walk(stmt):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                            and call.func.attr.startswith("_on_")):
                        found[cls.id] = call.func.attr
    return found


def test_every_message_names_its_section() -> None:
    rfc = _rfc()
    assert set(rfc) == set(MESSAGE_TYPES)
    for number, cls in MESSAGE_TYPES.items():
        assert rfc[number][0] == cls.SECTION, cls.__name__


@pytest.mark.parametrize("number", sorted(_rfc()))
def test_every_message_class_cites_its_section(number: int) -> None:
    # The docstring is what a reader (and help()) sees; SECTION is what code sees.  Both agree
    # with the RFC table.  A dataclass without a docstring gets its signature as __doc__, so a
    # missing docstring fails here too.
    section, title = _rfc()[number]
    cls = MESSAGE_TYPES[number]
    doc = cls.__doc__ or ""
    assert doc.startswith(f"RFC 2637 §{section} {title}"), (cls.__name__, doc[:80])


@pytest.mark.parametrize("number", sorted(_rfc()))
def test_every_handler_cites_its_section(number: int) -> None:
    section, title = _rfc()[number]
    cls = MESSAGE_TYPES[number]
    handler = _handlers().get(cls.__name__)
    assert handler is not None, f"no handler dispatched for {cls.__name__}"
    doc = inspect.getdoc(getattr(connection.ControlConnection, handler)) or ""
    assert doc.startswith(f"RFC 2637 §{section} {title}"), (handler, doc[:80])


def test_the_checker_catches_a_wrong_citation() -> None:
    # The same comparison against a deliberately wrong section must fail.
    doc = inspect.getdoc(connection.ControlConnection._on_echo_request) or ""
    assert not doc.startswith("RFC 2637 §2.6 Echo-Request")
