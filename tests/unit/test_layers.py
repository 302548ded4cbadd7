"""The import rules of the package layout (issue 9, item 7), checked from the source with ``ast``.

Imports flow one way, down this rank table (a package may import its own modules and any package
of a lower rank)::

    cli > ops > compat > lab > vpn > pptp > io > ppp > auth = control > radius > gre = crypto
        > speedups > errors, enums, wire

Same-rank packages (auth/control, gre/crypto) must not import each other: equal rank means
"independent", not "free to call each other".  Two modules of the root are special:
``pptpkit.__main__`` only starts the CLI, so it may import anything; the root ``pptpkit/__init__``
is the public API, so it may import anything below ``cli`` - and nothing may import it back
(``from pptpkit import wire`` names the module ``pptpkit.wire``, which is fine).

Which imports count, and why:

* Layering: *every* import - module level, inside functions and in ``if TYPE_CHECKING:`` blocks.
  A lazy or type-only import still couples the lower layer to the upper one.
* Module cycles: module-level imports only, without ``TYPE_CHECKING`` blocks - those are the
  ones Python executes while importing, so only they can leave a half-initialised module behind.
* Package cycles: every import again, type-only included; two packages that name each other's
  types are one package in disguise.  (Between packages of different rank the layer rule already
  reports this; the check still names the cycle, and it covers the same-rank packages.)
* Private names: ``from a.b import _x`` where ``a.b`` is another module (or ``_x`` is a private
  module) - a name used across modules is public and must not start with ``_``.  Attribute access
  such as ``mod._x`` is not checked; the ``from``-import is how this codebase borrows names.

:func:`check` is a pure function of a source tree, so the tests below also run it on small
synthetic trees to prove each rule can fail.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = "pptpkit"
SRC: Final = Path(__file__).resolve().parents[2] / "src" / ROOT

# Lower number = lower layer.  Top-level modules of the root package (errors, enums, wire) share
# the bottom rank under the pseudo-package name "" (see _package).
RANKS: Final[dict[str, int]] = {
    "cli": 90,
    # Operating the server (control socket, metrics, hooks, shaping, accounting): watches vpn's
    # sessions and compat's program mode, used only by the command line.
    "ops": 85,
    "compat": 80,
    "lab": 70,
    "vpn": 60,
    "pptp": 50,
    "io": 40,
    "ppp": 30,
    "auth": 20,
    "control": 20,
    # RADIUS codecs and the client engine: used by auth and above, uses only crypto-level code.
    "radius": 15,
    "gre": 10,
    "crypto": 10,
    # The compiled primitives of the per-packet path and their loader (pptpkit.speedups): below
    # every layer that calls them, importing nothing of pptpkit.
    "speedups": 5,
    "": 0,
}
# The root __init__ sits just under cli: it may re-export anything but the command line.
_API_RANK: Final = RANKS["cli"] - 1
_MAIN: Final = f"{ROOT}.__main__"

# Known violations in files this branch does not own, one exact message each, with the issue
# that removes them.  A stale entry fails the test too, so the list can only shrink.
# Issue 9 item 7: private helpers borrowed across modules in files owned by other branches (cli
# settings, engines); each becomes public (or moves) there, then the lead deletes its line here.
KNOWN_VIOLATIONS: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module (and, for ``from m import name``, the name) at one place."""

    importer: str
    target: str
    name: str | None
    line: int
    module_level: bool  # executed while the importer itself is being imported
    type_only: bool


