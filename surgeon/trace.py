"""Localized tracing with torch.fx.

Only the module that encloses a site is traced, and inside it only the path down to the site is traced through:
every other submodule stays a leaf (one ``call_module`` node). A leaf's own code never enters the graph, so
untraceable siblings, ``self.training`` branches inside children, and buffers that a child reads functionally
(timm's ``BatchNormAct2d`` and its ``num_batches_tracked``) are all left alone.

Naming convention (pinned by tests): ``call_module`` targets are qualified names relative to the traced module,
``getattr`` chains in the generated code address the very same submodule objects, so the generated ``forward``
runs on the original module and every state_dict key stays where it was.

A module is traced in train mode while every read of a module's ``training`` flag is watched. Only if the traced
code read one (or a module in it overrides ``train()``, which may set other state) is it traced in eval mode too;
when the two graphs differ the patched module dispatches on ``self.training`` like torchvision's
``DualGraphModule``.
"""

from __future__ import annotations

import inspect
import math
import operator
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

__all__ = [
    "SurgeonTracer",
    "TracedModule",
    "watch_training_reads",
    "trace_module",
    "describe_trace_error",
    "find_residual_add",
    "contains_conv",
    "is_container",
]

_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")


def _timm_notrace() -> tuple[tuple[type, ...], tuple]:
    try:
        from timm.layers import _fx as timm_fx
    except ImportError:  # timm is a dependency, but keep tracing usable without it
        return (), ()
    return tuple(timm_fx.get_notrace_modules()), tuple(timm_fx.get_notrace_functions())


def _is_surgeon_block(module: nn.Module) -> bool:
    """A registered block (ours or the user's): blocks are leaves, their own code never enters a host's graph."""
    from .blocks import list_blocks  # deferred: registering the blocks is not needed until something is traced

    return isinstance(module, tuple(info.factory for info in list_blocks() if isinstance(info.factory, type)))


