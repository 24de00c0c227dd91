"""Latency and peak memory of a forward pass.

Latency: ``warmup`` untimed forward passes, then at least ``runs`` timed ones, reported as median, spread and the
95% interval of the median. With a time budget (``max_time``), timing goes on until that interval is within
``target`` of the median or the budget is spent (:func:`~surgeon.profile.measure.intervals.time_rounds`). Every pass
runs in eval mode under ``torch.inference_mode`` with the intra-op thread count fixed (``torch.set_num_threads``);
the train/eval flag of every submodule and the thread count are restored afterwards. CPU passes are timed with
``time.perf_counter``; CUDA passes with CUDA events, synchronising after each pass so that a timing never includes
queued work of another. With ``training=True`` a pass is one training step instead: forward in train mode, the sum
of the outputs as the loss, backward (no optimizer step); every buffer (BatchNorm statistics) and every gradient is
restored afterwards, so measuring never changes the model. :func:`compare_latency` interleaves the two models'
passes (A, B, A, B, ...) so that slow phases of a shared or throttling machine hit both alike, and its precision is
that of the per-round ratio B ÷ A.
Peak memory is measured by :mod:`.memory`.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import chain

import torch
from torch import Tensor, nn

from ...tensors import eval_mode, flatten_outputs
from .intervals import Rounds, median_interval, time_rounds

__all__ = ["LatencyResult", "compare_latency", "machine_name", "measure_latency"]


@dataclass
class LatencyResult:
    """Timings of ``runs`` forward passes, in milliseconds.

    Attributes:
        median_ms: the median pass; the figure to compare.
        p10_ms: 10th percentile (linear interpolation between samples).
        p90_ms: 90th percentile.
        mean_ms: arithmetic mean.
        std_ms: sample standard deviation (0 for a single run).
        runs: timed passes.
        warmup: untimed passes before them.
        threads: intra-op CPU threads used.
        device: the device the passes ran on.
        batch_size: the first input's leading dimension.
        images_per_s: ``batch_size`` per median pass.
        torch_version: ``torch.__version__``.
        machine: the CPU or GPU model.
        samples_ms: every timed pass, in order.
        interval_ms: the 95% interval of the median (bootstrap over the passes).
        stopped: why timing stopped: ``target`` (precise enough), ``time`` (budget spent), ``rounds`` or ``floor``.
        seconds: wall time spent timing, shared by the models timed together.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    runs: int
    warmup: int
    threads: int
    device: str
    batch_size: int
    images_per_s: float
    torch_version: str
    machine: str
    samples_ms: list[float] = field(default_factory=list)
    interval_ms: tuple[float, float] = (math.nan, math.nan)
    stopped: str = "floor"
    seconds: float = 0.0


def measure_latency(
    model: nn.Module,
    inputs: tuple[Tensor, ...] | Tensor,
    *,
    runs: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    device: str | torch.device | None = None,
    training: bool = False,
    target: float = 0.02,
    max_time: float = 0.0,
) -> LatencyResult:
    """Time the forward pass (or, with ``training``, one training step) of ``model`` on ``inputs``.

    Args:
        model: the module to time; it is not moved (pass it on ``device`` already).
        inputs: positional inputs of the forward (a single tensor is accepted too); copied to ``device``.
        runs: timed passes.
        warmup: untimed passes first.
        threads: intra-op CPU threads for the measurement; ``None`` keeps the current number.
        device: where to run; ``None`` takes the model's device.
        training: time forward + backward in train mode (see the module docstring) instead of an eval forward.
        target: with a budget, stop once the median's 95% interval is within this fraction of it.
        max_time: seconds to spend beyond ``runs`` passes while the target is not met; 0 times ``runs`` passes.

    Returns:
        Median, spread, the median's interval and the conditions of the measurement.
    """
    (result,) = _measure([model], inputs, runs=runs, warmup=warmup, threads=threads, device=device, training=training,
                         target=target, max_time=max_time)
    return result


def compare_latency(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: tuple[Tensor, ...] | Tensor,
    *,
    runs: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    device: str | torch.device | None = None,
    training: bool = False,
    target: float = 0.02,
    max_time: float = 0.0,
) -> tuple[LatencyResult, LatencyResult]:
    """Time two models on the same inputs with their passes interleaved (A, B, A, B, ...).

    Arguments as :func:`measure_latency`; both models must be on the same device. The target is on the per-round
    ratio B ÷ A, the figure a comparison reports.
    """
    result_a, result_b = _measure([model_a, model_b], inputs, runs=runs, warmup=warmup, threads=threads, device=device,
                                  training=training, target=target, max_time=max_time)
    return result_a, result_b


# --- helpers ----------------------------------------------------------------------------------------------------


def _measure(
    models: list[nn.Module],
    inputs: tuple[Tensor, ...] | Tensor,
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    device: str | torch.device | None,
    training: bool = False,
    target: float = 0.02,
    max_time: float = 0.0,
) -> list[LatencyResult]:
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    device = _resolve_device(models, device)
    inputs = tuple(tensor.to(device) for tensor in _as_tuple(inputs))
    run = _train_step if training else _forward
    with ExitStack() as stack:
        used_threads = stack.enter_context(_fixed_threads(threads))
        stack.enter_context(_pass_scope(models, training))
        time_pass = _cuda_timer(device, run) if device.type == "cuda" else _wall_timer(device, run)
        for _ in range(warmup):
            for model in models:
                time_pass(model, inputs)
        rounds = time_rounds(lambda: tuple(time_pass(model, inputs) for model in models), _statistic(len(models)),
                             floor=runs, target=target, budget_s=max_time)
    batch_size = int(inputs[0].shape[0]) if inputs and inputs[0].dim() > 0 else 1
    machine = machine_name(device)
    return [_summarise([sample[index] for sample in rounds.samples], rounds, warmup, used_threads, device, batch_size,
                       machine) for index in range(len(models))]


