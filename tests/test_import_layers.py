"""The import graph of ``autotune/`` has no circle and no import from a lower layer to a higher one.

Every import counts: top-level, function-level, ``TYPE_CHECKING`` and relative ones (resolved against
the importing module's package). The layers are the ones docs/extending.md "Layers" draws; a module not
named in :data:`LAYERS` takes the layer of its nearest named package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "autotune"

# Lowest first. A module may import its own layer (without a circle) or any layer below it. A new
# top-level module falls under "autotune" (the top layer) until it is named here: one that a lower
# layer imports fails the test, which asks where it belongs.
LAYERS: list[tuple[str, list[str]]] = [
    ("leaves", ["autotune.errors", "autotune.fileio", "autotune.registry", "autotune.providers", "autotune.threads",
                "autotune.device", "autotune.warning_filters", "autotune.library_noise", "autotune.library_logging",
                "autotune.artifacts", "autotune.space", "autotune.urls",
                "autotune.evaluation.goals", "autotune.evaluation.metrics", "autotune.report.tables"]),
    ("stored records", ["autotune.record_schema", "autotune.records", "autotune.record_migrations", "autotune.selection.policies"]),
    # quant/, builder/ and training/: the passes' helpers, whose imports reach no higher than this layer
    ("config/data/models", ["autotune.config", "autotune.data", "autotune.template", "autotune.models", "autotune.cache",
                            "autotune.context", "autotune.logging_setup", "autotune.quant", "autotune.builder",
                            "autotune.training"]),
    ("passes/evaluation", ["autotune.passes", "autotune.evaluation"]),
    ("pipeline/plan", ["autotune.pipeline", "autotune.plan", "autotune.config_checks", "autotune.run_context",
                       "autotune.progress"]),
    ("search/selection", ["autotune.search", "autotune.selection"]),
    ("finish/report", ["autotune.finish", "autotune.report", "autotune.export", "autotune.card", "autotune.card_markdown",
                       "autotune.result"]),
    # autotune.testing: the tests' and benchmarks' tiny model and quantized-build checks, over the passes; nothing imports it
    ("api/cli", ["autotune", "autotune.api", "autotune.cli", "autotune.__main__", "autotune.generate", "autotune.testing"]),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest prefix of ``name`` that is an autotune module (``a.b.Name`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported autotune module: first line}; self-imports left out."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # ``from pkg import sub`` imports the submodule; ``from mod import Name`` the module.
                targets = [f"{origin}.{alias.name}" if alias.name != "*" else origin for alias in node.names]
            for target in targets:
                resolved = _known(target, modules) if target.split(".")[0] == "autotune" else None
                if resolved and resolved != name:
                    edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(c)) + [f"(all of: {', '.join(c)})"] for c in components]


def _closed_path(graph: dict[str, dict[str, int]], members: set[str]) -> list[str]:
    """One circle through the component's first module (breadth-first, so the shortest)."""
    start = min(members)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt in members and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return sorted(members)


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) > layer_of(module):
                found.append(f"{module}:{line} ({LAYERS[layer_of(module)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]})")
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in import_graph() if layer_of(m) < 0] == []


def test_no_import_circle() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    found = upward_imports(import_graph())
    assert found == [], f"{len(found)} imports point up a layer:\n" + "\n".join(found)


def test_the_checker_sees_function_level_relative_and_type_checking_imports(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "autotune"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("def f():\n    from .sub import deep\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..errors import f\n")
    monkeypatch.setitem(globals(), "ROOT", package)
    graph = import_graph()
    assert graph["autotune.errors"] == {"autotune.sub.deep": 2}
    assert graph["autotune.sub.deep"] == {"autotune.errors": 3}
    assert find_cycles(graph) == [["autotune.errors", "autotune.sub.deep", "autotune.errors",
                                   "(all of: autotune.errors, autotune.sub.deep)"]]
