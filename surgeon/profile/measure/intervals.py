"""How long to time, and how far to trust the result: the stopping rule and the ``unstable`` flag.

A latency figure is a median over rounds (one pass of each model per round). Its precision is the 95% confidence
interval of that median, from a bootstrap over the rounds (``scipy.stats.bootstrap``, percentile method, a fixed
seed so that the same timings always give the same interval). Timing goes on, round after round, until the interval
is within :attr:`LatencyOptions.target` of the median, or the time budget is spent; ``runs`` rounds are always
timed. A figure whose interval stays wider than :data:`UNSTABLE_WIDTH`, or an add-only change (blocks inserted, none
swapped) whose whole interval lies below 1, is flagged ``unstable`` with the reason and what to do about it.

Everything here is a pure function of the timings and of an injected clock, so it is tested without timing anything.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CONFIDENCE", "MAX_ROUNDS", "MIN_PRECISE_ROUNDS", "UNSTABLE_WIDTH", "LatencyOptions", "Rounds",
           "busy_warning", "instability", "load_average", "median_interval", "ratio_interval", "relative_half_width",
           "time_rounds"]

CONFIDENCE = 0.95
UNSTABLE_WIDTH = 0.05  # a ratio known no better than ±5% is not a figure to publish
MAX_ROUNDS = 5000  # a bound on memory for models so fast that the budget alone would allow millions of rounds
MIN_PRECISE_ROUNDS = 5  # fewer rounds say nothing about their spread, so they never count as precise
_BOOTSTRAP_RESAMPLES = 2000
_REMEDY = "give it more time (--max-time), use fewer threads (--threads 1) or a quieter machine"


@dataclass(frozen=True)
class LatencyOptions:
    """How to time: shared by ``profile`` and ``compare``, from the CLI or from Python.

    Attributes:
        runs: the least number of timed rounds per timing (a floor); 0 skips latency and memory.
        warmup: untimed rounds first.
        threads: intra-op CPU threads while timing [default: torch's current number].
        target: stop once the 95% interval of the median is within this fraction of it (0.02: ±2%).
        max_time: seconds of timing allowed per candidate (per model for a profile), shared among its batch sizes
            and modes; 0 times exactly ``runs`` rounds.
    """

    runs: int = 5
    warmup: int = 1
    threads: int | None = None
    target: float = 0.02
    max_time: float = 10.0

    def __post_init__(self) -> None:
        if self.runs < 0:
            raise ValueError(f"runs must be >= 0, got {self.runs}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not 0 < self.target < 1:
            raise ValueError(f"target must be a fraction between 0 and 1, got {self.target}")
        if self.max_time < 0:
            raise ValueError(f"max_time must be >= 0 seconds, got {self.max_time}")


@dataclass(frozen=True)
class Rounds:
    """The timed rounds of one timing and why timing stopped.

    Attributes:
        samples: per round, the milliseconds of each model, in the order the models ran.
        stopped: ``target`` (the interval reached the target), ``time`` (the budget ran out), ``rounds`` (the
            round limit) or ``floor`` (no budget: exactly ``runs`` rounds).
        seconds: wall time spent timing (without warm-up).
    """

    samples: list[tuple[float, ...]]
    stopped: str
    seconds: float


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` interval of the median of ``values``, by bootstrap over them (deterministic).

    Fewer than three values give no interval to speak of: ``(min, max)`` is returned, and an empty input gives NaNs.
    """
    from scipy import stats  # scipy only when figures are computed: `import surgeon` stays fast

    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size < 3 or np.all(data == data[0]):
        return float(data.min()), float(data.max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample of many equal values is degenerate; the percentiles are fine
        result = stats.bootstrap((data,), np.median, confidence_level=confidence, n_resamples=_BOOTSTRAP_RESAMPLES,
                                 method="percentile", vectorized=True, rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    median = float(np.median(data))
    return min(float(low), median), max(float(high), median)


def ratio_interval(before: Sequence[float], after: Sequence[float],
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` interval of ``median(after) / median(before)``, by a paired bootstrap over the rounds.

    ``before[i]`` and ``after[i]`` were timed in the same round, so rounds are resampled whole (deterministic).
    """
    from scipy import stats  # scipy only when figures are computed: `import surgeon` stays fast

    pairs = np.asarray([(b, a) for b, a in zip(before, after, strict=True) if b > 0 and math.isfinite(a)], dtype=float)
    if len(pairs) < 3:
        ratios = pairs[:, 1] / pairs[:, 0] if len(pairs) else np.asarray([math.nan])
        return float(np.min(ratios)), float(np.max(ratios))

    def statistic(b: np.ndarray, a: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(a, axis=axis) / np.median(b, axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap((pairs[:, 0], pairs[:, 1]), statistic, paired=True, confidence_level=confidence,
                                 n_resamples=_BOOTSTRAP_RESAMPLES, method="percentile", vectorized=True,
                                 rng=np.random.default_rng(0))
    center = float(statistic(pairs[:, 0], pairs[:, 1]))
    low, high = result.confidence_interval
    return min(float(low), center), max(float(high), center)


def relative_half_width(center: float, low: float, high: float) -> float:
    """The larger distance from ``center`` to an end of ``[low, high]``, as a fraction of ``center``."""
    if not all(math.isfinite(v) for v in (center, low, high)) or center <= 0:
        return math.inf
    return max(center - low, high - center) / center


def time_rounds(time_round: Callable[[], tuple[float, ...]], statistic: Callable[[tuple[float, ...]], float], *,
                floor: int, target: float, budget_s: float,
                clock: Callable[[], float] = time.perf_counter) -> Rounds:
    """Call ``time_round`` until the median of ``statistic`` over the rounds is known to ``target``, or time is up.

    Args:
        time_round: times one round and returns each model's milliseconds.
        statistic: what the precision is about, from one round: the candidate ÷ reference ratio, or one model's time.
        floor: rounds always timed, precise or not (at least one); with a budget, the target counts only from
            :data:`MIN_PRECISE_ROUNDS` rounds on.
        target: the relative half-width of the 95% interval to stop at.
        budget_s: seconds allowed; 0 times exactly ``floor`` rounds.
        clock: seconds, monotonic (injected by tests).
    """
    floor = max(1, floor)
    start = clock()
    samples: list[tuple[float, ...]] = []
    next_check = max(floor, MIN_PRECISE_ROUNDS)
    while True:
        samples.append(time_round())
        count = len(samples)
        if count < floor:
            continue
        if budget_s <= 0:
            return Rounds(samples, "floor", clock() - start)
        if count >= next_check:
            # the interval is bootstrapped after the floor, then every tenth more rounds: cheap next to the passes
            next_check = count + max(1, count // 10)
            values = [statistic(s) for s in samples]
            if relative_half_width(float(np.median(values)), *median_interval(values)) <= target:
                return Rounds(samples, "target", clock() - start)
        if clock() - start >= budget_s:
            return Rounds(samples, "time", clock() - start)
        if count >= MAX_ROUNDS:
            return Rounds(samples, "rounds", clock() - start)


def instability(ratio: float, low: float, high: float, *, add_only: bool, rounds: int | None = None) -> str | None:
    """Why a latency ratio (with its 95% interval) is not to be trusted, and what to do; ``None`` if it is fine.

    Args:
        ratio: candidate ÷ reference, the median over rounds.
        low, high: its 95% interval.
        add_only: the candidate only adds work to the reference (blocks inserted, none swapped or replaced), so it
            cannot truly be faster.
        rounds: how many rounds the ratio comes from; fewer than :data:`MIN_PRECISE_ROUNDS` say nothing of its
            precision.
    """
    if rounds is not None and rounds < MIN_PRECISE_ROUNDS:
        return (f"{rounds} round{'s' if rounds != 1 else ''} cannot tell the ratio's precision (at least "
                f"{MIN_PRECISE_ROUNDS} are needed); {_REMEDY}")
    width = relative_half_width(ratio, low, high)
    if add_only and high < 1.0:
        return (f"an add-only change measured faster than its reference (×{ratio:.3f}, 95% interval "
                f"{low:.3f}–{high:.3f}, all below 1): the machine's speed changed during the run; {_REMEDY}")
    if width > UNSTABLE_WIDTH:
        shown = "unknown" if math.isinf(width) else f"±{100 * width:.1f}%"
        return f"the 95% interval is {shown}, wider than ±{100 * UNSTABLE_WIDTH:.0f}%; {_REMEDY}"
    return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, or ``None`` where the platform has none (Windows)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_warning(before: Sequence[float] | None, after: Sequence[float] | None, cores: int | None) -> str | None:
    """A warning when the 1-minute load average, before or after timing, exceeded the machine's cores."""
    loads = [values[0] for values in (before, after) if values]
    if not loads or not cores or max(loads) <= cores:
        return None
    shown = " and ".join(f"{value:g}" for value in loads)
    return (f"The machine was busier than its {cores} cores while timing (1-minute load average {shown}, before "
            "and after): latency figures are noisy; rerun on a quieter machine, with fewer threads.")
