"""The arms of a plan: a block at a placement, a rules file or preset, a patched checkpoint's recipe, a control."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import surgeon
from surgeon.errors import RuleError, SurgeonError
from surgeon.experiments import AblateOptions, Loading, Placement, plan_ablation
from surgeon.experiments.arms import build_arm_model
from surgeon.pipeline import load_model

DIGITS = "examples.digits.model:build"
SHAPE = Loading(input_shape=(1, 1, 16, 16))


def _plan(tmp_path: Path, **options):
    return plan_ablation(DIGITS, AblateOptions(tmp_path / "exp", trainer="my_pkg.train:fit", loading=SHAPE, **options))


def test_every_kind_of_arm(tmp_path: Path) -> None:
    rules = tmp_path / "se_last.yaml"
    rules.write_text("version: 1\nrules:\n  - match: {kind: block, stage: 3}\n    insert: {block: se}\n")
    checkpoint = tmp_path / "digits_cbam.pt"
    surgeon.save(surgeon.insert(load_model(DIGITS).module, "cbam", input_shape=(1, 1, 16, 16)), checkpoint)
    planned = _plan(tmp_path, blocks=("eca",), placement=Placement(stage="2-3"), rules=(str(rules), "eca_resnet",
                    str(checkpoint)), controls=(DIGITS,))
    plan = planned.plan
    assert [(arm.name, arm.kind) for arm in plan.arms] == [
        ("baseline", "baseline"), ("eca", "candidate"), ("se_last", "candidate"), ("eca_resnet", "candidate"),
        ("digits_cbam", "candidate"), (DIGITS, "control")]
    assert plan.arms[1].insert == {"block": "eca", "after": "bottleneck", "position": None, "init": "identity",
                                   "stage": "2-3", "stride": None}
    assert "insert: {block: se}" in plan.arms[2].rules and plan.arms[4].recipe["steps"][0]["block"] == "cbam"
    assert plan.arms[5].directory == "examples.digits.model-build"
    json.dumps(plan.to_dict())  # plain data, as plan.json holds it
    params = {name: cost.params for name, cost in planned.costs.items()}
    assert params["eca"] - params["baseline"] == 8  # two ECA kernels of 3 and two identity gates (stages 2 and 3)
    assert params[DIGITS] == params["baseline"]
    assert planned.resumed == 0 and len(planned.pending) == 6 * 3
    # the worker's side: the same arms rebuilt from the plan's data alone
    patched = build_arm_model(plan, plan.arm("digits_cbam"))
    assert sum(p.numel() for p in patched.parameters()) == params["digits_cbam"]


def test_a_bad_arm_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SurgeonError, match="unknown block 'ecaa'"):
        _plan(tmp_path, blocks=("ecaa",))
    with pytest.raises(RuleError, match="no such rules file or preset"):
        _plan(tmp_path, rules=("no_such_preset",))
    with pytest.raises(SurgeonError, match=r"train args are a framework trainer's \(ultralytics\)"):
        _plan(tmp_path, train_args={"epochs": "3"})
    with pytest.raises(SurgeonError, match="two arms would share the name 'eca'"):
        _plan(tmp_path, blocks=("eca",), rules=(str(_write(tmp_path / "eca.yaml")),))
    assert not (tmp_path / "exp").exists()


def _write(path: Path) -> Path:
    path.write_text("version: 1\nrules:\n  - match: {kind: block}\n    insert: {block: eca}\n")
    return path
