"""``surgeon.patch``: the whole of ``attn-surgeon insert``, ``swap`` and ``apply``, called from Python."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import surgeon
from surgeon.errors import CheckpointError, OutputExistsError
from surgeon.pipeline import PatchOptions, insert_rule, swap_rule

SHAPE = (1, 3, 32, 32)


def test_patch_writes_the_checkpoint_and_its_reports(tmp_path: Path) -> None:
    output, options = tmp_path / "r18_eca.pt", PatchOptions(input_shape=SHAPE, profile="off")
    result = surgeon.patch("torchvision:resnet18", [insert_rule("eca")], output, options)
    assert result.output == output and result.report == tmp_path / "r18_eca.report.json" and result.html is None
    assert json.loads(result.report.read_text()) == json.loads(json.dumps(result.summary, default=str))
    assert result.summary["sites_patched"] == 8 and result.surgery.verification.ok
    assert list(surgeon.load(output).state_dict()) == list(result.surgery.model.state_dict())
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        surgeon.patch("torchvision:resnet18", [insert_rule("eca")], output, options)


def test_patch_dry_run_writes_nothing_and_names_the_default_output(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = surgeon.patch("torchvision:resnet18", [swap_rule("sk", "3x3", stride=1)], None,
                           PatchOptions(input_shape=SHAPE, dry_run=True))
    assert result.output == Path("resnet18_sk.pt") and result.surgery.rewrite is None
    assert result.summary["dry_run"] and {row["op"] for row in result.summary["plan"]} == {"replace"}
    assert list(tmp_path.iterdir()) == []


def test_patch_replays_a_recipe_through_the_one_replay_path(tmp_path: Path) -> None:
    first = surgeon.patch("torchvision:resnet18", "se_resnet", tmp_path / "se.pt",
                          PatchOptions(input_shape=SHAPE, profile="off"))
    assert first.output.name == "se.pt"
    again = surgeon.patch("torchvision:resnet18", first.output, tmp_path / "again.pt", PatchOptions(profile="off"))
    assert again.summary["input_shape"] == list(SHAPE)  # the recipe's own probe shape
    assert [step.module for step in again.surgery.recipe.steps] == [s.module for s in first.surgery.recipe.steps]
    with pytest.raises(CheckpointError, match=r"se\.pt: its recipe does not fit torchvision:resnet50 \(recipe step"):
        surgeon.patch("torchvision:resnet50", first.output, None, PatchOptions(dry_run=True))


def test_rule_constructors_check_the_block_kind_up_front() -> None:
    with pytest.raises(surgeon.errors.BlockError, match="'sk' is a swap block"):
        insert_rule("sk")
    with pytest.raises(surgeon.errors.BlockError, match="'eca' is an insert block"):
        swap_rule("eca")
    with pytest.raises(surgeon.errors.SurgeonError, match="swap replaces convolutions; 'bottleneck' selects block"):
        swap_rule("sk", "bottleneck")
    with pytest.raises(surgeon.errors.BlockError, match="init must be one of identity, paper"):
        insert_rule("se", init="pretrained")
    assert swap_rule("sk", "3x3").selector == swap_rule("sk", "conv3x3").selector
