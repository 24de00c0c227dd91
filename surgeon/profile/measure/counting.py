"""Counting MACs and FLOPs at dispatch level, including the element-wise work attention blocks are made of.

Common counters (fvcore, thop, ptflops, ``FlopCounterMode``) count convolutions and matrix products and leave out
the sigmoid, the broadcast ``x * gate`` multiply and the mean/amax pooling of an attention block, so a block looks
free. Here every aten operator that runs during one forward pass is seen by a ``TorchDispatchMode`` (functional
calls included, not only modules) and priced by the table below; an operator that has neither a formula nor a place
in the list of free operators is reported in :attr:`CountResult.uncounted`, never silently treated as free.

Conventions: see :mod:`.formulas` (the price list) and :data:`CONVENTIONS`, which the report prints.

Execution: by default (``execution="auto"``) the forward runs on the meta device: every tensor an operator receives
is replaced by a meta tensor of the same shape, so only shapes are computed and counting a large model costs
milliseconds, not a forward pass. A model whose Python code needs values (``.item()``, ``if x.max() > 0``,
``nonzero``) or an operator without a meta kernel makes the meta run fail, and the count is redone with a real
forward. Attributes that the forward assigns with a meta tensor in them (lazily built caches, lazily registered
buffers) are put back afterwards; a cache filled in place inside a container attribute is not: count such a model
with ``execution="real"``. Code that branches on ``x.device`` sees ``meta`` (``nn.MultiheadAttention`` and
``scaled_dot_product_attention`` then take their decomposed paths instead of the fused kernels: the attention
formulas are written to count those paths alike).

Limits: counts follow the ops that actually run, so they depend on the input shape and on the branches taken;
ops in a custom kernel or a compiled graph are priced only if the dispatcher sees them; a module's share is known
only when it is called (``module(x)``), not when its ``forward`` is called directly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_any, tree_map_only

from ...tensors import eval_mode
from .formulas import CONVENTIONS, ELEMENTWISE, FORMULAS, FREE, Formula, arg

__all__ = ["CONVENTIONS", "CountResult", "ModuleCount", "OpCount", "count_ops"]


@dataclass
class OpCount:
    """Cost of one aten operator summed over its calls."""

    calls: int = 0
    macs: int = 0
    flops: int = 0


@dataclass
class ModuleCount:
    """Cost of one module's forward calls, children included.

    Attributes:
        type_name: the module's class name.
        calls: forward calls during the pass.
        macs: multiply-accumulates of those calls.
        flops: FLOPs of those calls.
        input_shape: shape of the first tensor the first call received (``None`` if it took none or did not run).
        uncounted_calls: calls of uncounted operators inside the module: its FLOPs are a lower bound if non-zero.
    """

    type_name: str
    calls: int = 0
    macs: int = 0
    flops: int = 0
    input_shape: tuple[int, ...] | None = None
    uncounted_calls: int = 0


@dataclass
class CountResult:
    """MACs and FLOPs of one forward pass, counted under :data:`CONVENTIONS`.

    Attributes:
        macs: multiply-accumulates of the whole forward.
        flops: 2 x ``macs`` plus the element-wise, reduction, pooling, softmax and normalisation work.
        per_module: every module of the model by qualified name (``""`` is the root), children included; modules
            that did not run have ``calls == 0``.
        by_operator: per aten operator (``"aten.convolution"``, ``"aten.mul"``, ...), counted ops only.
        uncounted: operators without a formula that are not known to be free, with their number of calls.
        execution: ``"meta"`` if shapes alone were propagated, ``"real"`` if the forward ran on real tensors.
    """

    macs: int
    flops: int
    execution: str = "real"
    per_module: dict[str, ModuleCount] = field(default_factory=dict)
    by_operator: dict[str, OpCount] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)


# --- meta outputs without meta kernels -----------------------------------------------------------------------
# Several meta kernels are Python references that take milliseconds (hardtanh_, batch norm, addmm), slower than the
# real op on a small tensor. For these ops the output's shape, dtype and strides are known outright.

_NOT_SAME_DTYPE = set("""
    eq ne lt le gt ge logical_and logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor bitwise_not
    where isnan isinf isfinite
