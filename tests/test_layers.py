"""The layers of ARCHITECTURE.md, kept by computing the import graph of ``surgeon/`` from the source.

Every import counts, deferred (function-level) ones included, so a cycle cannot hide inside a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "surgeon"

# ARCHITECTURE.md's layers, lowest first; a module imports its own layer and the layers below it, never above.
# Leaves know torch, their own package and each other (blocks/ knows only torch and its own registry).
LEAVES = {"surgeon._version", "surgeon.errors", "surgeon.tensors", "surgeon.recipe", "surgeon.yaml_nodes",
          "surgeon.precision"}
# The stages and what sits beside them at their level: building blocks (build), conv units (units), the rules
# language (rules), exporting (export, python_package, and exportable: whether a module exports) and the surgery
# report (report).
STAGES = {"surgeon.trace", "surgeon.sites", "surgeon.match", "surgeon.build", "surgeon.units", "surgeon.rewrite",
          "surgeon.verify", "surgeon.codegen", "surgeon.rules", "surgeon.export", "surgeon.python_package",
          "surgeon.exportable", "surgeon.report"}
LAYERS = ("leaves", "io", "profile", "stages", "integrations", "pipeline", "experiments", "cli", "package")
INTEGRATIONS = "surgeon.integrations"
MAX_LINES = 400
MAX_PARAMETERS = 12


def layer_of(module: str) -> str | None:
    """The layer of a ``surgeon`` module, or ``None`` for a module placed nowhere."""
    if module == "surgeon":
        return "package"
    if module in LEAVES or module == "surgeon.blocks" or module.startswith("surgeon.blocks."):
        return "leaves"
    if module in STAGES:
        return "stages"
    for layer in ("io", "profile", "integrations", "pipeline", "experiments", "cli"):
        if module == f"surgeon.{layer}" or module.startswith(f"surgeon.{layer}."):
            return layer
    return None


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


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = {module for module in import_graph() if layer_of(module) is None}
    assert not unplaced


def upward_imports(graph: dict[str, set[str]]) -> set[str]:
    """Every import of a module from a higher layer than its own, as ``importer (layer) -> imported (layer)``."""
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    return {f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})"
            for module, targets in graph.items() for target in targets
            if rank[layer_of(target)] > rank[layer_of(module)]}


def test_imports_point_downward() -> None:
    assert not upward_imports(import_graph())


def test_the_layer_check_sees_an_upward_import() -> None:
    graph = {"surgeon.integrations.ultralytics.training": {"surgeon.pipeline", "surgeon.io"}, "surgeon.pipeline": set(),
             "surgeon.io": set()}
    expected = "surgeon.integrations.ultralytics.training (integrations) -> surgeon.pipeline (pipeline)"
    assert upward_imports(graph) == {expected}


def test_blocks_know_only_torch_and_their_own_registry() -> None:
    graph = import_graph()
    blocks = {module for module in graph if module == "surgeon.blocks" or module.startswith("surgeon.blocks.")}
    outside = {module: sorted(graph[module] - blocks - {"surgeon.errors"}) for module in blocks
               if graph[module] - blocks - {"surgeon.errors"}}
    assert not outside


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


def test_no_module_is_over_400_lines() -> None:
    long = {path.name: n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long


def _definitions(name: str) -> list[str]:
    """Where a function or method called ``name`` is defined in ``surgeon/`` (``module:line``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found.append(f"{_module_name(path)}:{node.lineno}")
    return found


def test_save_model_is_defined_once() -> None:
    assert [where.partition(":")[0] for where in _definitions("save_model")] == ["surgeon.io.saving"]


def test_the_definition_finder_finds_every_definition() -> None:
    assert len(_definitions("build")) >= 4  # the torchvision, timm, Ultralytics and transformers adapters at least


def _parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> int:
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    if is_method and named and named[0].arg in ("self", "cls"):
        named = named[1:]
    return len(named) + (arguments.vararg is not None) + (arguments.kwarg is not None)


def public_signatures() -> dict[str, int]:
    """Every public function and method outside ``surgeon/cli/``, by qualified name, with its parameter count
    (``self``/``cls`` left out; ``*args`` and ``**kwargs`` count one each)."""
    counts: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("surgeon.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        scopes = [(tree.body, module, False)]
        for body, prefix, in_class in scopes:
            for node in body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    scopes.append((node.body, f"{prefix}.{node.name}", True))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                    counts[f"{prefix}.{node.name}"] = _parameter_count(node, in_class)
    return counts


def test_no_public_function_outside_the_cli_takes_more_than_12_parameters() -> None:
    counts = public_signatures()
    assert counts["surgeon.pipeline.checkpoints.patch"] <= MAX_PARAMETERS  # the walk sees the functions it must
    assert not {name: count for name, count in counts.items() if count > MAX_PARAMETERS}
