"""The digits example (issue 7): a trained CNN, ECA inserted through the CLI, unchanged at insertion, fine-tuned.

The example runs in a subprocess because it pins global torch state (one thread, deterministic algorithms).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import surgeon
from examples.digits.model import BasicBlock, build
from tests._util import REPO

CHECKPOINT = REPO / "examples" / "digits" / "digits_resnet.pt"
ARCH = "examples.digits.model:build"


def run_module(module: str, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, time.perf_counter() - started


def test_shipped_checkpoint_is_a_small_bare_state_dict_of_the_example_model() -> None:
    assert CHECKPOINT.stat().st_size < 2 * 1024 * 1024
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())  # bare: no container, no recipe
    model = build()
    model.load_state_dict(state, strict=True)
    assert 20_000 <= sum(p.numel() for p in model.parameters()) <= 60_000
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 3


@pytest.mark.parametrize("block", ["eca", pytest.param("se", marks=pytest.mark.slow)])
def test_digits_example_insert_keeps_accuracy_then_finetunes(tmp_path: Path, block: str) -> None:
    done, seconds = run_module("examples.digits.run", "--block", block, "--output-dir", str(tmp_path))
    assert seconds < 120  # the issue asks for a CI run under two minutes; about 15 s on one free core
    summary = json.loads((tmp_path / "summary.json").read_text())

    assert summary["base"]["accuracy"] >= 0.97  # the shipped weights are really trained (99.1% measured)
    # Identity init: the patched model's logits equal the base model's, so accuracy and loss are the same.
    assert summary["max_logit_deviation"] == 0.0
    assert summary["inserted"]["accuracy"] == summary["base"]["accuracy"]
    assert summary["inserted"]["loss"] == summary["base"]["loss"]
    assert summary["added_params"] > 0
    for key in ("finetuned", "control"):
        assert math.isfinite(summary[key]["loss"]) and summary[key]["accuracy"] >= 0.97
    assert summary["reloaded"] == {**summary["finetuned"], "name": "reloaded"}
    assert f"$ attn-surgeon insert examples/digits/digits_resnet.pt --arch {ARCH} --block {block}" in done.stdout

    # The CLI's output is a bare state_dict like its input, with the new blocks' keys beside the original ones.
    patched_state = torch.load(summary["patched_checkpoint"], map_location="cpu", weights_only=True)
    base_state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert all(torch.equal(patched_state[key], value) for key, value in base_state.items())
    new_keys = set(patched_state) - set(base_state)
    assert new_keys and all(f".{block}_residual." in key for key in new_keys)
    # The fine-tuned file rebuilds from its recipe, and fine-tuning moved the gates away from the identity.
    tuned = surgeon.load(summary["finetuned_checkpoint"], trust_code=True)
    gammas = [p.item() for name, p in tuned.named_parameters() if name.endswith("identity_gate.gamma")]
    assert len(gammas) == 3 and all(g != 0.0 for g in gammas)


@pytest.mark.slow
def test_train_base_reproduces_a_checkpoint_like_the_shipped_one(tmp_path: Path) -> None:
    """Same keys and shapes and a comparable accuracy (bit-identical on the machine that wrote the file; another
    CPU's kernels may round differently, and training amplifies that)."""
    output = tmp_path / "digits_resnet.pt"
    done, _ = run_module("examples.digits.train_base", "-o", str(output))
    retrained = torch.load(output, weights_only=True)
    shipped = torch.load(CHECKPOINT, weights_only=True)
    assert {k: v.shape for k, v in retrained.items()} == {k: v.shape for k, v in shipped.items()}
    accuracy = float(done.stdout.split("Test accuracy: ")[1].split("%")[0]) / 100
    assert accuracy >= 0.97


@pytest.mark.slow
def test_digits_example_is_deterministic(tmp_path: Path) -> None:
    summaries = []
    for run in ("first", "second"):
        run_module("examples.digits.run", "--output-dir", str(tmp_path / run))
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        summaries.append({key: summary[key] for key in ("base", "inserted", "finetuned", "control", "added_params")})
    assert summaries[0] == summaries[1]
