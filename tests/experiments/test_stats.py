"""The statistics against answers computed by hand or published: mean/std, the paired t-test and its Student-t
interval, Holm's adjustment, and the verdict rules."""

from __future__ import annotations

import math

import pytest

from surgeon.experiments.stats import Paired, holm, mean_std, paired, verdict


def test_mean_and_sample_std() -> None:
    mean, std = mean_std([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert mean == 5.0
    assert std == pytest.approx(math.sqrt(32 / 7))  # sum of squares 32 over n - 1 = 7 (2.138, not the 2.0 of ddof=0)
    assert mean_std([3.0]) == (3.0, None)
    assert mean_std([]) == (None, None)


def test_paired_t_test_by_hand() -> None:
    # differences 1, 1, 1.5: mean 7/6, sd sqrt(1/12), t = (7/6) / (sd / sqrt(3)) = 7, df 2
    result = paired([1.0, 2.0, 3.5], [0.0, 1.0, 2.0])
    assert result.n == 3 and result.mean_diff == pytest.approx(7 / 6)
    assert result.p == pytest.approx(0.019804, abs=1e-6)  # two-sided P(|t_2| > t) = 1 - t / sqrt(t^2 + 2)
    assert result.p == pytest.approx(1 - 7 / math.sqrt(51))
    half = 4.302653 * math.sqrt(1 / 12) / math.sqrt(3)  # t(0.975, 2) = 4.3027 from any t table
    assert result.ci95 == pytest.approx((7 / 6 - half, 7 / 6 + half), abs=1e-5)


def test_paired_textbook_example() -> None:
    """Student's sleep data (Cushny and Peebles, 1905), the classic paired t-test: t = 4.062, df = 9,
    p = 0.002833, 95% CI of the mean difference 0.700 to 2.460 (R's `t.test(extra ~ group, paired = TRUE)`)."""
    drug_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = paired(drug_2, drug_1)
    assert result.mean_diff == pytest.approx(1.58)
    assert result.p == pytest.approx(0.002833, abs=1e-6)
    assert result.ci95 == pytest.approx((0.7001142, 2.4598858), abs=1e-6)


def test_paired_needs_two_pairs_and_spread() -> None:
    assert paired([1.0], [0.5]) is None
    constant = paired([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # every difference 0.5: no spread, t undefined
    assert constant is not None and constant.mean_diff == pytest.approx(0.5) and constant.p is None
    assert constant.ci95 is None
    with pytest.raises(ValueError, match="differ in length"):
        paired([1.0, 2.0], [1.0])


def test_holm_textbook_values() -> None:
    """Holm (1979) step-down: sorted p 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06 (monotone), 0.06
    (monotone); the values statsmodels' multipletests(method="holm") gives."""
    adjusted = holm({"a": 0.03, "b": 0.01, "c": 0.04, "d": 0.02})
    assert adjusted == pytest.approx({"b": 0.04, "d": 0.06, "a": 0.06, "c": 0.06})
    assert holm({"x": 0.5, "y": 0.4}) == pytest.approx({"y": 0.8, "x": 0.8})  # capped by monotonicity, not 0.5
    assert holm({"x": 0.7, "y": 0.6}) == {"y": 1.0, "x": 1.0}  # at most 1
    assert holm({}) == {}


def _significant(mean_diff: float) -> Paired:
    return Paired(5, mean_diff, (mean_diff - 0.1, mean_diff + 0.1), 0.001, 0.004)


@pytest.mark.parametrize(("mean_diff", "mode", "expected"), [
    (0.2, "max", "better"), (-0.2, "max", "worse"), (0.2, "min", "worse"), (-0.2, "min", "better"),
])
def test_verdict_direction_follows_the_mode(mean_diff: float, mode: str, expected: str) -> None:
    assert verdict(_significant(mean_diff), seeds=5, complete=True, missing="", mode=mode).verdict == expected


def test_no_verdict_on_partial_data_or_one_seed_or_a_high_p() -> None:
    partial = verdict(_significant(0.2), seeds=5, complete=False, missing="se seed 3 failed", mode="max")
    assert (partial.verdict, partial.reason) == ("incomplete", "no verdict on partial data: se seed 3 failed")
    one = verdict(None, seeds=1, complete=True, missing="", mode="max")
    assert one.verdict is None and "at least 2" in one.reason
    weak = verdict(Paired(5, 0.2, (-0.1, 0.5), 0.02, 0.06), seeds=5, complete=True, missing="", mode="max")
    assert weak.verdict == "no evidence" and "0.06" in weak.reason
    flat = verdict(Paired(5, 0.0, None, None), seeds=5, complete=True, missing="", mode="max")
    assert flat.verdict == "no evidence" and "undefined" in flat.reason
