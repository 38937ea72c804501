"""The import rules of the `hindsight` package, checked on the source with `ast` (nothing is imported).

A unit is a top-level module or subpackage of `hindsight` (`hindsight/engine/…` is the unit `engine`,
`hindsight/paths.py` the unit `paths`); `hindsight/__init__.py` and `hindsight/__main__.py` are the root.
The rules keep the data flow one-way, so a newcomer can read the house from the foundations up:

1. a unit imports only the units its row of ALLOWED names (and itself, and the root's `__version__`);
2. no cycles between units;
3. `hindsight` is imported at the head of a module, never inside a function (where an import hides a
   dependency and runs on a request's path); `if TYPE_CHECKING:` blocks are the exception;
4. no private name (`_x`) is imported from another unit: what a unit offers others is public;
5. only the LSP layer and the two LSP clients (evaluation, simulate) import pygls or lsprotocol.

Each failure names the file, the line and the rule. When a rule is deliberately changed, change the table
or the constants below, with the reason on the same line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hindsight"
ROOT = "hindsight"  # the unit of hindsight/__init__.py and hindsight/__main__.py

FOUNDATIONS = {"paths", "request", "errors", "syntax", "redact"}

# unit → the units it may import. Lowest layer first.
ALLOWED: dict[str, set[str]] = {
    # The root holds the version; __main__ runs the command line.
    ROOT: {"cli"},
    # Foundations: plain values and helpers every layer shares, so they depend on nothing.
    "paths": set(),
    "request": set(),
    "errors": set(),
    "syntax": set(),
    # Secret redaction: before anything is stored (collector) or sent to a model server (engine).
    "redact": set(),
    # The server's initializationOptions name languages (syntax) and report bad options (errors).
    "options": {"syntax", "errors"},
    # One versioned-artefact store (models, gates, adapters): files under the data dir.
    "artefacts": {"paths", "errors"},
    # The SQLite log and the outcome tracker: stores requests, knows nothing of models or gates.
    "collector": FOUNDATIONS,
    # One suggestion from a model; reads model files and adapters from the artefact store, is configured
    # by the options (the model loader), and never reads the log.
    "engine": FOUNDATIONS | {"options", "artefacts"},
    # The workspace index and BM25: text in, snippets out.
    "retrieval": FOUNDATIONS,
    # The acceptance gate is trained on the log (collector) and loaded from the artefact store.
    "gating": FOUNDATIONS | {"artefacts", "collector"},
    # One request end to end: retrieve → gate → generate → gate → record; everything below it.
    "pipeline": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "retrieval", "gating"},
    # The simulated developer drives the real server as an LSP client; it reads the log and the gate's
    # features to score what it saw, and starts the engine for cold-start measurements.
    "simulate": FOUNDATIONS | {"options", "collector", "retrieval", "gating", "engine"},
    # The DPO refresh mines the log, evaluates adapters with the engine and simulates developers.
    "refresh": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "retrieval", "gating", "simulate"},
    # FIM training data and training: prompts as the engine builds them, adapters as refresh stores them.
    "fim": FOUNDATIONS | {"artefacts", "collector", "engine", "retrieval", "refresh"},
    # The learning loop runs the gate's training and the refresh on the log, and records itself in it;
    # it prunes the gates' and the adapters' versions (engine: where the adapters live).
    "loop": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "gating", "refresh"},
    # The thin LSP layer: the pipeline and what it is configured with; no training, no benchmarks.
    "lsp": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "retrieval", "gating", "pipeline"},
    # The `hindsight` command is the top: it may start anything.
    "cli": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "retrieval", "gating", "pipeline",
                          "simulate", "refresh", "fim", "lsp", "loop", "evaluation"},
    # Benchmarks measure every layer; only the command line runs them.
    "evaluation": FOUNDATIONS | {"options", "artefacts", "collector", "engine", "retrieval", "gating",
                                 "pipeline", "simulate", "refresh", "fim", "lsp", "loop"},
}

# Rule 5: the LSP libraries, and the units that may import them.
LSP_LIBRARIES = {"pygls", "lsprotocol"}
LSP_UNITS = {"lsp", "evaluation", "simulate"}


@dataclass(frozen=True)
class Import:
    file: Path  # relative to the repository root
    line: int
    module: str  # the module imported from, absolute: "hindsight.engine.model", "pygls.server"
    name: str | None  # the name imported (`from m import name`), None for `import m`
    in_function: bool  # inside a function or method body
    type_checking: bool  # inside an `if TYPE_CHECKING:` block

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def internal(self) -> bool:
        return self.module == ROOT or self.module.startswith(ROOT + ".")

    @property
    def target(self) -> str:
        """What the statement imports, as one dotted name: `from hindsight import engine` → hindsight.engine."""
        return f"{self.module}.{self.name}" if self.module == ROOT and self.name else self.module

    @property
    def unit(self) -> str:
        """The unit imported. `from hindsight import engine` imports the unit engine, `from hindsight
        import __version__` the root."""
        parts = self.module.split(".")
        if len(parts) > 1:
            return parts[1]
        return self.name if self.name in ALLOWED else ROOT


def module_name(path: Path) -> str:
    """hindsight/engine/model.py → hindsight.engine.model; a package's __init__.py → the package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(path: Path) -> str:
    """The unit a file belongs to: the first component under hindsight/ (`engine` for
    hindsight/engine/model.py, `paths` for hindsight/paths.py); the root for __init__.py and __main__.py."""
    first = path.relative_to(PACKAGE).parts[0]
    return ROOT if first in ("__init__.py", "__main__.py") else first.removesuffix(".py")


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def parse_imports(source: str, file: Path) -> list[Import]:
    """Every import statement in `source`, the text of `file` (a path under hindsight/), with relative
    imports resolved to absolute module names."""
    name = module_name(file)
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    where = file.relative_to(PACKAGE.parent)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(where, node.lineno, alias.name, None, in_function, type_checking))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                found.append(Import(where, node.lineno, module, alias.name, in_function, type_checking))
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, in_function, True)
            for child in node.orelse:
                visit(child, in_function, type_checking)
            return
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside, type_checking)

    visit(ast.parse(source, filename=str(file)), False, False)
    return found