""".split())
_SAME_DTYPEELEMENTWISE = {name for name in ELEMENTWISE if name not in _NOT_SAME_DTYPE} | {"addcmul", "addcdiv",
                                                                                            "lerp"}


def _meta_shortcut(func: torch._ops.OpOverload, base: str, args: Sequence, kwargs: dict) -> object:
    """The output ``func`` would return on these meta arguments, or ``None`` to run its meta kernel."""
    first = args[0] if args else None
    if not isinstance(first, Tensor) or not first.is_floating_point() or "out" in kwargs:
        return None  # an out= variant returns the tensor it was given
    others = [value for value in chain(args[1:], kwargs.values()) if isinstance(value, Tensor)]
    if base in _SAME_DTYPEELEMENTWISE:
        if func._overloadpacket.__name__ != base:
            return first  # in place: the result is ``self``, whatever broadcasts into it
        same_layout = all(
            (o.shape, o.dtype, o.stride()) == (first.shape, first.dtype, first.stride()) for o in others
        )
        return torch.empty_like(first) if same_layout else None
    if any(o.dtype != first.dtype for o in others):
        return None
    if base in ("mm", "addmm", "bmm"):
        a, b = (first, others[0]) if base != "addmm" else (others[0], others[1])
        return first.new_empty((*a.shape[:-1], b.shape[-1]))
    evaluating = base == "_native_batch_norm_legit_no_training" or (
        base == "native_batch_norm" and not arg(args, kwargs, 5, "training", True)
    )
    if evaluating and first.dim() >= 2:
        channels = first.shape[1]
        return torch.empty_like(first), first.new_empty((channels,)), first.new_empty((channels,))
    return None


# --- counting ---------------------------------------------------------------------------------------------------

_COUNTED, _FREE_OP, _UNKNOWN = "counted", "free", "unknown"


def _classify(func: torch._ops.OpOverload) -> tuple[str, Formula | None, str, str]:
    """Say how an operator is priced: by a formula, as free, or unknown (decomposed if possible, else listed).

    Returns the kind, the formula, the operator's name for the report and its functional (not in-place) name.
    """
    name = func._overloadpacket.__name__
    key = f"{func.namespace}.{name}"
    # in-place variants (relu_, add_) cost what their functional forms cost
    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    if func.namespace not in ("aten", "prim"):
        return _UNKNOWN, None, key, base
    formula = FORMULAS.get(name) or FORMULAS.get(base)
    if formula is not None:
        return _COUNTED, formula, key, base
    if name in FREE or base in FREE or func.is_view or torch.Tag.inplace_view in func.tags:
        return _FREE_OP, None, key, base
    return _UNKNOWN, None, key, base


class _OpCounter(TorchDispatchMode):
    """Prices every aten operator that runs, attributing it to the modules on the call stack."""

    def __init__(self, module_counts: dict[str, ModuleCount], on_meta: bool) -> None:
        super().__init__()
        self.module_counts = module_counts
        self.on_meta = on_meta
        self.active_modules: list[str] = []
        self.by_operator: dict[str, OpCount] = {}
        self.uncounted: Counter[str] = Counter()
        self._classified: dict[torch._ops.OpOverload, tuple[str, Formula | None, str, str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on_meta:
            args, kwargs = tree_map_only(Tensor, _to_meta, (args, kwargs))
        classified = self._classified.get(func)
        if classified is None:
            classified = self._classified[func] = _classify(func)
        kind, formula, key, base = classified
        if kind == _UNKNOWN:
            # a composite op (matmul, linear, einsum outside autograd) is priced through the ops it lowers to
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
            self.uncounted[key] += 1
            for name in set(self.active_modules):
                self.module_counts[name].uncounted_calls += 1
        out = _meta_shortcut(func, base, args, kwargs) if self.on_meta and kind == _COUNTED else None
        if out is None:
            out = func(*args, **kwargs)
        if kind == _COUNTED:
            macs, extra_flops = formula(func, args, kwargs, out)
            self._record(key, int(macs), int(2 * macs + extra_flops))
        return out

    def _record(self, key: str, macs: int, flops: int) -> None:
        op = self.by_operator.get(key)
        if op is None:
            op = self.by_operator[key] = OpCount()
        op.calls += 1
        op.macs += macs
        op.flops += flops
        for name in set(self.active_modules):  # a module re-entered recursively counts once
            self.module_counts[name].macs += macs
            self.module_counts[name].flops += flops


@contextmanager
def _track_modules(counter: _OpCounter, names: dict[int, str]) -> Iterator[None]:
    """Keep ``counter.active_modules`` equal to the qualified names of the model's modules now running."""

    def enter(module: nn.Module, args: object) -> None:
        name = names.get(id(module))
        if name is not None:
            counter.active_modules.append(name)
            count = counter.module_counts[name]
            if count.calls == 0:
                first = next((value for value in args if isinstance(value, Tensor)), None)
                count.input_shape = tuple(first.shape) if first is not None else None
            count.calls += 1

    def leave(module: nn.Module, args: object, output: object) -> None:
        name = names.get(id(module))
        if name is not None and name in counter.active_modules:
            stack = counter.active_modules
            del stack[len(stack) - 1 - stack[::-1].index(name)]

    # global hooks, removed on exit: the model itself is not touched
    handles = [
        nn.modules.module.register_module_forward_pre_hook(enter),
        nn.modules.module.register_module_forward_hook(leave, always_call=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _to_meta(tensor: Tensor) -> Tensor:
    return tensor if tensor.is_meta else tensor.to("meta")


def _holds_meta(value: object) -> bool:
    return tree_any(lambda leaf: isinstance(leaf, Tensor) and leaf.is_meta, value)


@contextmanager
def _restore_meta_attributes(model: nn.Module) -> Iterator[None]:
    """Undo attribute assignments that leave a meta tensor in a module (a lazily built cache, a lazy buffer).

    Where one does, every attribute the module assigned in that forward is undone with it: a cache's key goes with
    its values (RT-DETR's decoder keeps the feature-map ``shapes`` its meta ``anchors`` were built for).
    """
    saved = [(module, dict(module.__dict__), dict(module._buffers)) for module in model.modules()]
    try:
        yield
    finally:
        for module, attributes, buffers in saved:
            changes = [(current, before, key) for current, before in ((module.__dict__, attributes),
                                                                      (module._buffers, buffers))
                       for key, value in current.items() if key != "_modules" and before.get(key) is not value]
            if not any(_holds_meta(current[key]) for current, _, key in changes):
                continue
            for current, before, key in changes:
                if key in before:
                    current[key] = before[key]
                else:
                    del current[key]


def count_ops(model: nn.Module, inputs: tuple[Tensor, ...] | Tensor, *, execution: str = "auto") -> CountResult:
    """Count the MACs and FLOPs of one forward pass of ``model`` on ``inputs`` under :data:`CONVENTIONS`.

    The forward runs in eval mode under ``torch.no_grad``; the train/eval mode of every submodule is restored
    afterwards and the model is not otherwise modified (see the module docstring for the meta run's limits).

    Args:
        model: the module to count.
        inputs: positional inputs of ``model``'s forward (a single tensor is accepted too).
        execution: ``"auto"`` (meta, falling back to real), ``"meta"`` (shapes only; errors propagate) or
            ``"real"`` (a real forward pass).

    Returns:
        Totals, per-module and per-operator counts, and the operators that could not be priced.
    """
    if execution not in ("auto", "meta", "real"):
        raise ValueError(f"execution must be 'auto', 'meta' or 'real', got {execution!r}")
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    if execution != "real":
        try:
            return _count(model, inputs, on_meta=True)
        except Exception:
            if execution == "meta":
                raise
    return _count(model, inputs, on_meta=False)


def _count(model: nn.Module, inputs: tuple[Tensor, ...], on_meta: bool) -> CountResult:
    names = {id(module): name for name, module in model.named_modules()}
    module_counts = {name: ModuleCount(type(module).__name__) for name, module in model.named_modules()}
    counter = _OpCounter(module_counts, on_meta)
    guard = _restore_meta_attributes(model) if on_meta else nullcontext()
    with torch.no_grad(), eval_mode(model), guard, _track_modules(counter, names), counter:
        model(*inputs)
    macs = sum(op.macs for op in counter.by_operator.values())
    flops = sum(op.flops for op in counter.by_operator.values())
    return CountResult(
        macs=macs,
        flops=flops,
        per_module=module_counts,
        by_operator=dict(sorted(counter.by_operator.items(), key=lambda item: -item[1].flops)),
        uncounted=dict(counter.uncounted.most_common()),
        execution="meta" if on_meta else "real",
    )
