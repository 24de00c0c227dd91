"""Find every place a block can go: residual units, convolutions, and any module with a 4-D output.

One probe forward pass in eval mode under ``no_grad`` measures shapes (the model's BatchNorm statistics are not
touched and every train/eval flag is restored); each module that holds a convolution is traced on its own with
its children as leaves to decide, from the graph, whether it is a residual unit.

Stages: residual units in execution order, grouped while their output resolution stays the same; numbered from 1
(torchvision's ``layer1`` is stage 1). ``index`` counts units within a stage from 0.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.fx as fx
from torch import nn

from .tensors import default_input_shape, eval_mode, flatten_outputs, probe_guard, probe_input
from .trace import (
    TracedModule,
    contains_conv,
    describe_trace_error,
    find_residual_add,
    is_container,
    trace_module,
    watch_training_reads,
)

__all__ = ["POSITIONS", "Position", "Site", "SiteTable", "find_sites", "probe_input"]

SiteKind = Literal["block", "conv", "module"]
Position = Literal["residual", "after", "before"]
POSITIONS: tuple[Position, ...] = ("residual", "after", "before")


@dataclass(frozen=True)
class Site:
    """One candidate place for surgery.

    Attributes:
        name: qualified module name (``layer3.1``, ``features.2.conv.1.0``).
        kind: ``block`` (residual unit), ``conv`` (an ``nn.Conv2d``) or ``module`` (anything else with 4-D I/O).
        cls: class name of the module.
        in_channels, out_channels: channels of the module's input and output.
        in_size, out_size: spatial size (H, W) of input and output.
        stride: spatial reduction from input to output (1 if unchanged).
        stage, index: stage number (from 1) and position within it, for residual units and what they contain.
        residual_channels: channels at the skip addition (residual units only).
        kernel_size, groups, dilation: convolution settings (conv sites only).
        order: execution order of the module's first call in the probe pass.
    """

    name: str
    kind: SiteKind
    cls: str
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    stride: int
    stage: int | None = None
    index: int | None = None
    residual_channels: int | None = None
    kernel_size: tuple[int, int] | None = None
    groups: int | None = None
    dilation: tuple[int, int] | None = None
    order: int = 0

    @property
    def channels(self) -> int:
        return self.out_channels

    def channels_at(self, position: Position | None) -> int:
        """Channels of the tensor a block at ``position`` sees: the input's (``before``), the residual branch's at
        the skip addition (``residual``), else the output's (``after``, and a swap's)."""
        if position == "before":
            return self.in_channels
        if position == "residual":
            return self.residual_channels or self.out_channels
        return self.out_channels

    def size_at(self, position: Position | None) -> tuple[int, int]:
        """Spatial size (H, W) of the tensor a block at ``position`` sees."""
        return self.in_size if position == "before" else self.out_size


@dataclass
class SiteTable:
    """Result of :func:`find_sites`.

    Attributes:
        sites: every site in execution order.
        input_shape: the probe input's shape.
        untraceable: modules that hold a convolution but could not be traced, with the reason.
        probe_outputs: the model's eval-mode output tensors on the probe batch (flattened), so that verification
            needs no second forward pass of the original model.
        traces: the trace of each residual unit (all its children leaves), which the rewrite of that unit starts
            from instead of tracing it again.
    """

    sites: list[Site]
    input_shape: tuple[int, ...]
    untraceable: dict[str, str] = field(default_factory=dict)
    probe_outputs: list[torch.Tensor] = field(default_factory=list, repr=False)
    traces: dict[str, TracedModule] = field(default_factory=dict, repr=False, compare=False)

    def by_name(self) -> dict[str, Site]:
        return {site.name: site for site in self.sites}

    def of_kind(self, kind: SiteKind) -> list[Site]:
        return [site for site in self.sites if site.kind == kind]


@dataclass
class _Record:
    order: int
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


class _ShapeRecorder(fx.Interpreter):
    """Runs a residual unit's graph to read the shape of the branch tensor at the skip addition."""

    def __init__(self, module: nn.Module, graph: fx.Graph, target: fx.Node) -> None:
        super().__init__(fx.GraphModule(module, graph), garbage_collect_values=True)
        self.target = target
        self.shape: tuple[int, ...] | None = None

    def run_node(self, n: fx.Node) -> object:
        result = super().run_node(n)
        if n is self.target and isinstance(result, torch.Tensor):
            self.shape = tuple(result.shape)
        return result


def _folds_into_one_conv(module: nn.Module) -> bool:
    """A module its framework re-parameterises into a single convolution for inference (Ultralytics' ``RepConv``
    and ``RepVGGDW``, whose parallel conv branches ``fuse()`` folds into one kernel and runs by ``forward_fuse``): its
    addition joins conv branches, not a skip, and a block on one branch would be folded away, so it is no residual
    unit."""
    return callable(getattr(module, "forward_fuse", None)) and sum(
        isinstance(m, nn.Conv2d) for m in module.modules()) > 1