@cache
def imports_of(path: Path) -> tuple[Import, ...]:
    return tuple(parse_imports(path.read_text(encoding="utf-8"), path))


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def check(found: list[str], rule: str) -> None:
    """Fail with one line per violation (file:line and what), under the rule they break."""
    if found:
        pytest.fail(f"{len(found)} violation(s) of the rule: {rule}\n" + "\n".join(found), pytrace=False)


def test_every_file_belongs_to_a_unit_of_the_table():
    unknown = [f"{p.relative_to(PACKAGE.parent)}: unit {unit_of(p)!r}" for p in modules() if unit_of(p) not in ALLOWED]
    check(unknown, "every unit has a row in ALLOWED (add the new unit there)")


def test_units_import_only_the_units_below_them():
    found = []
    for path in modules():
        unit = unit_of(path)
        for imp in imports_of(path):
            if imp.internal and imp.unit not in ALLOWED.get(unit, set()) | {unit, ROOT}:
                found.append(f"{imp.where}: {unit} imports {imp.unit} ({imp.target})")
    check(list(dict.fromkeys(found)), "1, a unit imports only the units of its row in ALLOWED")


def test_no_cycles_between_units():
    # unit → imported unit → where (the first import that makes the edge). Type-only imports do not run,
    # and nothing imports __main__, so neither can close a cycle.
    edges: dict[str, dict[str, str]] = {}
    for path in modules():
        unit = unit_of(path)
        if path.name == "__main__.py" and unit == ROOT:
            continue
        for imp in imports_of(path):
            if imp.internal and not imp.type_checking and imp.unit != unit:
                edges.setdefault(unit, {}).setdefault(imp.unit, imp.where)
    cycles, done = [], set()

    def dfs(unit: str, path: list[str]) -> None:
        for target in edges.get(unit, {}):
            if target in path:
                cycle = path[path.index(target) :] + [target]
                cycles.append(" → ".join(f"{a} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" → {target}")
            elif target not in done:
                dfs(target, path + [target])
        done.add(unit)

    for unit in sorted(edges):
        if unit not in done:
            dfs(unit, [unit])
    check(cycles, "2, no import cycles between units (each edge: the first import that makes it)")


def test_hindsight_is_imported_at_module_level():
    found = [
        f"{imp.where}: {imp.target} inside a function"
        for path in modules()
        for imp in imports_of(path)
        if imp.internal and imp.in_function and not imp.type_checking
    ]
    check(list(dict.fromkeys(found)), "3, hindsight.* is imported at the head of a module, not in a function")


def test_no_private_names_imported_from_another_unit():
    found = []
    for path in modules():
        unit = unit_of(path)
        for imp in imports_of(path):
            if not imp.internal or imp.unit in (unit, ROOT):
                continue
            private = [p for p in imp.module.split(".") + [imp.name or ""] if p.startswith("_") and not p.startswith("__")]
            if private:
                found.append(f"{imp.where}: {unit} imports {private[-1]} from {imp.module} (unit {imp.unit})")
    check(found, "4, no private name (_x) is imported from another unit")


def test_only_the_lsp_layer_and_its_clients_import_pygls_and_lsprotocol():
    found = [
        f"{imp.where}: {unit_of(path)} imports {imp.module}"
        for path in modules()
        if unit_of(path) not in LSP_UNITS
        for imp in imports_of(path)
        if imp.module.split(".")[0] in LSP_LIBRARIES
    ]
    check(found, f"5, only {', '.join(sorted(LSP_UNITS))} import {' or '.join(sorted(LSP_LIBRARIES))}")


def test_the_checks_see_what_they_check():
    """The rules above pass vacuously if the parse finds nothing or resolves wrongly: check it on a module
    written for the purpose, as if it were hindsight/engine/example.py."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import prompt\n"
        "from ..collector.store import _private\n"
        "import hindsight.paths\n"
        "from hindsight import __version__, retrieval\n"
        "if TYPE_CHECKING:\n"
        "    from hindsight.lsp.server import Server\n"
        "def f():\n"
        "    from hindsight.gating import gate\n"
    )
    found = parse_imports(source, PACKAGE / "engine" / "example.py")
    assert [(i.line, i.module, i.name, i.unit, i.in_function, i.type_checking) for i in found if i.internal] == [
        (2, "hindsight.engine", "prompt", "engine", False, False),
        (3, "hindsight.collector.store", "_private", "collector", False, False),
        (4, "hindsight.paths", None, "paths", False, False),
        (5, "hindsight", "__version__", ROOT, False, False),
        (5, "hindsight", "retrieval", "retrieval", False, False),
        (7, "hindsight.lsp.server", "Server", "lsp", False, True),
        (9, "hindsight.gating", "gate", "gating", True, False),
    ]
    assert unit_of(PACKAGE / "engine" / "model.py") == "engine" and unit_of(PACKAGE / "paths.py") == "paths"
    assert unit_of(PACKAGE / "__main__.py") == ROOT and module_name(PACKAGE / "engine" / "__init__.py") == "hindsight.engine"
    assert any(i.module == "hindsight.cli" for i in imports_of(PACKAGE / "__main__.py"))
