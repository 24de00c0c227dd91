"""Apply a plan to a model, in place.

Each action gets a *host*: the module whose forward is rewritten. For residual units and module sites the host is
the site itself, so ``before``, ``after`` and ``residual`` are realised inside its own graph and the parent is
never traced. A conv is a leaf: its host is the smallest enclosing module that traces (containers whose forward
iterates their children are skipped, since a new child would change their length and iteration), traced through
only along the path to the conv. A site that cannot be traced still takes ``before``/``after`` blocks, applied
around its original forward.

A block that replaces a module (a model's own attention module, selected by class) takes its place in its parent:
nothing is traced, the parent calls it by the same name, and the replaced module's keys go.

The inserted block becomes a submodule of the host, named ``{block}_{position}`` (plus ``_{conv path}`` for conv
sites, and ``_1``, ``_2``... if taken), so its keys sit next to the host's own and no original key moves. Blocks
are built by :mod:`surgeon.build` from what their registry entries declare; conv units are found, and swapped, by
:mod:`surgeon.units`; :func:`recipe_from_rewrite` records what was done.
"""

from __future__ import annotations

import copy
import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from .blocks import is_builtin_block
from .build import build_insert
from .codegen import graph_source, is_patched, patch_class, wrapped_blocks, wrapper_source
from .errors import RewriteError, TraceError
from .match import Action, Plan
from .recipe import Recipe, RecipeStep
from .trace import (
    TracedModule,
    describe_trace_error,
    find_residual_add,
    is_container,
    trace_module,
    watch_training_reads,
)
from .units import ACTIVATIONS, conv_unit, is_norm, swap_unit

__all__ = ["Inserted", "RewriteResult", "recipe_from_rewrite", "residual_add", "rewrite"]

@dataclass
class Inserted:
    """One realised action.

    Attributes:
        action: the plan's action.
        key: qualified name of the new module (its state_dict keys start with ``key + "."``).
        host: qualified name of the module whose forward now calls it.
        mode: ``graph`` (rewritten fx graph), ``graph-dual`` (separate train/eval graphs), ``wrapper``, or
            ``module`` (the block took a replaced module's place in its parent; no graph changed).
        params: parameters the new module holds.
        removed_keys: original keys that a swap or a replaced module removed (replace actions only).
        inherited: parameters a swap copied from the replaced conv unit.
    """

    action: Action
    key: str
    host: str
    mode: Literal["graph", "graph-dual", "wrapper", "module"]
    params: int
    removed_keys: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)


@dataclass
class RewriteResult:
    """What :func:`rewrite` did: the inserted modules in plan order, and for each host the modules tried."""

    inserted: list[Inserted]
    attempts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def params_added(self) -> int:
        return sum(item.params for item in self.inserted)


def _qualify(host: str, name: str) -> str:
    return f"{host}.{name}" if host else name


def _relative(name: str, host: str) -> str:
    return name[len(host) + 1:] if host else name


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def _path_to(relative_name: str) -> set[str]:
    parts = relative_name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _unique_name(host: nn.Module, base: str, taken: set[str]) -> str:
    name, i = base, 0
    while hasattr(host, name) or name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _block_label(block: str) -> str:
    return block.rsplit(":", 1)[-1].lower() if ":" in block else block


