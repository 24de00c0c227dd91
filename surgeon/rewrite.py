"""Apply a plan to a model, in place.

Each action gets a *host*: the module whose forward is rewritten. For residual units and module sites the host is
the site itself, so ``before``, ``after`` and ``residual`` are realised inside its own graph and the parent is
never traced. A conv is a leaf: its host is the smallest enclosing module that traces (containers whose forward
iterates their children are skipped, since a new child would change their length and iteration), traced through
only along the path to the conv. A site that cannot be traced still takes ``before``/``after`` blocks, applied
around its original forward.

The inserted block becomes a submodule of the host, named ``{block}_{position}`` (plus ``_{conv path}`` for conv
sites, and ``_1``, ``_2``... if taken), so its keys sit next to the host's own and no original key moves.
"""

from __future__ import annotations

import copy
import inspect
import operator
import re
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.fx as fx
from torch import nn

from .blocks import create_block, get_block
from .codegen import graph_source, is_patched, patch_class, wrapped_blocks, wrapper_source
from .errors import BlockError, RewriteError, TraceError
from .match import Action, Plan
from .trace import (
    TracedModule,
    describe_trace_error,
    find_residual_add,
    is_container,
    trace_module,
    watch_training_reads,
)

__all__ = ["Inserted", "RewriteResult", "rewrite", "conv_unit", "planned_parameters"]

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.Hardtanh,
    nn.SELU, nn.CELU, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh,
)
_ACTIVATION_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
                         torch.nn.functional.gelu, torch.nn.functional.hardswish, torch.sigmoid}
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_"}


@dataclass
class Inserted:
    """One realised action.

    Attributes:
        action: the plan's action.
        key: qualified name of the new module (its state_dict keys start with ``key + "."``).
        host: qualified name of the module whose forward now calls it.
        mode: ``graph`` (rewritten fx graph), ``graph-dual`` (separate train/eval graphs) or ``wrapper``.
        params: parameters the new module holds.
        removed_keys: original keys that a swap removed (swaps only).
        inherited: parameters a swap copied from the replaced conv unit.
    """

    action: Action
    key: str
    host: str
    mode: Literal["graph", "graph-dual", "wrapper"]
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


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) or (
        "norm" in type(module).__name__.lower() and not isinstance(module, nn.Conv2d))


def _is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _ACTIVATIONS)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def conv_unit(graph: fx.Graph, host: nn.Module, conv_target: str) -> list[fx.Node]:
    """The conv's node followed by the norm and activation nodes that directly and only consume it."""
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == conv_target]
    if len(calls) != 1:
        raise RewriteError(f"{conv_target} is called {len(calls)} times in its enclosing module's forward")
    modules = dict(host.named_modules())
    unit = [calls[0]]
    users = list(unit[-1].users)
    if len(users) == 1 and users[0].op == "call_module" and _is_norm(modules.get(str(users[0].target), nn.Module())):
        unit.append(users[0])
        users = list(unit[-1].users)
    norm_acts = unit[-1] is not unit[0] and isinstance(getattr(modules[str(unit[-1].target)], "act", None), nn.Module)
    if not norm_acts and len(users) == 1 and _is_activation(users[0], modules):
        unit.append(users[0])
    return unit


def _unique_name(host: nn.Module, base: str, taken: set[str]) -> str:
    name, i = base, 0
    while hasattr(host, name) or name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _block_label(block: str) -> str:
    return block.rsplit(":", 1)[-1].lower() if ":" in block else block


