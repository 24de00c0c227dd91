"""The layers of ARCHITECTURE.md, kept by computing the import graph of ``surgeon/`` from the source.

Every import counts, deferred (function-level) ones included, so a cycle cannot hide inside a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "surgeon"

# The leaves: they know torch, their own package and each other, never a stage, the pipeline or the CLI.
LEAVES = {"surgeon._version", "surgeon.errors", "surgeon.tensors", "surgeon.arch", "surgeon.files",
          "surgeon.detect", "surgeon.recipe", "surgeon.checkpoint", "surgeon.yaml_nodes", "surgeon.frameworks",
          "surgeon.precision"}
# The stages and what sits beside them at their level: building blocks (build), conv units (units), the rules
# language (rules), exporting (export, python_package, and exportable: whether a module exports) and the surgery
# report (report), each importing lower stages and leaves only.
STAGES = {"surgeon.trace", "surgeon.sites", "surgeon.match", "surgeon.build", "surgeon.units", "surgeon.rewrite",
          "surgeon.verify", "surgeon.codegen", "surgeon.rules", "surgeon.export", "surgeon.python_package",
          "surgeon.exportable", "surgeon.report"}
ORCHESTRATOR = {"surgeon", "surgeon.pipeline", "surgeon.pipeline.surgery", "surgeon.pipeline.checkpoints",
                "surgeon.pipeline.compare"}
# Adapters to other frameworks (integrations/): above the pipeline, which they use; only the package imports them.
INTEGRATIONS = "surgeon.integrations"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, files: set[str]) -> list[str]:
    """The ``surgeon`` modules a ``from ... import ...`` loads: each name that is a submodule, and the package it
    names whenever a name is an attribute of it (or the package is a module itself)."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    submodules = [name for alias in node.names if (name := f"{target}.{alias.name}") in files]
    return submodules if len(submodules) == len(node.names) else [target, *submodules]


def import_graph() -> dict[str, set[str]]:
    """Every module of ``surgeon/`` and the ``surgeon`` modules it imports anywhere in its body."""
    files = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = _resolve(module, is_package, node, set(files))
            else:
                continue
            edges.update(name for name in names if name in files and name != module)
        graph[module] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_import_graph_sees_deferred_imports() -> None:
    graph = import_graph()
    assert "surgeon.blocks" in graph["surgeon.trace"]  # a function-level import in trace.py
    assert {"surgeon.sites", "surgeon.rewrite", "surgeon.verify"} <= graph["surgeon.pipeline.surgery"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_surgeon_has_no_import_cycle() -> None:
    assert _cycle(import_graph()) is None


@pytest.mark.parametrize("layer", ["leaves", "profile", "blocks"])
def test_lower_layers_import_no_stage(layer: str) -> None:
    graph = import_graph()
    higher = STAGES | ORCHESTRATOR | {module for module in graph if module.startswith("surgeon.cli")}
    if layer == "leaves":
        modules = LEAVES
    else:
        modules = {module for module in graph if module == f"surgeon.{layer}" or module.startswith(f"surgeon.{layer}.")}
        allowed = LEAVES | modules | ({"surgeon.blocks"} if layer == "blocks" else set())
        assert all(graph[module] <= allowed for module in modules), {m: graph[m] - allowed for m in modules}
    assert modules <= set(graph)
    offenders = {module: sorted(graph[module] & higher) for module in modules if graph[module] & higher}
    assert not offenders


def test_only_the_pipeline_and_the_cli_import_the_pipeline() -> None:
    graph = import_graph()
    importers = {module for module, targets in graph.items() if targets & ORCHESTRATOR}
    assert importers <= ORCHESTRATOR | {module for module in graph if module.startswith(("surgeon.cli", INTEGRATIONS))}


def test_only_the_package_imports_the_integrations() -> None:
    graph = import_graph()
    importers = {module for module, targets in graph.items() if any(t.startswith(INTEGRATIONS) for t in targets)}
    assert importers <= {"surgeon"} | {module for module in graph if module.startswith(INTEGRATIONS)}


def test_the_cli_holds_no_surgery_stage() -> None:
    graph = import_graph()
    surgery = {"surgeon.rewrite", "surgeon.verify", "surgeon.units", "surgeon.trace", "surgeon.codegen"}
    offenders = {m: sorted(graph[m] & surgery) for m in graph if m.startswith("surgeon.cli") and graph[m] & surgery}
    assert not offenders


def test_no_module_imports_a_private_module_of_another_package() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        for target in targets:
            package, _, leaf = target.rpartition(".")
            if leaf.startswith("_"):
                assert module == package or module.startswith(package + "."), f"{module} imports {target}"


def test_every_module_is_placed_in_a_layer() -> None:
    graph = import_graph()
    placed = LEAVES | STAGES | ORCHESTRATOR
    unplaced = {module for module in graph
                if module not in placed
                and not module.startswith(("surgeon.cli", "surgeon.profile", "surgeon.blocks", INTEGRATIONS))}
    assert not unplaced


def test_no_module_is_over_400_lines() -> None:
    long = {path.name: n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long
