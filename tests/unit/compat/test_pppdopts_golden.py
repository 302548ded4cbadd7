"""Golden files for the pppd options parser (tests/vectors/pppdopts).

Each ``NAME.options`` (an options file) or ``NAME.argv`` (a pppd command line, one argument a
line) has a ``NAME.expected``: the options that differ from the defaults, one ``key = value``
a line, or the single line ``error: MESSAGE`` (with ``path:line``).  Paths are relative to the
vectors directory, which is also the ``etc_dir`` (so ``call work`` reads ``peers/work``).

``PPTPKIT_UPDATE_GOLDEN=1`` rewrites the expected files (review the diff before committing).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from pptpkit.compat.pppdopts import PppdOptions, parse_pppd_argv, parse_pppd_file
from pptpkit.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "pppdopts"
CASES = sorted(p.name for p in VECTORS.iterdir() if p.suffix in (".options", ".argv"))
DEFAULTS = PppdOptions()


def render(opts: PppdOptions) -> str:
    lines = [f"role = {opts.role.value}"]
    for f in dataclasses.fields(PppdOptions):
        value = getattr(opts, f.name)
        if f.name == "locations" or value == getattr(DEFAULTS, f.name):
            continue
        if f.name == "auth_policy":
            pol = opts.auth_policy
            value = (f"auth={pol.auth_required} require={sorted(m.pppd_name for m in pol.require)} "
                     f"refuse={sorted(m.pppd_name for m in pol.refuse)} "
                     f"offered={[m.pppd_name for m in pol.offered_methods()]}")
        elif f.name == "mppe":
            value = opts.mppe.describe()
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        elif f.name == "accm" and value is not None:
            value = f"{value:#010x}"
        elif value is not None and not isinstance(value, (bool, int, float)):
            value = str(value)
        lines.append(f"{f.name} = {value}")
    return "\n".join(lines) + "\n"


def run_case(name: str) -> str:
    path = VECTORS / name
    try:
        if path.suffix == ".argv":
            argv = path.read_text().splitlines()
            opts = parse_pppd_argv(argv, etc_dir=".")
        else:
            opts = parse_pppd_file(name, etc_dir=".")
    except ConfigError as exc:
        return f"error: {exc}\n"
    return render(opts)


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(VECTORS)
    got = run_case(name)
    expected_path = VECTORS / (Path(name).stem + ".expected")
    if os.environ.get("PPTPKIT_UPDATE_GOLDEN") == "1":
        expected_path.write_text(got)
    assert got == expected_path.read_text()


def test_every_expected_file_has_a_case() -> None:
    stems = {Path(c).stem for c in CASES}
    assert {p.stem for p in VECTORS.glob("*.expected")} == stems


def test_error_cases_fail_and_others_parse() -> None:
    for name in CASES:
        expected = (VECTORS / (Path(name).stem + ".expected")).read_text()
        assert expected.startswith("error: ") == name.startswith("err-"), name