@contextmanager
def _seeded(key: str) -> Iterator[None]:
    """Initialise a new block from a seed derived from its qualified name and block, leaving the caller's RNG as it
    was: the same surgery gives bit-identical weights whatever the global RNG state."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(zlib.crc32(key.encode()))  # the CPU generator only: blocks are built on CPU
    try:
        yield
    finally:
        torch.set_rng_state(state)


def _build_block(action: Action, channels: int, size: tuple[int, int], like: nn.Module, key: str) -> nn.Module:
    info = get_block(action.block)
    args = dict(action.args)
    if "feat_size" in inspect.signature(info.factory).parameters and "feat_size" not in args:
        args["feat_size"] = tuple(size)
    if action.op == "replace":
        raise AssertionError("swaps are built by _swap")
    if info.kind != "insert":
        raise RewriteError(f"{action.site.name}: {info.name!r} is a swap; use `swap` or a replace rule")
    with _seeded(f"{key}|{action.block}"):
        block = _like(create_block(info, channels, init=action.init, **args), like)
    if not info.factory.__module__.startswith("surgeon.blocks."):
        _check_shape_contract(info.name, block, channels, size, like)
    return block


def _check_shape_contract(name: str, block: nn.Module, channels: int, size: tuple[int, int], like: nn.Module) -> None:
    """A user block must map (N, C, H, W) to the same shape; check once on a zero batch at the site's size."""
    reference = next(iter(like.parameters()), None)
    probe = torch.zeros(1, channels, *size, device=reference.device if reference is not None else None)
    training = block.training
    try:
        with torch.no_grad():
            out = block.eval()(probe)
    except Exception as exc:
        raise BlockError(f"block {name!r} fails on a (1, {channels}, {size[0]}, {size[1]}) input: {exc}") from None
    finally:
        block.train(training)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BlockError(f"block {name!r} maps {tuple(probe.shape)} to {shape}; an inserted block must keep the "
                         "input's shape (N, C, H, W)")


def _like(block: nn.Module, like: nn.Module) -> nn.Module:
    reference = next(iter(like.parameters()), None)
    if reference is None:
        reference = next(iter(like.buffers()), None)
    if reference is not None:
        block = block.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else None)
    return block.train(like.training)


def planned_parameters(action: Action) -> int | None:
    """Parameters of the block an action will add, built on the meta device (no memory, no initialisation); for a
    swap, those of the new operator. ``None`` if it cannot be built from the site's shapes alone."""
    info = get_block(action.block)
    args = dict(action.args)
    try:
        with torch.device("meta"):
            if action.op == "replace":
                parameters = inspect.signature(info.factory).parameters
                if "groups" in parameters and "groups" not in args and action.site.groups:
                    args["groups"] = action.site.groups
                block = create_block(info, action.site.in_channels, action.site.out_channels, action.site.stride,
                                     **args)
            else:
                channels, size = _site_io(action)
                if "feat_size" in inspect.signature(info.factory).parameters and "feat_size" not in args:
                    args["feat_size"] = tuple(size)
                block = create_block(info, channels, init=action.init, **args)
    except BlockError:  # bad options fail the real run; a dry run must say so too, not print a plan that cannot run
        raise
    except Exception:  # a plan is still worth printing when one block cannot be sized in advance
        return None
    return sum(p.numel() for p in block.parameters())


def _site_io(action: Action) -> tuple[int, tuple[int, int]]:
    site = action.site
    if action.position == "before":
        return site.in_channels, site.in_size
    if action.position == "residual":
        return site.residual_channels or site.out_channels, site.out_size
    return site.out_channels, site.out_size


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


def _fresh_output(module: nn.Module | None) -> bool:
    """Our own blocks return a new tensor, never their input or a view of it (user blocks might)."""
    return module is not None and type(module).__module__.startswith("surgeon.blocks.")


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
    if _fresh_output(block):
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


def _next_unit(graph: fx.Graph, host: nn.Module, unit: list[fx.Node], site: str) -> list[fx.Node]:
    """The conv unit that directly and only consumes ``unit`` (for swaps that replace two units)."""
    users = list(unit[-1].users)
    modules = dict(host.named_modules())
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(modules.get(str(users[0].target)), nn.Conv2d):
        raise RewriteError(f"{site}: a two-unit swap needs the conv unit to feed exactly one convolution")
    return conv_unit(graph, host, str(users[0].target))


