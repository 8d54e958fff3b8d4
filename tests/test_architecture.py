"""The layout is the architecture (docs/ARCHITECTURE.md): these tests fail the moment an import breaks it.

The layer and boundary rules are import-linter contracts in pyproject.toml; import cycles and
imports of another module's private names are checked here on the same import graph (grimp,
import-linter's own graph builder).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "initlab"


def test_import_linter_contracts_hold(capsys):
    """The contracts in pyproject.toml (layers, the engine's and the plots' boundaries, nothing imports the CLI)."""
    from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == EXIT_STATUS_SUCCESS, report
    assert "0 broken" in report and "4 kept" in report  # every rule of docs/ARCHITECTURE.md was checked


def _graph():
    import grimp

    return grimp.build_graph("initlab")


def test_no_import_cycles():
    """Tarjan's strongly connected components over every import, inside functions included."""
    graph = _graph()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []


def _initlab_imports(tree):
    """(module imported from, name) for every ``from initlab… import name``, and the local names
    bound to initlab modules by ``import initlab.x as y`` / ``from initlab.x import module``."""
    pairs, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "initlab" and node.level == 0:
            for a in node.names:
                pairs.append((node.module, a.name))
                if (PACKAGE / Path(*node.module.split(".")[1:]) / f"{a.name}.py").exists():
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("initlab.") and a.asname:
                    aliases[a.asname] = a.name
    return pairs, aliases


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pairs, aliases = _initlab_imports(tree)
    private = [f"from {m} import {n}" for m, n in pairs if n.startswith("_") and not n.startswith("__")]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{aliases[node.value.id]}.{node.attr}")
    assert private == []


def test_the_private_name_check_can_fail():
    tree = ast.parse("from initlab.recorder import _moments\nfrom initlab.theory import meanfield as T\nT._act\n")
    pairs, aliases = _initlab_imports(tree)
    assert ("initlab.recorder", "_moments") in pairs
    assert aliases == {"T": "initlab.theory.meanfield"}


def test_no_reexport_shims():
    """Names are imported from where they are defined: a module's imports are its own business,
    not an API (no ``# re-exported`` imports, no ``__all__`` listing imported names)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "re-export" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