def _residual_candidates(
    model: nn.Module,
) -> tuple[dict[str, tuple[fx.Graph, fx.Node]], dict[str, str], dict[str, TracedModule]]:
    """Trace each module that holds a convolution; keep those whose graph has a residual addition (and its trace)."""
    residual: dict[str, tuple[fx.Graph, fx.Node]] = {}
    traces: dict[str, TracedModule] = {}
    untraceable: dict[str, str] = {}
    with watch_training_reads():  # installed once for every trace below
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) or is_container(module) or not contains_conv(module):
                continue
            if not any(True for _ in module.children()) or _folds_into_one_conv(module):
                continue
            try:
                traced = trace_module(module)
            except Exception as exc:  # any fx failure is a fact about the user's module, reported per module
                untraceable[name] = describe_trace_error(exc)
                continue
            found = find_residual_add(traced.graph, module)
            if found is not None:
                residual[name] = (traced.graph, found[1])
                traces[name] = traced
    return residual, untraceable, traces


def _positional(module: nn.Module, args: tuple, kwargs: dict[str, object]) -> tuple | None:
    """The call's arguments in the order of the traced graph's placeholders (the forward's parameters), since a
    unit may be called with keywords (timm's CoaT: ``blk(x, size=(H, W))``); ``None`` if they do not bind."""
    if not kwargs:
        return args
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return tuple(bound.arguments.values())


def _pinned_violation(graph: fx.Graph, inputs: tuple) -> str | None:
    """Why this call does not fit the unit's graph, or ``None``: a parameter that tracing fixed to ``None`` (fx
    guards it with ``_assert_is_none``) gets a value. timm's DLA calls some bottlenecks with ``shortcut=tensor``;
    their graph, traced with ``shortcut=None``, would refuse to run once it became their forward."""
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        guarded = any(user.op == "call_function" and getattr(user.target, "__name__", "") == "_assert_is_none"
                      for user in node.users)
        if guarded and position < len(inputs) and inputs[position] is not None:
            name = re.sub(r"_\d+$", "", str(node.target))
            return f"called with {name}=<value>, which its traced forward fixes to None"
    return None


def _branch_module(name: str, graph: fx.Graph, branch: fx.Node) -> str | None:
    """The qualified name of the module whose output is the branch tensor, if it is called once in the unit: then
    its recorded output shape is the branch's shape and the unit need not be re-run."""
    if branch.op != "call_module":
        return None
    if sum(1 for node in graph.nodes if node.op == "call_module" and node.target == branch.target) != 1:
        return None
    return f"{name}.{branch.target}" if name else str(branch.target)


def find_sites(model: nn.Module, input_shape: Sequence[int] | None = None) -> SiteTable:
    """List every site of ``model`` with its shapes, measured on a probe batch of ``input_shape``.

    The model is not modified: it runs once in eval mode under ``no_grad`` and every submodule's train/eval
    flag is restored afterwards.

    Args:
        model: the model.
        input_shape: the probe batch's shape; ``None`` for the model's declared input size (see
            :func:`~surgeon.tensors.default_input_shape`).

    Raises:
        ModelForwardError: the model raises on the probe batch (it runs only at another input size, say).
    """
    input_shape = tuple(int(v) for v in input_shape) if input_shape is not None else default_input_shape(model)
    residual, untraceable, traces = _residual_candidates(model)
    branch_modules = {name: _branch_module(name, graph, branch) for name, (graph, branch) in residual.items()}
    records: dict[str, _Record] = {}
    calls: dict[str, int] = {}
    branch_shapes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}
    busy = [False]
    rejected: dict[str, str] = {}  # residual units whose probe call does not fit their traced graph

    def pre_hook(module: nn.Module, args: tuple) -> None:
        if busy[0]:
            return
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        if name not in records:
            tensor = _first_tensor(args)
            records[name] = _Record(order=len(records), in_shape=tuple(tensor.shape) if tensor is not None else None)

    def post_hook(module: nn.Module, args: tuple, kwargs: dict[str, object], output: object) -> None:
        if busy[0]:
            return
        name = names[module]
        record = records[name]
        if record.out_shape is None:
            tensor = _first_tensor(output)
            record.out_shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
        if name not in residual or name in rejected:
            return
        inputs = _positional(module, args, kwargs)
        graph, branch = residual[name]
        violation = "its call's arguments do not bind to its forward" if inputs is None else _pinned_violation(
            graph, inputs)
        if violation is not None:
            rejected[name] = violation
            return
        if branch_modules[name] is None and name not in branch_shapes:
            recorder = _ShapeRecorder(module, graph, branch)
            busy[0] = True
            try:
                recorder.run(*inputs)
            except Exception as exc:  # the unit's graph does not replay on these inputs: report, do not abort
                untraceable[name] = f"cannot replay its graph to measure the residual branch ({exc})"
            finally:
                busy[0] = False
            if recorder.shape is not None:
                branch_shapes[name] = recorder.shape

    handles = []
    with probe_guard(model, input_shape):  # outside the try: the hooks are gone when it reruns the model alone
        try:
            for module in names:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
            with torch.no_grad(), eval_mode(model):
                outputs = flatten_outputs(model(probe_input(input_shape, model)))
        finally:
            for handle in handles:
                handle.remove()

    for name in rejected:
        branch_shapes.pop(name, None)
    untraceable.update(rejected)
    for name, module_name in branch_modules.items():
        record = records.get(module_name) if module_name and name not in rejected else None
        if record is not None and record.out_shape is not None and calls.get(module_name) == calls.get(name):
            branch_shapes[name] = record.out_shape
    sites = _build_sites(model, records, residual, branch_shapes)
    blocks = {site.name for site in sites if site.kind == "block"}
    return SiteTable(sites, tuple(input_shape), untraceable, outputs, {k: v for k, v in traces.items() if k in blocks})


