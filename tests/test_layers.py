"""The package's modules read top to bottom (docs/adr/0011): no import runs up the layers, and
no two modules import each other, directly or through others.

Every `wap` import counts: at module level, inside functions (lazy imports) and under
`TYPE_CHECKING` (a type is a dependency too). Pure logic: no Spark, no Airflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "plugins" / "wap"

# Lowest first. A module may import modules of its own layer or of lower ones.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "settings", "partition", "contract"}),
    (
        "concerns",
        {"publish", "staging", "tables", "ledger", "spark", "sources", "audit", "pipeline", "lineage"},
    ),
    ("steps", {"runtime", "steps", "check", "preview", "ranges", "quarantine", "rollback", "maintenance", "planner"}),
    ("edge", {"tasks", "cli", "embedded", "template", "ui"}),
]
# What a DAG file may import: the declarations and the Airflow edge (never steps or the CLI).
DAG_IMPORTS = {"tasks", "pipeline", "publish", "sources", "partition"}


def imports_of(path: Path) -> set[str]:
    """The `wap` modules a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "wap":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wap."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("wap.")}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem not in ("__init__", "__main__")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    level = {module: n for n, (_, modules) in enumerate(LAYERS) for module in modules}
    names = [name for name, _ in LAYERS]
    return [
        f"{module} ({names[level[module]]}) imports {target} ({names[level[target]]})"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if target in level and module in level and level[target] > level[module]
    ]


def test_every_module_has_a_layer():
    placed = set().union(*(modules for _, modules in LAYERS))
    modules = set(graph())
    assert modules - placed == set(), "place each new module in a layer in LAYERS (and in docs/design.md)"
    assert placed - modules == set(), "LAYERS names modules that no longer exist"


def test_no_import_runs_up_the_layers():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_dag_files_import_only_declarations_and_the_airflow_edge():
    for path in sorted((REPO / "dags").glob("*.py")):
        assert imports_of(path) <= DAG_IMPORTS, f"{path.name} imports {sorted(imports_of(path) - DAG_IMPORTS)}"


# The checks themselves, on made-up graphs: each would fail on the shape it is meant to catch.
@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_cycles_are_found_through_any_number_of_modules(edges, expected):
    assert cycles(edges) == expected


def test_an_import_up_the_layers_is_named():
    assert upward({"tables": {"steps"}, "steps": {"tables"}}) == ["tables (concerns) imports steps (steps)"]


def test_lazy_and_type_only_imports_count(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from wap.steps import stage\n"
        "def f():\n    from wap import cli, tables\n    import wap.ledger\n",
        encoding="utf-8",
    )
    assert imports_of(module) == {"steps", "cli", "tables", "ledger"}
