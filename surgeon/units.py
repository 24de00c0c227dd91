"""Conv units: a convolution with the norm and activation that directly follow it, found in a traced graph, and
the graph edits that swap a unit for another operator.

A unit is what a conv site means to the surgery: ``after`` a conv goes after its activation, and a swap replaces
the whole unit. Only the nodes that directly and only consume the conv (then the norm) belong to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from .blocks import get_block
from .build import build_swap
from .errors import RewriteError
from .match import Action

__all__ = ["ACTIVATIONS", "SwapEdit", "conv_unit", "is_activation", "is_norm", "swap_unit"]

ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.PReLU, nn.Hardtanh,
    nn.SELU, nn.CELU, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh,
)
_ACTIVATION_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
                         torch.nn.functional.gelu, torch.nn.functional.hardswish, torch.sigmoid}
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_"}


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) or (
        "norm" in type(module).__name__.lower() and not isinstance(module, nn.Conv2d))


def is_activation(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), ACTIVATIONS)
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
    if len(users) == 1 and users[0].op == "call_module" and is_norm(modules.get(str(users[0].target), nn.Module())):
        unit.append(users[0])
        users = list(unit[-1].users)
    norm_acts = unit[-1] is not unit[0] and isinstance(getattr(modules[str(unit[-1].target)], "act", None), nn.Module)
    if not norm_acts and len(users) == 1 and is_activation(users[0], modules):
        unit.append(users[0])
    return unit


def _next_unit(graph: fx.Graph, host: nn.Module, unit: list[fx.Node], site: str) -> list[fx.Node]:
    """The conv unit that directly and only consumes ``unit`` (for swaps that replace two units)."""
    users = list(unit[-1].users)
    modules = dict(host.named_modules())
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(modules.get(str(users[0].target)), nn.Conv2d):
        raise RewriteError(f"{site}: a two-unit swap needs the conv unit to feed exactly one convolution")
    return conv_unit(graph, host, str(users[0].target))


def _qualify(host: str, name: str) -> str:
    return f"{host}.{name}" if host else name


@dataclass
class SwapEdit:
    """A planned swap, not yet committed.

    Attributes:
        module: the new operator.
        assignments: module assignments to make, by path relative to the host (the conv's attribute takes the new
            operator; replaced norms and convs become ``nn.Identity``, or the norm's fused activation).
        removed_keys: original keys that leave the state_dict, qualified from the model's root.
        inherited: parameters the new operator copied from the replaced units.
    """

    module: nn.Module
    assignments: list[tuple[str, nn.Module]]
    removed_keys: list[str] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)


def swap_unit(action: Action, graphs: list[fx.Graph], host: nn.Module, rel_site: str, host_name: str) -> SwapEdit:
    """Plan a swap: the selected conv's attribute will hold the new operator, and the replaced units' other modules
    leave the forward (norms become ``nn.Identity``; activations stay unless the operator applies its own).

    A swap block whose registry entry says ``units=2`` (SCBottleneck) replaces the selected conv unit and the conv
    unit it feeds. Edits ``graphs``; the returned assignments are committed by the caller.
    """
    info = get_block(action.block)
    modules = dict(host.named_modules())
    units = [conv_unit(graphs[0], host, rel_site)]
    if info.units == 2:
        units.append(_next_unit(graphs[0], host, units[0], action.site.name))
    convs = [modules[str(unit[0].target)] for unit in units]
    norms = [str(unit[1].target) if len(unit) > 1 and is_norm(modules[str(unit[1].target)]) else None
             for unit in units]
    new, inherited = build_swap(action, convs, [modules[norm] if norm else None for norm in norms])
    keep_activation = not info.replaces_activation

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
        if keep_activation and is_activation(last, modules):
            last = nodes[-2]  # the last unit's activation stays and now follows the new operator
        dropped = nodes[1:nodes.index(last) + 1]
        if dropped:
            last.replace_all_uses_with(nodes[0])
            for node in reversed(dropped):
                graph.erase_node(node)
    return SwapEdit(new, assignments, removed, inherited)