def module_names(src: Path, root: str = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src`` (a package named ``root``)."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([root, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    body: Iterable[ast.stmt], module_level: bool, type_only: bool
) -> Iterator[tuple[ast.stmt, bool, bool]]:
    """Every import statement, with whether it runs at import time and whether it is type-only."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, module_level, type_only
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, False, type_only)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, module_level, True)
            yield from _walk(node.orelse, module_level, type_only)
        else:
            # Class bodies, try/with/if blocks run at import time when their parent does.
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    stmts = [s for h in inner for s in h.body] if field == "handlers" else inner
                    yield from _walk(stmts, module_level, type_only)
            if isinstance(node, ast.Match):
                for case in node.cases:
                    yield from _walk(case.body, module_level, type_only)


def imports_of(module: str, path: Path, modules: dict[str, Path], root: str = ROOT) -> list[Import]:
    """The imports of ``module`` that resolve to modules of the ``root`` package."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node, module_level, type_only in _walk(tree.body, True, False):

        def add(target: str, name: str | None, node: ast.stmt = node,
                module_level: bool = module_level, type_only: bool = type_only) -> None:
            found.append(Import(module, target, name, node.lineno, module_level, type_only))

        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == root or alias.name.startswith(root + "."):
                    # "import a.b.c" imports a, a.b and a.b.c; the deepest one is what is used.
                    add(_deepest(alias.name, modules), None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not (source == root or source.startswith(root + ".")):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    add(sub, alias.name if alias.name.startswith("_") else None)
                else:
                    add(_deepest(source, modules), alias.name)
    return found


def _deepest(dotted: str, modules: dict[str, Path]) -> str:
    while dotted not in modules and "." in dotted:
        dotted = dotted.rpartition(".")[0]
    return dotted


def _package(module: str, root: str = ROOT) -> str:
    """The layer package of a module: ``pptpkit.io.link`` -> ``io``; top-level modules -> ``""``."""
    parts = module.split(".")[1:]
    if len(parts) >= 2 or (len(parts) == 1 and parts[0] in RANKS):
        return parts[0]
    return ""


def _rank(module: str, root: str = ROOT) -> int:
    if module == root:
        return _API_RANK
    if module == f"{root}.__main__":
        return RANKS["cli"] + 1
    package = _package(module, root)
    if package not in RANKS:
        raise KeyError(f"{module}: package {package!r} has no rank; add it to RANKS")
    return RANKS[package]


def _label(module: str, root: str = ROOT) -> str:
    if module == root:
        return "the public API (pptpkit/__init__)"
    return _package(module, root) or "top level"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected part found by a depth-first search, as a node path."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def check(src: Path, root: str = ROOT) -> list[str]:
    """Every violation of the import rules in the package at ``src``, one message each."""
    modules = module_names(src, root)
    problems: list[str] = []
    module_graph: dict[str, set[str]] = {m: set() for m in modules}
    package_graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        for imp in imports_of(module, path, modules, root):
            where = f"{imp.importer} (line {imp.line})"
            name = imp.name if imp.name is not None else imp.target.rpartition(".")[2]
            if imp.target != module and _private(name):
                problems.append(f"{where} imports private name {name} from {imp.target}")
            if imp.target == module or module == f"{root}.__main__":
                continue
            src_rank, dst_rank = _rank(module, root), _rank(imp.target, root)
            src_pkg, dst_pkg = _package(module, root), _package(imp.target, root)
            # The version string is a constant of the root, not its API: the CLI may print it.
            upward_root = imp.target == root and name != "__version__"
            if upward_root or dst_rank > src_rank:
                problems.append(f"{where} imports {imp.target}: "
                                f"{_label(module, root)} -> {_label(imp.target, root)} is upward")
            elif dst_rank == src_rank and src_pkg != dst_pkg and module != root:
                problems.append(f"{where} imports {imp.target}: "
                                f"{src_pkg} -> {dst_pkg} are the same rank and must stay independent")
            if imp.module_level and not imp.type_only:
                module_graph[module].add(imp.target)
            if module != root and imp.target != root and src_pkg != dst_pkg:
                package_graph.setdefault(src_pkg or "top level", set()).add(dst_pkg or "top level")
    for cycle in _cycles(module_graph):
        problems.append("module import cycle: " + " -> ".join(cycle))
    for cycle in _cycles(package_graph):
        problems.append("package import cycle: " + " -> ".join(cycle))
    return problems


def test_the_package_follows_the_import_rules() -> None:
    problems = set(check(SRC))
    new = sorted(problems - KNOWN_VIOLATIONS)
    stale = sorted(KNOWN_VIOLATIONS - problems)
    message = ""
    if new:
        message += "import rule violations:\n  " + "\n  ".join(new) + "\n"
    if stale:
        message += "KNOWN_VIOLATIONS entries that no longer occur (remove them):\n  " + "\n  ".join(stale)
    assert not message, message


def test_every_package_has_a_rank() -> None:
    packages = {_package(m) for m in module_names(SRC)}
    assert packages <= set(RANKS), sorted(packages - set(RANKS))


# -- the checker itself, on synthetic trees ---------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(src).parents:
            (src / parent / "__init__.py").touch()
        path.write_text(text)
    return src


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "wire.py": "",
        "gre/packet.py": "from pptpkit.wire import x\n",
        "io/link.py": "import pptpkit.gre.packet\nfrom pptpkit.gre import packet\nfrom . import util\n",
        "io/util.py": "from .. import wire\n",
    })
    assert check(src) == []