def is_container(module: nn.Module) -> bool:
    """Sequential/ModuleList/ModuleDict whose forward iterates children: never a host for new submodules."""
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        return True
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def contains_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class SurgeonTracer(fx.Tracer):
    """A tracer that traces through only the named path and keeps everything else a leaf.

    Args:
        trace_through: qualified names (relative to the traced root) of submodules whose forward must be traced
            into, i.e. the ancestors of a site. Every other submodule is a leaf, as are torch.nn built-ins, our
            own blocks and timm's registered no-trace modules, whatever the path says.
    """

    def __init__(self, trace_through: Collection[str] = ()) -> None:
        notrace_modules, notrace_functions = _timm_notrace()
        super().__init__(autowrap_modules=(math,), autowrap_functions=notrace_functions)
        self.trace_through = frozenset(trace_through)
        self._notrace_modules = notrace_modules

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name not in self.trace_through:
            return True
        if isinstance(m, self._notrace_modules) or _is_surgeon_block(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass
class TracedModule:
    """The graph(s) of one module's own forward.

    Attributes:
        module: the traced module (the original object, not a copy).
        graphs: one graph, or two (``[train, eval]``) when the traced code depends on the mode.
    """

    module: nn.Module
    graphs: list[fx.Graph]

    @property
    def graph(self) -> fx.Graph:
        return self.graphs[0]

    @property
    def mode_dependent(self) -> bool:
        return len(self.graphs) == 2


@contextmanager
def _training_mode(module: nn.Module, mode: bool) -> Iterator[None]:
    saved = [(m, m.training) for m in module.modules()]
    try:
        module.train(mode)
        yield
    finally:
        for m, training in saved:
            m.training = training


class _TrainingReads:
    """A data descriptor put on ``nn.Module`` for ``training`` while watching: it stores and returns the flag in the
    instance ``__dict__``, exactly where ``nn.Module`` keeps it, and notes that some code read it.

    Installed on the class, it sees every attribute read of ``training`` on every module (a data descriptor on the
    type takes precedence over the instance dict); reads by unrelated threads only make the answer more cautious.
    """

    def __init__(self) -> None:
        self.read = False

    def __get__(self, obj: object, objtype: type | None = None) -> object:
        if obj is None:
            return self
        self.read = True
        try:
            return obj.__dict__["training"]
        except KeyError:
            raise AttributeError("training") from None

    def __set__(self, obj: object, value: object) -> None:
        obj.__dict__["training"] = value


_watch_lock = threading.RLock()


@contextmanager
def watch_training_reads() -> Iterator[_TrainingReads]:
    """Put :class:`_TrainingReads` on ``nn.Module`` for the duration; nested uses share it and each sees the reads
    made inside it. Wrap a loop of traces in one, since setting a class attribute on ``nn.Module`` invalidates
    Python's attribute caches of every module class loaded (about 0.3 ms with timm imported)."""
    with _watch_lock:
        current = nn.Module.__dict__.get("training")
        if isinstance(current, _TrainingReads):
            outer, current.read = current.read, False
            try:
                yield current
            finally:
                current.read = current.read or outer
            return
        if current is not None:  # someone else defined it: do not interfere, and assume it was read
            watcher = _TrainingReads()
            watcher.read = True
            yield watcher
            return
        watcher = _TrainingReads()
        nn.Module.training = watcher  # type: ignore[assignment]
        try:
            yield watcher
        finally:
            del nn.Module.training


def _mode_may_matter(module: nn.Module) -> bool:
    """Whether switching ``module`` between train and eval may change more than the ``training`` flags: a class in
    it overrides ``train()`` or defines ``training`` itself (which would hide reads from the watcher)."""
    for m in module.modules():
        cls = type(m)
        if cls.train is not nn.Module.train:
            return True
        if any("training" in vars(base) for base in cls.__mro__ if base is not nn.Module):
            return True
    return False


def _concrete_args(module: nn.Module) -> dict[str, object] | None:
    """Pin every optional forward argument after the first to its default, so ``if mask is None`` traces."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    concrete = {
        p.name: p.default for p in params[1:]
        if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }
    return concrete or None


def _trace_once(module: nn.Module, trace_through: Collection[str]) -> fx.Graph:
    tracer = SurgeonTracer(trace_through)
    concrete = _concrete_args(module)
    try:
        return tracer.trace(module, concrete_args=concrete)
    except Exception:
        if concrete is None:
            raise
        return SurgeonTracer(trace_through).trace(module)


def trace_module(module: nn.Module, trace_through: Collection[str] = ()) -> TracedModule:
    """Trace ``module``'s own forward, leaving every submodule outside ``trace_through`` a leaf.

    The module is not modified: train/eval flags of every submodule are restored.

    Raises:
        Exception: whatever torch.fx raised; :func:`describe_trace_error` turns it into one line.
    """
    with _training_mode(module, True), watch_training_reads() as reads:
        train_graph = _trace_once(module, trace_through)
        read = reads.read  # before leaving: an enclosing watch gets the reads back on exit
    if not read and not _mode_may_matter(module):
        return TracedModule(module, [train_graph])  # nothing traced depends on the mode: eval would trace the same
    with _training_mode(module, False):
        eval_graph = _trace_once(module, trace_through)
    if train_graph.python_code("self").src == eval_graph.python_code("self").src:
        return TracedModule(module, [train_graph])
    return TracedModule(module, [train_graph, eval_graph])


def describe_trace_error(exc: BaseException) -> str:
    """One line: the kind of failure and, where the traceback shows it, the user code line that caused it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "symbolically traced variables cannot be used as inputs to control flow" in message:
        message = "data-dependent control flow"
    elif "Proxy object cannot be iterated" in message:
        message = "iterates over a traced tensor"
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if "torch/fx" not in filename and "surgeon/" not in filename and "torch/" not in filename:
            frame = tb
        tb = tb.tb_next
    if frame is not None:
        location = f"{frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno}"
        return f"{message} at {location}"
    return message


def _node_has_conv(node: fx.Node, module: nn.Module, conv_modules: set[str]) -> bool:
    if node.op == "call_module":
        return node.target in conv_modules
    if node.op == "call_function":
        return node.target in (torch.conv2d, torch.nn.functional.conv2d)
    return False


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(current.all_input_nodes)
    return seen


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        return len(node.args) >= 2
    return node.op == "call_method" and node.target in _ADD_METHODS and len(node.args) >= 2


def _skip_passed_in(lhs: fx.Node, rhs: fx.Node, placeholders: list[fx.Node], module: nn.Module,
                    conv_modules: set[str]) -> fx.Node | None:
    """The branch of an add whose other operand *is* the module's first argument, unchanged, while the branch holds
    a convolution and comes from later arguments only: the last layer of a residual unit that receives the unit's
    input to add back (Hugging Face's ``EfficientNetFinalBlockLayer.forward(embeddings, hidden_states)``)."""
    source = placeholders[0]
    for skip, branch in ((lhs, rhs), (rhs, lhs)):
        branch_anc = _ancestors(branch)
        if (skip is source and source not in branch_anc and any(p in branch_anc for p in placeholders[1:])
                and any(_node_has_conv(n, module, conv_modules) for n in branch_anc)):
            return branch
    return None


def find_residual_add(graph: fx.Graph, module: nn.Module) -> tuple[fx.Node, fx.Node] | None:
    """Find the skip addition of a residual unit: ``(add_node, branch_operand)``, or ``None``.

    A residual add sums two tensors that both depend on the module's input, where one operand (the branch)
    holds a convolution that the other (the shortcut: the input itself or a projection such as ``downsample``)
    does not depend on. With several such adds, the last one in graph order is the unit's skip addition. The skip
    may also arrive as the module's first argument, with the branch computed from a later one (see
    :func:`_skip_passed_in`).
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return None
    source = placeholders[0]
    conv_modules = {name for name, m in module.named_modules() if name and contains_conv(m)}
    found = None
    for node in graph.nodes:
        if not _is_add(node):
            continue
        lhs, rhs = node.args[0], node.args[1]
        if not isinstance(lhs, fx.Node) or not isinstance(rhs, fx.Node):
            continue
        lhs_anc, rhs_anc = _ancestors(lhs), _ancestors(rhs)
        if source not in lhs_anc or source not in rhs_anc:
            passed = _skip_passed_in(lhs, rhs, placeholders, module, conv_modules)
            if passed is not None:
                found = (node, passed)
            continue
        for branch, branch_anc, shortcut_anc in ((lhs, lhs_anc, rhs_anc), (rhs, rhs_anc, lhs_anc)):
            own = branch_anc - shortcut_anc
            if branch in shortcut_anc or not any(_node_has_conv(n, module, conv_modules) for n in own):
                continue
            # Prefer the operand with more exclusive convolutions as the branch (a projection shortcut has one).
            other_own = shortcut_anc - branch_anc
            if sum(_node_has_conv(n, module, conv_modules) for n in own) >= sum(
                _node_has_conv(n, module, conv_modules) for n in other_own
            ):
                found = (node, branch)
                break
    return found
