"""results.json as a pure function of the plan and the stored trials: the schema's names, the metric, Holm across
arms, and no verdict on partial data."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgeon.experiments import AblateOptions, build_results
from surgeon.experiments.plan import build_plan

ACCURACY = {  # seed -> accuracy; "se" is better on every seed, "eca" is noise around the baseline
    "baseline": {0: 0.90, 1: 0.91, 2: 0.92, 3: 0.90},
    "se": {0: 0.95, 1: 0.955, 2: 0.97, 3: 0.951},
    "eca": {0: 0.91, 1: 0.90, 2: 0.925, 3: 0.895},
}


def _plan(tmp_path: Path, seeds: tuple[int, ...] = (0, 1, 2, 3)):
    options = AblateOptions(tmp_path / "exp", blocks=("se", "eca"), seeds=seeds)
    return build_plan("torchvision:resnet18", options, "my_pkg.train:fit")


def _trial(accuracy: float, status: str = "done") -> dict:
    return {"status": status, "metrics": {"accuracy": accuracy, "loss": 1 - accuracy}, "seconds": 2.0,
            "error": None if status == "done" else "Traceback ...\nRuntimeError: out of memory", "curves": {}}


def _trials(overrides: dict | None = None) -> dict:
    trials = {(arm, seed): _trial(value) for arm, values in ACCURACY.items() for seed, value in values.items()}
    trials.update(overrides or {})
    return trials


def test_complete_results(tmp_path: Path) -> None:
    results = build_results(_plan(tmp_path), _trials(), {"baseline": {"params": 10, "flops": 100,
                                                                       "gflops_framework": None}})
    assert results["schema"] == "attn-surgeon/ablate" and results["version"] == 1
    assert results["metric"] == "accuracy" and results["mode"] == "max" and results["complete"] is True
    assert results["trials"] == {"total": 12, "done": 12, "failed": 0, "diverged": 0, "missing": 0}
    baseline, se, eca = results["arms"]
    assert [arm["kind"] for arm in results["arms"]] == ["baseline", "candidate", "candidate"]
    assert baseline["params"] == 10 and se["params"] is None and baseline["vs_baseline"] is None
    assert se["mean"] == pytest.approx(0.9565) and se["vs_baseline"]["mean_diff"] == pytest.approx(0.9565 - 0.9075)
    # two p-values in the family: the smaller is doubled by Holm, the larger kept (but never below the smaller)
    p_se, p_eca = se["vs_baseline"]["p"], eca["vs_baseline"]["p"]
    assert p_se < p_eca
    assert se["vs_baseline"]["p_holm"] == pytest.approx(min(1, 2 * p_se))
    assert eca["vs_baseline"]["p_holm"] == pytest.approx(max(p_eca, 2 * p_se))
    assert (se["verdict"], eca["verdict"]) == ("better", "no evidence")
    assert set(se["trials"][0]) == {"seed", "status", "metrics", "seconds", "curves", "error"}


def test_the_other_mode_turns_better_into_worse(tmp_path: Path) -> None:
    results = build_results(_plan(tmp_path), _trials(), {}, metric="loss", mode="min")
    assert results["metric"] == "loss" and results["arms"][1]["verdict"] == "better"  # lower loss
    assert build_results(_plan(tmp_path), _trials(), {}, mode="min")["arms"][1]["verdict"] == "worse"


def test_a_failed_baseline_trial_makes_every_arm_incomplete(tmp_path: Path) -> None:
    trials = _trials({("baseline", 2): _trial(0.0, "failed"), ("eca", 3): None})
    results = build_results(_plan(tmp_path), trials, {})
    assert results["complete"] is False
    assert results["trials"] == {"total": 12, "done": 10, "failed": 1, "diverged": 0, "missing": 1}
    baseline, se, eca = results["arms"]
    assert baseline["trials"][2]["status"] == "failed"
    assert baseline["trials"][2]["error"] == "RuntimeError: out of memory"
    assert eca["trials"][3]["status"] == "missing"
    assert se["verdict"] == "incomplete" and se["verdict_reason"].endswith("baseline seed 2 failed")
    assert eca["verdict"] == "incomplete" and "eca seed 3 missing" in eca["verdict_reason"]
    assert se["vs_baseline"]["n"] == 3  # the statistics shown use the seeds both arms finished


def test_one_seed_gives_no_verdict_and_says_why(tmp_path: Path) -> None:
    results = build_results(_plan(tmp_path, seeds=(0,)), _trials(), {})
    se = results["arms"][1]
    assert se["verdict"] is None and se["vs_baseline"] is None and "at least 2" in se["verdict_reason"]
    assert se["std"] is None and se["mean"] == pytest.approx(0.95)


def test_metric_defaults_to_the_first_key_of_the_first_finished_trial(tmp_path: Path) -> None:
    assert build_results(_plan(tmp_path), {}, {})["metric"] is None
    trials = {("se", 1): {**_trial(0.9), "metrics": {"top5": 0.99, "accuracy": 0.9}}}
    assert build_results(_plan(tmp_path), trials, {})["metric"] == "top5"