def _statistic(models: int) -> Callable[[tuple[float, ...]], float]:
    """One model: its time; two: the second's time over the first's in the same round (what a comparison reports)."""
    if models == 2:
        return lambda sample: sample[1] / sample[0] if sample[0] > 0 else math.inf
    return lambda sample: sample[0]


def _summarise(samples: list[float], rounds: Rounds, warmup: int, threads: int, device: torch.device,
               batch_size: int, machine: str) -> LatencyResult:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    return LatencyResult(
        median_ms=median,
        p10_ms=_percentile(ordered, 0.10),
        p90_ms=_percentile(ordered, 0.90),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        runs=len(samples),
        warmup=warmup,
        threads=threads,
        device=str(device),
        batch_size=batch_size,
        images_per_s=batch_size * 1000.0 / median if median > 0 else float("inf"),
        torch_version=torch.__version__,
        machine=machine,
        samples_ms=list(samples),
        interval_ms=median_interval(samples),
        stopped=rounds.stopped,
        seconds=rounds.seconds,
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    """Percentile of sorted samples with linear interpolation (numpy's default method)."""
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


Timer = Callable[[nn.Module, tuple[Tensor, ...]], float]
Pass = Callable[[nn.Module, tuple[Tensor, ...]], object]


def _forward(model: nn.Module, inputs: tuple[Tensor, ...]) -> object:
    return model(*inputs)


def _train_step(model: nn.Module, inputs: tuple[Tensor, ...]) -> object:
    """Forward, the outputs' sum as the loss, backward; the gradients are dropped (``set_to_none``, as optimizers
    zero them) so that no step accumulates into the last one's."""
    output = model(*inputs)
    loss = sum(tensor.float().sum() for tensor in flatten_outputs(output) if tensor.requires_grad)
    if isinstance(loss, Tensor):
        loss.backward()
    model.zero_grad(set_to_none=True)
    return output


@contextmanager
def _pass_scope(models: list[nn.Module], training: bool) -> Iterator[None]:
    """Eval mode under ``torch.inference_mode``; or train mode with autograd, every buffer and gradient restored."""
    with ExitStack() as stack:
        if not training:
            stack.enter_context(torch.inference_mode())
            for model in models:
                stack.enter_context(eval_mode(model))
            yield
            return
        for model in models:
            stack.enter_context(_train_mode(model))
        with torch.enable_grad():
            yield


@contextmanager
def _train_mode(model: nn.Module) -> Iterator[None]:
    modes = [(module, module.training) for module in model.modules()]
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    grads = [(param, param.grad) for param in model.parameters()]
    model.train()
    try:
        yield
    finally:
        for module, flag in modes:
            module.training = flag
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        for param, grad in grads:
            param.grad = grad


def _wall_timer(device: torch.device, run: Pass) -> Timer:
    """One pass on ``time.perf_counter``, waiting for a non-CPU device's queued work before reading the clock.

    Not ``torch.utils.benchmark.Timer``: its ``timeit`` runs warm-up passes of its own at every call, which would
    break the strict alternation of the two models' passes that the ratio's precision rests on.
    """
    backend = getattr(torch, device.type, None)
    synchronize = getattr(backend, "synchronize", None) if device.type != "cpu" else None

    def time_pass(model: nn.Module, inputs: tuple[Tensor, ...]) -> float:
        start = time.perf_counter()
        run(model, inputs)
        if synchronize is not None:
            synchronize()
        return (time.perf_counter() - start) * 1000.0

    return time_pass


def _cuda_timer(device: torch.device, run: Pass) -> Timer:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_pass(model: nn.Module, inputs: tuple[Tensor, ...]) -> float:
        with torch.cuda.device(device):
            start.record()
            run(model, inputs)
            end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)

    return time_pass


@contextmanager
def _fixed_threads(threads: int | None) -> Iterator[int]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _as_tuple(inputs: tuple[Tensor, ...] | Tensor) -> tuple[Tensor, ...]:
    return (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)


def _resolve_device(models: list[nn.Module], device: str | torch.device | None) -> torch.device:
    """The device to run on: ``device`` if given, else the models'; every model must already be there."""
    model_devices = {
        _normalise(tensor.device)
        for model in models
        for tensor in chain(model.parameters(), model.buffers())
        if not tensor.is_meta
    }
    if device is None:
        if len(model_devices) > 1:
            devices = ", ".join(sorted(map(str, model_devices)))
            raise ValueError(f"the models' tensors are on several devices ({devices}); pass device=")
        device = next(iter(model_devices), torch.device("cpu"))
    device = _normalise(torch.device(device))
    stray = model_devices - {device}
    if stray:
        stray_devices = ", ".join(sorted(map(str, stray)))
        raise ValueError(f"model tensors are on {stray_devices}, not on {device}; move the model first")
    return device


def _normalise(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return device


def machine_name(device: torch.device) -> str:
    """The CPU model (from ``/proc/cpuinfo`` where there is one) or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu if device.type == "cpu" else f"{device.type} ({cpu})"
