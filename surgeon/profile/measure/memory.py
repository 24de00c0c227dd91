"""Peak memory of one forward pass (or training step).

Peak memory (:func:`peak_memory`) is the most memory that one forward pass holds at once *beyond what was
allocated before it*: weights, buffers and inputs are not included, activations, workspaces and the output are.

- CUDA: ``torch.cuda.reset_peak_memory_stats`` before the pass, ``max_memory_allocated`` after it, minus the bytes
  allocated before it. This resets the device's peak statistic for the whole process.
- CPU: the torch profiler with ``profile_memory=True`` records every allocation and free of PyTorch's CPU
  allocator; the peak is the maximum of their running sum in time order. Limits: memory that does not go through
  that allocator (oneDNN/MKL scratch space, Python objects, allocator caching in other libraries) is not seen;
  freeing a tensor allocated before the pass lowers the running sum, so the result is the peak *increase*. One
  untimed pass first keeps one-off allocations (lazily built caches) out of the figure.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from .latency import Pass, _as_tuple, _forward, _pass_scope, _resolve_device, _train_step

__all__ = ["peak_memory", "quiet_profiler_logs"]


def peak_memory(model: nn.Module, inputs: tuple[Tensor, ...] | Tensor, device: str | torch.device | None = None,
                training: bool = False) -> int:
    """Peak bytes that one forward pass allocates beyond what was allocated before it (see the module docstring).

    Args:
        model: the module to measure; it is not moved.
        inputs: positional inputs of the forward (a single tensor is accepted too); copied to ``device``.
        device: where to run; ``None`` takes the model's device.
        training: measure one training step (forward in train mode and backward: the activations kept for the
            backward pass, and the gradients) instead of an eval forward; buffers and gradients are restored.
    """
    device = _resolve_device([model], device)
    inputs = tuple(tensor.to(device) for tensor in _as_tuple(inputs))
    run = _train_step if training else _forward
    with _pass_scope([model], training):
        run(model, inputs)  # one-off allocations (lazy caches, first-call workspaces) stay out of the figure
        if device.type == "cuda":
            return _cuda_peak(model, inputs, device, run)
        return _profiled_peak(model, inputs, run)


_USER_KINETO_LOG_LEVEL = os.environ.get("KINETO_LOG_LEVEL")


def quiet_profiler_logs() -> None:
    """Silence the log lines kineto (the torch profiler's backend) prints on stderr at every profile.

    Peak memory on CPU runs the profiler, and kineto logs ``profiler_start``/``profiler_stop`` and a failed GPU
    query each time, which would garble a command's output. Takes effect only before the profiler first starts in
    this process, and never overrides a ``KINETO_LOG_LEVEL`` the user set (Ultralytics sets 5 when imported, which
    still logs: only a level set before attn-surgeon was imported counts as the user's).
    """
    if _USER_KINETO_LOG_LEVEL is None:
        os.environ["KINETO_LOG_LEVEL"] = "6"


def _cuda_peak(model: nn.Module, inputs: tuple[Tensor, ...], device: torch.device, run: Pass) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    output = run(model, inputs)  # held until the peak is read: the output is part of the pass's memory
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del output
    return peak


def _profiled_peak(model: nn.Module, inputs: tuple[Tensor, ...], run: Pass) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        output = run(model, inputs)  # alive until profiling stops, so its allocation is never matched by a free
    del output
    allocations = sorted(
        ((event.start_ns(), event.nbytes())
         for event in prof.profiler.kineto_results.events()
         if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU),
        key=lambda allocation: allocation[0],  # stable: simultaneous events keep their recorded order
    )
    live = peak = 0
    for _, nbytes in allocations:
        live += nbytes
        peak = max(peak, live)
    return peak