def test_upward_imports_are_reported_wherever_they_are(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "vpn/routes.py": "def f():\n    from pptpkit.compat.pppdopts import parse\n",
        "compat/pppdopts.py": "",
        "gre/packet.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from ..io.link import Link\n"),
        "io/link.py": "",
        "wire.py": "import pptpkit.ppp.fsm\n",
        "ppp/fsm.py": "",
    })
    assert sorted(check(src)) == [
        "pptpkit.gre.packet (line 3) imports pptpkit.io.link: gre -> io is upward",
        "pptpkit.vpn.routes (line 2) imports pptpkit.compat.pppdopts: vpn -> compat is upward",
        "pptpkit.wire (line 1) imports pptpkit.ppp.fsm: top level -> ppp is upward",
    ]


def test_same_rank_packages_stay_apart_and_their_cycle_is_named(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "auth/chap.py": "from pptpkit.control.messages import M\n",
        "control/messages.py": "def f():\n    from pptpkit.auth.chap import C\n",
    })
    assert sorted(check(src)) == [
        "package import cycle: auth -> control -> auth",
        "pptpkit.auth.chap (line 1) imports pptpkit.control.messages: "
        "auth -> control are the same rank and must stay independent",
        "pptpkit.control.messages (line 2) imports pptpkit.auth.chap: "
        "control -> auth are the same rank and must stay independent",
    ]


def test_module_cycles_count_only_import_time_imports(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "ppp/a.py": "from pptpkit.ppp.b import B\n",
        "ppp/b.py": "import pptpkit.ppp.c\n",
        "ppp/c.py": "from pptpkit.ppp import a\n",
        "ppp/d.py": "from pptpkit.ppp.e import E\n",
        "ppp/e.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pptpkit.ppp.d import D\n"
                     "def later():\n    from pptpkit.ppp import d\n"),
    })
    assert check(src) == [
        "module import cycle: pptpkit.ppp.a -> pptpkit.ppp.b -> pptpkit.ppp.c -> pptpkit.ppp.a"
    ]


def test_private_names_from_other_modules_are_reported(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "ppp/fsm.py": "_TABLE = 1\n__all__ = ['x']\n",
        "ppp/lcp.py": "from pptpkit.ppp.fsm import _TABLE, __all__\nfrom pptpkit.ppp import _util\n",
        "ppp/_util.py": "",
    })
    assert sorted(check(src)) == [
        "pptpkit.ppp.lcp (line 1) imports private name _TABLE from pptpkit.ppp.fsm",
        "pptpkit.ppp.lcp (line 2) imports private name _util from pptpkit.ppp._util",
    ]


def test_the_root_modules_are_special(tmp_path: Path) -> None:
    ok = _tree(tmp_path / "ok", {
        "__init__.py": "from pptpkit.compat.x import X\n",
        "__main__.py": "from pptpkit.cli.main import main\n",
        "compat/x.py": "",
        "cli/main.py": "",
    })
    assert check(ok) == []
    bad = _tree(tmp_path / "bad", {
        "__init__.py": "from pptpkit.cli.main import main\n",
        "cli/main.py": "",
        "io/link.py": "from pptpkit import __version__\n",
    })
    assert sorted(check(bad)) == [
        "pptpkit (line 1) imports pptpkit.cli.main: the public API (pptpkit/__init__) -> cli is upward",
        "pptpkit.io.link (line 1) imports pptpkit: io -> the public API (pptpkit/__init__) is upward",
    ]


def test_a_stale_allow_list_entry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "KNOWN_VIOLATIONS",
                        frozenset({"pptpkit.x (line 1) imports pptpkit.cli: x -> cli is upward"}))
    with pytest.raises(AssertionError, match="no longer occur"):
        test_the_package_follows_the_import_rules()