def _feature_map_dims(records: dict[str, _Record], modules: dict[str, nn.Module]) -> tuple[set[int], set[tuple]]:
    """Channel counts and spatial sizes of the tensors that convolutions read and write: a 4-D tensor whose
    dimension 1 is not such a channel count, or whose last two are not such a size, is not an NCHW feature map."""
    channels: set[int] = set()
    sizes: set[tuple] = set()
    for name, record in records.items():
        if isinstance(modules.get(name), nn.Conv2d) and record.in_shape is not None and record.out_shape is not None:
            for shape in (record.in_shape, record.out_shape):
                channels.add(shape[1])
                sizes.add(tuple(shape[2:]))
    return channels, sizes


def _build_sites(
    model: nn.Module,
    records: dict[str, _Record],
    residual: dict[str, tuple[fx.Graph, fx.Node]],
    branch_shapes: dict[str, tuple[int, ...]],
) -> list[Site]:
    modules = dict(model.named_modules())
    channels, sizes = _feature_map_dims(records, modules)
    sites: list[Site] = []
    for name, record in sorted(records.items(), key=lambda item: item[1].order):
        if not name or record.in_shape is None or record.out_shape is None:
            continue
        if len(record.in_shape) != 4 or len(record.out_shape) != 4:
            continue
        module = modules[name]
        if not isinstance(module, nn.Conv2d) and name not in branch_shapes and not all(
                shape[1] in channels and tuple(shape[2:]) in sizes for shape in (record.in_shape, record.out_shape)):
            continue  # 4-D but not an NCHW feature map: Swin's NHWC tokens, attention's (B, heads, N, dim)
        in_size, out_size = tuple(record.in_shape[2:]), tuple(record.out_shape[2:])
        stride = max(1, in_size[0] // out_size[0]) if out_size[0] else 1
        if name in branch_shapes:  # a residual unit: its strided convs tell the stride even where maps are 1x1
            stride = max([stride] + [m.stride[0] for m in module.modules() if isinstance(m, nn.Conv2d)])
        common = dict(
            name=name, cls=type(module).__name__, in_channels=record.in_shape[1], out_channels=record.out_shape[1],
            in_size=in_size, out_size=out_size, stride=stride, order=record.order,
        )
        if isinstance(module, nn.Conv2d):
            sites.append(Site(kind="conv", kernel_size=tuple(module.kernel_size), groups=module.groups,
                              dilation=tuple(module.dilation), **common))
        elif name in branch_shapes and len(branch_shapes[name]) == 4:
            sites.append(Site(kind="block", residual_channels=branch_shapes[name][1], **common))
        else:
            sites.append(Site(kind="module", **common))
    return _assign_stages(sites)


def _assign_stages(sites: list[Site]) -> list[Site]:
    from dataclasses import replace

    stage_of: dict[str, tuple[int, int]] = {}
    stage, index, size = 0, 0, None
    for site in sites:
        if site.kind != "block":
            continue
        if site.out_size != size or site.stride > 1:
            stage, index, size = stage + 1, 0, site.out_size
        else:
            index += 1
        stage_of[site.name] = (stage, index)
    blocks = sorted(stage_of, key=len, reverse=True)
    result = []
    for site in sites:
        if site.name in stage_of:
            stage_no, idx = stage_of[site.name]
            result.append(replace(site, stage=stage_no, index=idx))
            continue
        owner = next((b for b in blocks if site.name.startswith(b + ".")), None)
        result.append(replace(site, stage=stage_of[owner][0]) if owner else site)
    return result
