"""What each inserted block costs in time: every block timed alone on the input it receives inside the model.

Method (:data:`SITE_TIMING_METHOD`, printed in the report): one forward pass of the patched model records the
input of each inserted block (temporary pre-hooks, removed afterwards); then each block runs on a copy of that
input with the same warm-up, number of runs, thread count and timer (:func:`.latency.measure_latency`) as the whole
model. A block's share is its median over the patched model's median at the same batch size.

Why not the alternatives: replacing each block by ``nn.Identity`` and re-timing the model costs one full latency
measurement per site and drowns a 1 % block in the model's run-to-run noise; the torch profiler's per-operator
times carry several microseconds of overhead per operator, which inflates exactly the small element-wise ops that
attention blocks are made of. Timing a block alone is cheap (about as long as timing the difference between the two
models) and its noise is the block's own. Its limit: alone, a block finds its input in cache, so its figure is a
lower bound of its cost inside the model; the report shows the sum over the blocks beside the measured latency
difference so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...tensors import eval_mode
from .latency import LatencyResult, measure_latency

__all__ = ["SITE_TIMING_METHOD", "capture_block_inputs", "time_blocks"]

SITE_TIMING_METHOD = (
    "one forward pass of the patched model at the batch size shown records the input each inserted block receives; "
    "each block is then timed alone on that input with the same warm-up, runs, threads and timer as the whole "
    "model. Share = the block's median / the patched model's median at that batch size. Alone, a block finds its "
    "input in cache, so its time is a lower bound of its cost inside the model: compare the sum over the blocks "
    "with the measured latency difference."
)


def capture_block_inputs(model: nn.Module, modules: Sequence[str],
                         inputs: tuple[Tensor, ...]) -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    """The positional and keyword arguments of the first call of each named module during one eval forward.

    Tensors are copied, so later in-place operations of the model cannot change them. A module that did not run
    is absent from the result. The model is left as it was (hooks removed, train/eval flags restored).
    """
    named = dict(model.named_modules())
    captured: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def recorder(name: str):
        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in captured:
                captured[name] = (tuple(a.clone() if isinstance(a, Tensor) else a for a in args), dict(kwargs))

        return record

    handles = [named[name].register_forward_pre_hook(recorder(name), with_kwargs=True)
               for name in modules if name in named]
    try:
        with torch.inference_mode(), eval_mode(model):
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def time_blocks(model: nn.Module, modules: Sequence[str], inputs: tuple[Tensor, ...], *, runs: int, warmup: int,
                threads: int | None = None) -> dict[str, LatencyResult | None]:
    """Time each named submodule of ``model`` alone on the input it receives when ``model`` runs on ``inputs``.

    Args:
        model: the patched model (not modified).
        modules: qualified names of the inserted blocks.
        inputs: positional inputs of ``model``'s forward.
        runs: timed passes per block.
        warmup: untimed passes per block first.
        threads: intra-op CPU threads; ``None`` keeps the current number.

    Returns:
        Per name, the block's timings, or ``None`` for a block that did not run or takes anything but positional
        tensors (it is reported as untimed).
    """
    named = dict(model.named_modules())
    captured = capture_block_inputs(model, modules, inputs)
    results: dict[str, LatencyResult | None] = {}
    for name in modules:
        args, kwargs = captured.get(name, ((), {"missing": True}))
        if kwargs or not args or not all(isinstance(a, Tensor) for a in args):
            results[name] = None
            continue
        results[name] = measure_latency(named[name], args, runs=runs, warmup=warmup, threads=threads,
                                        device=args[0].device)
    return results