def residual_add(branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``branch + shortcut``, written into ``branch`` when autograd is off.

    torch.fx records ``x += shortcut`` as an out-of-place addition, so a rewritten residual unit would allocate
    one more activation-sized tensor per call than the original (about 3% of a ResNet-50 forward at batch 8 on
    CPU). ``branch`` is the fresh output of one of our blocks and nothing else reads it, so adding into it is safe;
    with autograd on the addition stays out of place, and under fx tracing it stays a plain ``+``.
    """
    if (isinstance(branch, torch.Tensor) and not torch.is_grad_enabled() and branch.shape == shortcut.shape
            and branch.dtype == shortcut.dtype):
        return branch.add_(shortcut)
    return branch + shortcut


def _residual_add_in_place(graph: fx.Graph, host: nn.Module, new_blocks: dict[str, nn.Module]) -> None:
    """Make the skip addition :func:`residual_add` when its branch is the output of one of our blocks."""
    found = find_residual_add(graph, host)
    if found is None:
        return
    add, branch = found
    if add.op != "call_function" or add.target not in (operator.add, operator.iadd, torch.add) or add.kwargs:
        return
    if branch.op != "call_module" or len(branch.users) != 1 or len(add.args) != 2:
        return
    target = str(branch.target)
    block = new_blocks.get(target) or dict(host.named_modules()).get(target)
    if block is not None and is_builtin_block(block):  # ours return a new tensor; a user's block might not
        add.target = residual_add
        add.args = (branch, add.args[1] if add.args[0] is branch else add.args[0])


def _insert_node(graph: fx.Graph, action: Action, target: str, rel_site: str | None, host: nn.Module) -> None:
    """Edit one graph: put ``call_module(target)`` at the action's position."""
    position = action.position
    if rel_site is not None:  # a conv inside the host
        unit = conv_unit(graph, host, rel_site)
        if position == "before":
            anchor = unit[0].args[0]
            with graph.inserting_before(unit[0]):
                new = graph.call_module(target, (anchor,))
            unit[0].replace_input_with(anchor, new)
            return
        end = unit[-1]
        with graph.inserting_after(end):
            new = graph.call_module(target, (end,))
        end.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        return
    if position == "before":
        placeholder = next(n for n in graph.nodes if n.op == "placeholder")
        last_placeholder = [n for n in graph.nodes if n.op == "placeholder"][-1]
        with graph.inserting_after(last_placeholder):
            new = graph.call_module(target, (placeholder,))
        placeholder.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    elif position == "after":
        output = next(n for n in graph.nodes if n.op == "output")
        result = output.args[0]
        if not isinstance(result, fx.Node):
            raise RewriteError(f"{action.site.name}: its forward returns {type(result).__name__}, not one tensor")
        with graph.inserting_before(output):
            new = graph.call_module(target, (result,))
        output.replace_input_with(result, new)
    else:
        found = find_residual_add(graph, host)
        if found is None:
            raise RewriteError(f"{action.site.name}: no skip addition found in its forward")
        add, branch = found
        with graph.inserting_before(add):
            new = graph.call_module(target, (branch,))
        add.replace_input_with(branch, new)


_TraceCache = dict[tuple[str, frozenset[str]], TracedModule]


def _trace_cached(cache: _TraceCache, name: str, module: nn.Module, through: set[str]) -> TracedModule:
    key = (name, frozenset(through))
    if key not in cache:
        cache[key] = trace_module(module, through)
    return cache[key]


def _choose_host(action: Action, modules: dict[str, nn.Module], attempts: dict[str, list[tuple[str, str]]],
                 cache: _TraceCache) -> tuple[str, str | None, bool]:
    """``(host name, site path relative to host or None, traceable)`` for an action; successful traces are kept in
    ``cache`` for the rewrite itself."""
    site = action.site
    if not isinstance(modules[site.name], nn.Conv2d):
        try:
            _trace_cached(cache, site.name, modules[site.name], set())
            return site.name, None, True
        except Exception as exc:
            reason = describe_trace_error(exc)
            attempts.setdefault(site.name, []).append((site.name, reason))
            if action.position == "residual":
                raise TraceError(f"{site.name}: cannot trace its forward ({reason}); the residual position needs "
                                 "it — use --position after or before") from None
            return site.name, None, False
    tried = attempts.setdefault(site.name, [])
    for parent in _parents(site.name):
        module = modules[parent]
        if is_container(module):
            continue
        relative = _relative(site.name, parent)
        try:
            traced = _trace_cached(cache, parent, module, _path_to(relative))
            conv_unit(traced.graph, module, relative)
            return parent, relative, True
        except RewriteError as exc:
            tried.append((parent or "(model)", str(exc)))
        except Exception as exc:
            tried.append((parent or "(model)", describe_trace_error(exc)))
    if not tried:
        raise TraceError(_only_containers_message(site.name, modules))
    detail = "; ".join(f"{name}: {reason}" for name, reason in tried)
    raise TraceError(f"{site.name}: no enclosing module could be traced ({detail})")


def _only_containers_message(conv_name: str, modules: dict[str, nn.Module]) -> str:
    """Why a conv directly inside containers (a model that is one nn.Sequential) has no host, and what works."""
    parent = conv_name.rpartition(".")[0]
    children = list(modules[parent].named_children())
    position = next(i for i, (name, _) in enumerate(children) if _relative(conv_name, parent) == name)
    last = position
    while last + 1 < len(children) and (is_norm(children[last + 1][1])
                                        or isinstance(children[last + 1][1], ACTIVATIONS)):
        last += 1
    message = (f"{conv_name}: every module around it is a container (nn.Sequential, nn.ModuleList), whose keys "
               "would be renumbered by a new child, so no graph can take the block")
    if last == position:
        return message + "; select a module after it as the site instead"
    follower = children[last][1]
    qualified = f"{parent}.{children[last][0]}" if parent else children[last][0]
    return (message + f"; select the module that ends its conv unit instead, which takes the block after its own "
            f"forward: --after {type(follower).__name__} (every {type(follower).__name__}) or "
            f"--after 're:^{re.escape(qualified)}$'")


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, attr, module)


