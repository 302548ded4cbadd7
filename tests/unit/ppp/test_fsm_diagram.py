"""docs/design.md's RFC 1661 state table is generated from the automaton the engine runs.

The table must be what :func:`render_state_table` gives now (else the document is stale), must
say everything :data:`TRANSITIONS` says (rendering loses nothing), and the tool that rewrites
it must notice a change.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pptpkit.ppp.fsm import FOOTNOTES, TRANSITIONS, Action, Event, State, Transition, render_state_table

ROOT = Path(__file__).resolve().parents[3]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fsm_diagram", ROOT / "tools" / "fsm_diagram.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_design_md_table_is_current() -> None:
    tool = _tool()
    _, table, _ = tool.split((ROOT / "docs" / "design.md").read_text())
    assert table == render_state_table(), "docs/design.md is stale: run python tools/fsm_diagram.py"


def _parse(table: str) -> tuple[dict[tuple[State, Event], Transition], dict[tuple[State, Event], str]]:
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    transitions: dict[tuple[State, Event], Transition] = {}
    notes: dict[tuple[State, Event], str] = {}
    for row in rows:
        event = Event(row[0].strip())
        for state, cell in zip(State, (c.strip() for c in row[1:]), strict=True):
            if cell == "-":
                continue
            actions, _, target = cell.rpartition("/")
            if target[-1].isalpha():
                notes[(state, event)] = target[-1]
                target = target[:-1]
            parsed = tuple(Action(a) for a in actions.split(",")) if actions else ()
            transitions[(state, event)] = Transition(parsed, State(int(target)))
    return transitions, notes


def test_rendering_keeps_every_cell() -> None:
    transitions, notes = _parse(render_state_table())
    assert transitions == dict(TRANSITIONS)
    assert notes == dict(FOOTNOTES)


def test_a_changed_automaton_makes_the_document_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = _tool()
    design = tmp_path / "design.md"
    design.write_text(f"intro\n{tool.BEGIN}\n{render_state_table()}{tool.END}\noutro\n")
    monkeypatch.setattr(tool, "DESIGN", design)
    assert tool.main(["--check"]) == 0

    changed = dict(TRANSITIONS)
    changed[(State.REQ_SENT, Event.RCA)] = Transition((Action.TLU,), State.OPENED)
    monkeypatch.setattr(tool, "render_state_table", lambda: render_state_table(changed))
    assert tool.main(["--check"]) == 1
    assert tool.main([]) == 0  # rewrites the copy between the markers
    assert tool.main(["--check"]) == 0
    text = design.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert "| RCA | - | - | sta/2 | sta/3 | 4 | 5 | tlu/9 |" in text
