"""The stopping rule and the unstable flag, on synthetic timings and an injected clock (nothing is timed)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from surgeon.profile.comparison import ratio_timing
from surgeon.profile.measure import intervals
from surgeon.profile.measure.intervals import (
    LatencyOptions,
    busy_warning,
    instability,
    median_interval,
    ratio_interval,
    relative_half_width,
    time_rounds,
)
from surgeon.profile.measure.latency import LatencyResult


class FakeClock:
    """Seconds that advance by ``step`` each time a round is timed."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step


def _rounds(pairs, clock: FakeClock):
    """A ``time_round`` that replays ``pairs`` (reference ms, candidate ms) forever, ticking ``clock``."""
    source = itertools.cycle(pairs)

    def time_round() -> tuple[float, float]:
        clock.tick()
        return next(source)

    return time_round


def _ratio(sample: tuple[float, ...]) -> float:
    return sample[1] / sample[0]


def test_steady_timings_stop_at_the_target_after_the_floor():
    clock = FakeClock(0.1)
    rounds = time_rounds(_rounds([(10.0, 10.5), (10.0, 10.6), (10.0, 10.4)], clock), _ratio, floor=5,
                         target=0.02, budget_s=60.0, clock=clock)
    assert rounds.stopped == "target" and len(rounds.samples) == 5  # precise at once: the floor is all it takes
    assert rounds.seconds == pytest.approx(0.5)


def test_noisy_timings_run_until_the_budget_is_spent():
    clock = FakeClock(0.5)
    noisy = [(10.0, 5.0), (10.0, 20.0), (10.0, 9.0), (10.0, 14.0), (10.0, 7.0)]
    rounds = time_rounds(_rounds(noisy, clock), _ratio, floor=3, target=0.02, budget_s=10.0, clock=clock)
    assert rounds.stopped == "time" and len(rounds.samples) == 20 and rounds.seconds == pytest.approx(10.0)


def test_no_budget_times_exactly_the_floor_and_the_round_limit_holds(monkeypatch):
    clock = FakeClock(0.0)
    noisy = [(10.0, 5.0), (10.0, 20.0), (10.0, 9.0), (10.0, 14.0), (10.0, 7.0)]
    fixed = time_rounds(_rounds(noisy, clock), _ratio, floor=7, target=0.02, budget_s=0.0, clock=clock)
    assert fixed.stopped == "floor" and len(fixed.samples) == 7
    monkeypatch.setattr(intervals, "MAX_ROUNDS", 200)
    generator = random.Random(0)
    spread = [(10.0, 10.0 * generator.uniform(0.5, 2.0)) for _ in range(997)]
    endless = time_rounds(_rounds(spread, clock), _ratio, floor=1, target=0.001, budget_s=1.0, clock=clock)
    assert endless.stopped == "rounds" and len(endless.samples) == 200  # a clock that never moves


def test_the_interval_holds_the_median_and_is_deterministic():
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8, 1.0, 1.02]
    low, high = median_interval(values)
    assert low <= 1.0 <= high and (low, high) == median_interval(values)
    assert median_interval([1.0, 1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert median_interval([2.0, 3.0]) == (2.0, 3.0)  # too few rounds for a bootstrap: the range
    assert all(math.isnan(v) for v in median_interval([]))
    narrow = median_interval([1.0 + 0.001 * (i % 3) for i in range(30)])
    assert relative_half_width(1.001, *narrow) < 0.01


def test_ratio_interval_resamples_whole_rounds():
    before = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0]
    after = [11.0, 22.0, 11.0, 22.0, 11.0, 22.0]  # the machine's speed swings, the ratio does not
    assert ratio_interval(before, after) == pytest.approx((1.1, 1.1))


@pytest.mark.parametrize(("ratio", "low", "high", "add_only", "expected"), [
    (1.01, 1.00, 1.02, True, None),
    (1.01, 0.99, 1.03, True, None),  # faster within noise: fine
    (0.97, 0.96, 0.98, False, None),  # a swap may truly be faster
    (0.97, 0.96, 0.98, True, "add-only change measured faster"),
    (0.499, 0.26, 0.98, True, "add-only change measured faster"),  # the CA row
    (1.010, 0.64, 2.53, True, "wider than ±5%"),  # the ECA row
    (1.2, 1.1, 1.3, False, "wider than ±5%"),
    (1.0, math.nan, math.nan, False, "interval is unknown"),
])
def test_unstable_flag(ratio, low, high, add_only, expected):
    reason = instability(ratio, low, high, add_only=add_only)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and "--max-time" in reason and "--threads 1" in reason


def test_busy_machine_warning():
    assert busy_warning([1.5, 1.0, 1.0], [1.9, 1.2, 1.0], 2) is None
    warning = busy_warning([3.1, 2.0, 1.0], [1.0, 1.0, 1.0], 2)
    assert "busier than its 2 cores" in warning and "3.1" in warning
    assert busy_warning(None, None, 2) is None


@pytest.mark.parametrize("kwargs", [{"runs": -1}, {"warmup": -1}, {"threads": 0}, {"target": 0.0},
                                    {"max_time": -1.0}])
def test_latency_options_refuse_nonsense(kwargs):
    with pytest.raises(ValueError):
        LatencyOptions(**kwargs)


def test_a_floor_of_one_still_needs_rounds_enough_to_judge():
    clock = FakeClock(0.1)
    rounds = time_rounds(_rounds([(10.0, 10.5)], clock), _ratio, floor=1, target=0.02, budget_s=60.0, clock=clock)
    assert rounds.stopped == "target" and len(rounds.samples) == intervals.MIN_PRECISE_ROUNDS


def _latency(samples: list[float]) -> LatencyResult:
    ordered = sorted(samples)
    return LatencyResult(median_ms=ordered[len(ordered) // 2], p10_ms=ordered[0], p90_ms=ordered[-1], mean_ms=0.0,
                         std_ms=0.0, runs=len(samples), warmup=0, threads=1, device="cpu", batch_size=1,
                         images_per_s=1.0, torch_version="", machine="", samples_ms=samples)


def test_a_comparison_row_flags_an_add_only_block_measured_faster():
    reference = _latency([10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8])
    faster = _latency([9.0, 9.1, 8.9, 9.2, 9.0, 9.1, 8.8])
    inserted = ratio_timing(reference, faster, "eval", add_only=True)
    assert inserted.ratio_low <= inserted.ratio <= inserted.ratio_high < 1
    assert "add-only change measured faster" in inserted.unstable
    assert ratio_timing(reference, faster, "eval", add_only=False).unstable is None  # a swap may be faster


def test_too_few_rounds_are_unstable_whatever_their_spread():
    assert "2 rounds cannot tell" in instability(1.0, 1.0, 1.0, add_only=False, rounds=2)
    assert instability(1.0, 1.0, 1.0, add_only=False, rounds=intervals.MIN_PRECISE_ROUNDS) is None