_PLAIN_TYPES = (bool, int, float, str, tuple, list, type(None))


def _carry_plain_attributes(old: nn.Module, new: nn.Module) -> None:
    """Give the block that replaces ``old`` the public plain-data attributes of ``old`` that it lacks: a parent that
    routes by its children's attributes (Ultralytics reads each layer's ``f`` and ``i``) still finds them."""
    for key, value in vars(old).items():
        if not key.startswith("_") and key != "training" and isinstance(value, _PLAIN_TYPES) and not hasattr(new, key):
            setattr(new, key, value)


def _check_replaced_untouched(replaced: Iterable[Action], hosts: Sequence[str]) -> None:
    """A module that a block replaces takes no other action inside it: that block would go with it."""
    for action in replaced:
        name = action.site.name
        inside = [host for host in hosts if host == name or host.startswith(name + ".")]
        if inside:
            raise RewriteError(f"{name}: it is replaced by {action.block!r}, and another rule puts a block inside it "
                               f"({inside[0]}); insert around the new block in a second surgery instead")


def rewrite(model: nn.Module, plan: Plan, traces: Mapping[str, TracedModule] | None = None) -> RewriteResult:
    """Apply ``plan`` to ``model`` **in place** and return what was inserted.

    All-or-nothing: every host is traced, every block built and every graph edited before the model is touched,
    so an error leaves the model exactly as it was. Hosts are handled deepest first; each is traced once, with
    every action that lands in it.

    Args:
        model: the model to patch.
        plan: the actions, from :func:`~surgeon.match.make_plan`.
        traces: traces of modules of ``model`` with every child a leaf (:attr:`SiteTable.traces`), by qualified
            name; a host found here is rewritten from a copy of its trace instead of being traced again.

    Raises:
        TraceError: a site that no enclosing module lets us rewrite (the message lists each module tried).
        RewriteError: an action that cannot be realised (e.g. a forward that returns a tuple, for ``after``).
        BlockError: a block that cannot be built with the given options.
    """
    with watch_training_reads():  # installed once for every trace below
        return _rewrite(model, plan, traces)