def _swap(action: Action, graphs: list[fx.Graph], host: nn.Module, rel_site: str,
          host_name: str) -> tuple[Inserted, list[tuple[str, nn.Module]]]:
    """Plan a swap: the selected conv's attribute will hold the new operator, and the replaced units' other modules
    leave the forward (norms become ``nn.Identity``; activations stay unless the operator applies its own).

    A swap block with ``units = 2`` (SCBottleneck) replaces the selected conv unit and the conv unit it feeds.
    Edits ``graphs``; returns the module assignments (paths relative to ``host``) to commit.
    """
    info = get_block(action.block)
    if info.kind != "swap":
        raise RewriteError(f"{action.site.name}: {info.name!r} is not a swap block; valid swaps are registered "
                           "with kind='swap' (see `attn-surgeon blocks`)")
    modules = dict(host.named_modules())
    units = [conv_unit(graphs[0], host, rel_site)]
    if getattr(info.factory, "units", 1) == 2:
        units.append(_next_unit(graphs[0], host, units[0], action.site.name))
    convs = [modules[str(unit[0].target)] for unit in units]
    norms = [str(unit[1].target) if len(unit) > 1 and _is_norm(modules[str(unit[1].target)]) else None
             for unit in units]
    args = dict(action.args)
    if "groups" in inspect.signature(info.factory).parameters and "groups" not in args:
        args["groups"] = convs[-1].groups  # keep the replaced conv's capacity unless the user asks otherwise
    with _seeded(f"{action.site.name}|{action.block}"):
        new = create_block(info, convs[0].in_channels, convs[-1].out_channels, convs[-1].stride[0], **args)
    inherited: list[str] = []
    if hasattr(new, "inherit_conv_weights"):
        for conv, norm in zip(convs, norms):
            inherited += new.inherit_conv_weights(conv, modules[norm] if norm else None)
    new = _like(new, convs[0])
    keep_activation = not getattr(new, "replaces_activation", False)

    assignments: list[tuple[str, nn.Module]] = [(rel_site, new)]
    removed: list[str] = []
    for unit, norm in zip(units, norms):
        conv_path = str(unit[0].target)
        removed += [_qualify(_qualify(host_name, conv_path), key) for key in modules[conv_path].state_dict()]
        if conv_path != rel_site:
            assignments.append((conv_path, nn.Identity()))
        if norm is not None:
            removed += [_qualify(_qualify(host_name, norm), key) for key in modules[norm].state_dict()]
            fused_act = getattr(modules[norm], "act", None)  # timm's BatchNormAct2d carries the activation
            keep = keep_activation and unit is units[-1] and isinstance(fused_act, nn.Module)
            assignments.append((norm, fused_act if keep else nn.Identity()))

    for graph in graphs:
        chain = [conv_unit(graph, host, rel_site)]
        if len(units) == 2:
            chain.append(_next_unit(graph, host, chain[0], action.site.name))
        nodes = [node for unit in chain for node in unit]
        last = nodes[-1]
        if keep_activation and _is_activation(last, modules):
            last = nodes[-2]  # the last unit's activation stays and now follows the new operator
        dropped = nodes[1:nodes.index(last) + 1]
        if dropped:
            last.replace_all_uses_with(nodes[0])
            for node in reversed(dropped):
                graph.erase_node(node)
    inserted = Inserted(action, action.site.name, host_name, "graph", sum(p.numel() for p in new.parameters()),
                        removed_keys=removed, inherited=inherited)
    return inserted, assignments


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
    while last + 1 < len(children) and (_is_norm(children[last + 1][1])
                                        or isinstance(children[last + 1][1], _ACTIVATIONS)):
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
    for i, action in enumerate(plan.actions):
        host, relative, traceable = _choose_host(action, modules, attempts, cache)
        (per_host[host].append((i, action, relative)) if traceable else wrapped[host].append((i, action)))

    results: dict[int, Inserted] = {}
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
                results[i], swapped = _swap(action, traced.graphs, host, relative, host_name)
                assignments += swapped
                continue
            channels, size = _site_io(action)
            suffix = f"_{relative.replace('.', '_')}" if relative else ""
            attr = _unique_name(host, f"{_block_label(action.block)}_{action.position}{suffix}",
                                {name for name, _ in assignments})
            block = _build_block(action, channels, size, host, _qualify(host_name, attr))
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
            channels, size = _site_io(action)
            attr = _unique_name(host, f"{_block_label(action.block)}_{action.position}",
                                {name for name, _ in assignments})
            block = _build_block(action, channels, size, host, _qualify(host_name, attr))
            assignments.append((attr, block))
            (before if action.position == "before" else after).append(attr)
            results[i] = Inserted(action, _qualify(host_name, attr), host_name, "wrapper",
                                  sum(p.numel() for p in block.parameters()))
        commits.append((host, assignments, wrapper_source(before, after)))

    for host, assignments, source in commits:
        for path, module in assignments:
            _set_module(host, path, module)
        patch_class(host, source)
    return RewriteResult([results[i] for i in sorted(results)], attempts)
