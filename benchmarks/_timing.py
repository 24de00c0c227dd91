"""Side-by-side timing shared by the benchmark scripts.

Contenders are timed in one process, in rounds: each round runs every contender once, starting from a different one
each round, so that noise from other processes on a shared machine (and drift of clock speed or memory pressure)
hits all of them alike. A comparison is the median over rounds of the per-round ratio, with the 25th and 75th
percentiles of those paired ratios as its spread; medians of the raw times are printed beside it.

The clock is the CPU time of this process by default (``--clock cpu``): on a machine whose cores are shared with
other jobs, wall-clock time also counts the time spent waiting for a core, which can double a run's time from one
round to the next. With one intra-op thread the CPU time of a forward pass is its latency on an idle core; with
several threads it is their sum, so use ``--clock wall`` there (and on an idle machine).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["CLOCKS", "Ratio", "allocator_line", "alternate", "configure_threads", "goal_mark", "linear_fit",
           "machine_line", "paired_ratio", "quantile", "seconds", "set_clock", "use_steady_malloc"]

CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock: list[Callable[[], float]] = [time.process_time]


def set_clock(name: str) -> str:
    """Use ``"cpu"`` (process CPU time) or ``"wall"`` (``perf_counter``) for every later measurement."""
    _clock[0] = CLOCKS[name]
    return name


def configure_threads(threads: int | None) -> int:
    """Pin torch's intra-op thread count (``None`` keeps torch's default) and return the count in use.

    A fixed count matters on a shared machine: with every core already busy, extra threads oversubscribe the CPU
    and a forward pass can take ten times longer in one round than in the next.
    """
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return platform.processor() or "unknown CPU"


def machine_line(timing: bool = True) -> str:
    """One line naming the CPU, its cores, torch, the thread count and clock (if ``timing``) and the current load
    (the noise to expect)."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    clock = next(name for name, fn in CLOCKS.items() if fn is _clock[0])
    threads = f"{torch.get_num_threads()} thread(s), {clock} clock, " if timing else ""
    return f"{_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {threads}load average {load}"


# glibc malloc serves big blocks with mmap and unmaps them on free, or trims the heap top back to the OS: each
# full-size tensor can then cost thousands of page faults (a page zeroed by the kernel per 4 KiB), and how many
# depends on what the contender timed just before freed. These tunables keep freed memory in the process, as
# jemalloc and tcmalloc (PyTorch's CPU tuning guide recommends either) do after a warm-up.
STEADY_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


def use_steady_malloc(enabled: bool) -> None:
    """Re-run this script under :data:`STEADY_MALLOC` unless it already runs so (glibc only; call it first).

    Timings of memory-bound work then compare the work itself rather than the page faults of the allocator's
    state, which differs from one contender to the next. ``enabled=False`` keeps the system's settings.
    """
    if not enabled or platform.libc_ver()[0] != "glibc" or STEADY_MALLOC in os.environ.get("GLIBC_TUNABLES", ""):
        return
    tunables = ":".join(filter(None, (os.environ.get("GLIBC_TUNABLES"), STEADY_MALLOC)))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": tunables})


def allocator_line() -> str:
    """Which malloc settings this process runs with."""
    if STEADY_MALLOC in os.environ.get("GLIBC_TUNABLES", ""):
        return f"malloc: glibc, freed memory kept in the process (GLIBC_TUNABLES={STEADY_MALLOC})"
    return "malloc: the system's default settings"


def seconds(fn: Callable[[], object]) -> float:
    """Seconds of one call on the selected clock."""
    clock = _clock[0]
    start = clock()
    fn()
    return clock() - start


def alternate(contenders: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every contender once per round, rotating which one goes first; ``warmup`` untimed rounds first.

    Returns:
        The seconds of each contender, one entry per round, in round order.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    samples: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name][r] = seconds(contenders[name])
    return samples


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Ratio:
    """A comparison of two contenders timed in the same rounds.

    Attributes:
        value: median over rounds of numerator time / denominator time in that round.
        low, high: 25th and 75th percentile of those per-round ratios.
        numerator_s, denominator_s: median seconds of each side.
    """

    value: float
    low: float
    high: float
    numerator_s: float
    denominator_s: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """Ratio of two series of timings taken in the same rounds (see :class:`Ratio`)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("paired_ratio needs two non-empty series of the same length")
    ratios = [n / d for n, d in zip(numerator, denominator)]
    return Ratio(statistics.median(ratios), quantile(ratios, 0.25), quantile(ratios, 0.75),
                 statistics.median(numerator), statistics.median(denominator))


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through ``(xs, ys)``: ``(slope, intercept, R^2)``; R^2 is NaN without spread in ``xs``."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return float("nan"), mean_y, float("nan")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return slope, intercept, (1 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def goal_mark(value: float | Ratio, goal: float) -> str:
    """``ok`` when the value (a ratio's median) is at most ``goal``; for a :class:`Ratio` whose median is above the
    goal but whose 25th percentile is not, ``noise`` (the rounds disagree); else ``MISSED``."""
    if isinstance(value, Ratio):
        if value.value <= goal:
            return "ok"
        return "noise" if value.low <= goal else "MISSED"
    return "ok" if value <= goal else "MISSED"