def _rewrite(model: nn.Module, plan: Plan, traces: Mapping[str, TracedModule] | None) -> RewriteResult:
    modules = dict(model.named_modules())
    attempts: dict[str, list[tuple[str, str]]] = {}
    per_host: dict[str, list[tuple[int, Action, str | None]]] = defaultdict(list)
    wrapped: dict[str, list[tuple[int, Action]]] = defaultdict(list)
    cache: _TraceCache = {
        (name, frozenset()): TracedModule(traced.module, [copy.deepcopy(graph) for graph in traced.graphs])
        for name, traced in (traces or {}).items() if modules.get(name) is traced.module
    }
    replaced: dict[int, Action] = {}
    for i, action in enumerate(plan.actions):
        if action.op == "replace" and action.site.kind == "module":
            replaced[i] = action
            continue
        host, relative, traceable = _choose_host(action, modules, attempts, cache)
        (per_host[host].append((i, action, relative)) if traceable else wrapped[host].append((i, action)))
    _check_replaced_untouched(replaced.values(), [*per_host, *wrapped])

    results: dict[int, Inserted] = {}
    replacements: list[tuple[str, nn.Module]] = []
    for i, action in replaced.items():
        name = action.site.name
        old = modules[name]
        block = build_insert(action, old, name)
        _carry_plain_attributes(old, block)
        replacements.append((name, block))
        results[i] = Inserted(action, name, name.rpartition(".")[0], "module",
                              sum(p.numel() for p in block.parameters()), [f"{name}.{key}" for key in old.state_dict()])
    commits: list[tuple[nn.Module, list[tuple[str, nn.Module]], str]] = []
    for host_name in sorted(per_host, key=lambda name: name.count(".") + bool(name), reverse=True):
        host = modules[host_name]
        jobs = per_host[host_name]
        through = set().union(*(_path_to(rel) for _, _, rel in jobs if rel is not None))
        traced = cache.pop((host_name, frozenset(through)), None) or trace_module(host, through)
        mode = "graph-dual" if traced.mode_dependent else "graph"
        assignments: list[tuple[str, nn.Module]] = []
        for i, action, relative in jobs:
            if action.op == "replace":
                edit = swap_unit(action, traced.graphs, host, relative, host_name)
                assignments += edit.assignments
                results[i] = Inserted(action, action.site.name, host_name, "graph",
                                      sum(p.numel() for p in edit.module.parameters()), edit.removed_keys,
                                      edit.inherited)
                continue
            suffix = f"_{relative.replace('.', '_')}" if relative else ""
            attr = _unique_name(host, f"{_block_label(action.block)}_{action.position}{suffix}",
                                {name for name, _ in assignments})
            block = build_insert(action, host, _qualify(host_name, attr))
            assignments.append((attr, block))
            for graph in traced.graphs:
                _insert_node(graph, action, attr, relative, host)
            results[i] = Inserted(action, _qualify(host_name, attr), host_name, mode,
                                  sum(p.numel() for p in block.parameters()))
        for graph in traced.graphs:
            _residual_add_in_place(graph, host, dict(assignments))
            graph.lint()
        commits.append((host, assignments, graph_source(traced.graphs)))

    for host_name, jobs in wrapped.items():
        host = modules[host_name]
        before, after = wrapped_blocks(host)
        if is_patched(host) and not (before or after):
            raise RewriteError(f"{host_name}: was rewritten from its graph before but no longer traces")
        assignments = []
        for i, action in jobs:
            attr = _unique_name(host, f"{_block_label(action.block)}_{action.position}",
                                {name for name, _ in assignments})
            block = build_insert(action, host, _qualify(host_name, attr))
            assignments.append((attr, block))
            (before if action.position == "before" else after).append(attr)
            results[i] = Inserted(action, _qualify(host_name, attr), host_name, "wrapper",
                                  sum(p.numel() for p in block.parameters()))
        commits.append((host, assignments, wrapper_source(before, after)))

    for host, assignments, source in commits:
        for path, module in assignments:
            _set_module(host, path, module)
        patch_class(host, source)
    for name, block in replacements:  # a parent calls its child by name at run time, through a rewritten graph or not
        _set_module(model, name, block)
    return RewriteResult([results[i] for i in sorted(results)], attempts)


def recipe_from_rewrite(result: RewriteResult, base: str | None, input_shape: Sequence[int],
                        arch_args: dict[str, Any] | None = None) -> Recipe:
    """The recipe of a rewrite: one step per inserted module, in plan order."""
    steps = []
    for item in result.inserted:
        action = item.action
        steps.append(RecipeStep(site=action.site.name, kind=action.site.kind,
                                channels=int(action.site.channels_at(action.position)), op=action.op,
                                position=action.position, block=action.block, args=dict(action.args),
                                init=action.init, module=item.key, rule=action.rule,
                                removed_keys=list(item.removed_keys)))
    return Recipe(base, tuple(input_shape), steps, dict(arch_args or {}))
