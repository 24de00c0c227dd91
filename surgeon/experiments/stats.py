"""The statistics of an ablation: a pure function of the trials' metric values, paired by seed.

Per arm, the mean and the sample standard deviation (``ddof=1``) of the compared metric. Per arm against the
baseline, paired by seed (the same seed gives both arms the same data order and the same initial weights of the
layers they share): the mean of the differences ``arm - baseline``, its 95% confidence interval from Student's t
(``mean ± t.ppf(0.975, n - 1) * sd / sqrt(n)``), the two-sided paired t-test p-value (``scipy.stats.ttest_rel``),
and that p-value adjusted across every arm of the experiment with Holm's step-down method.

A verdict (``better`` or ``worse``) is given only on complete data with a Holm-adjusted p below :data:`ALPHA`; the
reason for any other verdict is said in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ALPHA", "MODES", "Paired", "Verdict", "holm", "mean_std", "paired", "verdict"]

ALPHA = 0.05
"""The family-wise error rate the Holm-adjusted p-values are held to."""
MODES = ("max", "min")


@dataclass(frozen=True)
class Paired:
    """One arm against the baseline, paired by seed.

    Attributes:
        n: the number of seeds both arms finished.
        mean_diff: mean of ``arm - baseline`` over those seeds.
        ci95: the 95% Student-t confidence interval of ``mean_diff``; ``None`` when the differences have no spread.
        p: the two-sided paired t-test p-value; ``None`` when the differences have no spread (the test is undefined).
        p_holm: ``p`` adjusted across the arms of the experiment (set by :func:`holm`).
    """

    n: int
    mean_diff: float
    ci95: tuple[float, float] | None
    p: float | None
    p_holm: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"mean_diff": self.mean_diff, "ci95": list(self.ci95) if self.ci95 else None, "p": self.p,
                "p_holm": self.p_holm, "n": self.n}


@dataclass(frozen=True)
class Verdict:
    """``better``, ``worse``, ``no evidence``, ``incomplete``, or ``None`` (no test possible), and why."""

    verdict: str | None
    reason: str


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (``ddof=1``) of ``values``; ``None`` where undefined."""
    from scipy import stats  # scipy only when figures are computed: `import surgeon` stays fast

    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, float(stats.tstd(values))


def paired(arm: Sequence[float], baseline: Sequence[float]) -> Paired | None:
    """The paired comparison of ``arm`` with ``baseline`` (same seeds, same order); ``None`` below two pairs.

    Raises:
        ValueError: the sequences differ in length.
    """
    from scipy import stats  # scipy only when figures are computed: `import surgeon` stays fast

    if len(arm) != len(baseline):
        raise ValueError(f"paired samples differ in length: {len(arm)} and {len(baseline)}")
    n = len(arm)
    if n < 2:
        return None
    differences = [a - b for a, b in zip(arm, baseline)]
    mean = math.fsum(differences) / n
    if max(differences) == min(differences):  # no spread: ttest_rel would divide by zero (nan, or inf and p = 0)
        return Paired(n, mean, None, None)
    sd = float(stats.tstd(differences))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(arm, baseline).pvalue)
    return Paired(n, mean, (mean - half, mean + half), p)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values, by name.

    The smallest of ``m`` p-values is multiplied by ``m``, the next by ``m - 1``, and so on; each adjusted value is
    at least the one before it (monotone), and at most 1. (scipy has no Holm; this is the textbook definition,
    Holm 1979, checked against published examples in the tests.)
    """
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


def verdict(comparison: Paired | None, *, seeds: int, complete: bool, missing: str, mode: str) -> Verdict:
    """The verdict on one arm against the baseline.

    Args:
        comparison: the paired comparison, with ``p_holm`` set.
        seeds: the number of seeds the plan has.
        complete: whether every trial of the arm and of the baseline is done.
        missing: what is not done, in words (used when not ``complete``).
        mode: ``max`` (higher is better) or ``min``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if seeds < 2:
        return Verdict(None, f"{seeds} seed: a paired test needs at least 2 (--seeds 3 or more)")
    if not complete:
        return Verdict("incomplete", f"no verdict on partial data: {missing}")
    if comparison is None or comparison.p is None or comparison.p_holm is None:
        return Verdict("no evidence", "the difference is the same for every seed, so the t-test is undefined")
    if comparison.p_holm >= ALPHA:
        return Verdict("no evidence", f"Holm-adjusted p = {comparison.p_holm:.3g} ≥ {ALPHA}")
    higher = comparison.mean_diff > 0
    better = higher if mode == "max" else not higher
    return Verdict("better" if better else "worse", f"Holm-adjusted p = {comparison.p_holm:.3g} < {ALPHA}")
