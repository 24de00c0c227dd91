"""Reduced precision: the original and the patched model under float16 and bfloat16 autocast, and the warning."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

import surgeon
from surgeon import precision
from surgeon.tensors import probe_input
from tests._util import run_cli

SHAPE = (1, 3, 32, 32)
OVERFLOWS = "tests.fixtures.user_blocks:OverflowsInHalf"


def _measured(block: str, after: str = "layer2.0", **options: object) -> list[precision.PrecisionResult]:
    model = torchvision.models.resnet18().eval()
    example = probe_input(SHAPE, model)
    original = precision.measure(model, example)
    surgeon.insert(model, block, after=after, input_shape=SHAPE, **options)
    return precision.check(model, example, original, surgeon.recipe_of(model))


def test_cpu_runs_both_reduced_precisions() -> None:
    assert precision.precisions("cpu") == (torch.float16, torch.bfloat16)


def test_a_block_that_keeps_the_function_keeps_the_deviation() -> None:
    """CBAM at identity init computes what the original did, in every precision: the same deviation, no warning."""
    results = _measured("cbam")
    assert [r.precision for r in results] == ["float16", "bfloat16"]
    for result in results:
        assert result.patched == pytest.approx(result.original, rel=0.5) and result.problem is None
        assert result.block == ("cbam", "layer2.0", "layer2.0.cbam_residual")
    assert precision.warnings_of(results) == []


def test_an_overflowing_block_is_named_with_its_site_and_precision() -> None:
    results = {r.precision: r for r in _measured(OVERFLOWS, after="layer3.1", position="after")}
    half, bf16 = results["float16"], results["bfloat16"]
    assert math.isinf(half.patched) and not math.isinf(half.original)
    assert half.block == (OVERFLOWS, "layer3.1", "layer3.1.overflowsinhalf_after")
    assert bf16.problem is None  # bfloat16 has float32's range
    (line,) = precision.warnings_of([half, bf16])
    assert line.startswith(f"float16 on cpu: the patched model's output is not finite (the original's is); look at "
                           f"{OVERFLOWS} at layer3.1 (layer3.1.overflowsinhalf_after)")
    assert "\n" not in line


def test_far_worse_is_relative_to_the_original() -> None:
    assert precision.PrecisionResult("float16", "cpu", 1e-3, 5e-3).problem is None  # worse, but rounding
    assert precision.PrecisionResult("float16", "cpu", 1e-3, 0.2).problem.startswith("the patched model deviates 0.2")
    assert precision.PrecisionResult("float16", "cpu", math.inf, math.inf).problem is None  # the original's own
    row = precision.PrecisionResult("float16", "cpu", 1e-3, math.inf, ("x", "s", "m")).to_dict()
    assert row["patched"] is None and row["block"] == {"block": "x", "site": "s", "module": "m"}


def test_the_checks_leave_the_model_as_it_was() -> None:
    model = torchvision.models.resnet18().train()
    example = probe_input(SHAPE, model)
    original = precision.measure(model, example)
    surgeon.insert(model, "eca", input_shape=SHAPE)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    precision.check(model, example, original, surgeon.recipe_of(model))
    assert model.training and not any(m._forward_hooks for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_insert_prints_the_deviations_and_warns(tmp_path) -> None:
    result = run_cli("insert", "torchvision:resnet18", "--block", OVERFLOWS, "--after", "layer3.1", "--position",
                     "after", "--input-shape", "1,3,32,32", "--trust-code", "-o", tmp_path / "out.pt")
    assert result.exit_code == 0, result.output
    assert "Reduced precision (relative deviation from float32, original → patched): float16 " in result.output
    assert "→ not finite, bfloat16" in result.output
    assert (f"warning: float16 on cpu: the patched model's output is not finite (the original's is); look at "
            f"{OVERFLOWS} at layer3.1") in result.output


def test_profile_reports_both_models_in_reduced_precision(tmp_path) -> None:
    """``profile MODEL --compare PATCHED``: the deviations and the warning are in the JSON and among the notes."""
    import json

    patched = tmp_path / "patched.pt"
    made = run_cli("insert", "torchvision:resnet18", "--block", OVERFLOWS, "--after", "layer3.1", "--position",
                   "after", "--input-shape", "1,3,32,32", "--trust-code", "--profile", "off", "-o", patched)
    assert made.exit_code == 0, made.output
    result = run_cli("profile", "torchvision:resnet18", "--compare", patched, "--trust-code", "--runs", "0",
                     "--input-shape", "1,3,32,32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {row["precision"]: row for row in report["precision"]}
    assert rows["float16"]["patched"] is None and rows["float16"]["original"] is not None
    assert rows["float16"]["block"]["site"] == "layer3.1" and rows["bfloat16"]["problem"] is None
    assert any(note.startswith("Reduced precision (relative deviation from float32") for note in report["notes"])
    assert any(note.startswith("float16 on cpu: the patched model's output is not finite") for note in report["notes"])



def test_compare_notes_a_block_that_overflows() -> None:
    options = surgeon.CompareOptions(blocks=["eca", OVERFLOWS], after="layer3.1", position="after", input_shape=SHAPE,
                                     latency=surgeon.LatencyOptions(runs=0), exports="off", trust_code=True)
    rows = {row.name: row for row in surgeon.compare(torchvision.models.resnet18(), options).rows}
    assert not any("float16" in note for note in rows["eca"].notes)
    assert any(note.startswith("float16 on cpu: the patched model's output is not finite") and "layer3.1" in note
               for note in rows[OVERFLOWS].notes)
