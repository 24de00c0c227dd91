"""The digits example end to end on a small budget, and a local Ray giving the same table as the local executor."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.experiments import AblateOptions, Execution, Loading, ablate
from surgeon.pipeline import load_model
from tests._util import run_cli

from .conftest import DIGITS


def test_digits_example_end_to_end(tmp_path: Path, trainers: Path) -> None:
    """examples/digits/train.py through the command line: two arms, two seeds."""
    exp = tmp_path / "exp"
    result = run_cli("ablate", *DIGITS, "--blocks", "eca", "--seeds", "2", "--trainer", "examples.digits.train:train",
                     "-o", exp)
    assert result.exit_code == 0, result.output
    assert "4/4 trials done" in result.stderr and "Wrote" in result.stdout
    results = json.loads((exp / "results.json").read_text())
    assert results["complete"] and results["metric"] == "accuracy" and results["mode"] == "max"
    baseline, eca = results["arms"]
    assert (baseline["params"], eca["params"]) == (31_434, 31_446)
    # two epochs from scratch: 94-95% on 450 test images, where chance is 10%
    assert all(trial["metrics"]["accuracy"] > 0.8 for arm in results["arms"] for trial in arm["trials"])
    assert list(eca["trials"][0]["curves"]) == ["epoch", "train_loss", "test_accuracy", "test_loss"]
    assert eca["verdict"] in ("better", "worse", "no evidence") and eca["vs_baseline"]["n"] == 2
    # the trained candidate keeps its block: surgeon.load rebuilds it from its file, with the trained weights
    trained = surgeon.load(exp / "trials/eca/seed-1/model.pt", trust_code=True)
    assert any(name.endswith("eca_residual") for name, _ in trained.named_modules())
    state = torch.load(exp / "trials/baseline/seed-0/model.pt", weights_only=True)
    assert set(state) == set(load_model("examples.digits.model:build").module.state_dict())
    report = run_cli("ablate", "--report", exp, "--format", "json")
    assert report.exit_code == 0 and json.loads(report.stdout) == results
    by_loss = json.loads(run_cli("ablate", "--report", exp, "--format", "json", "--metric", "loss", "--mode",
                                 "min").stdout)
    assert by_loss["metric"] == "loss" and by_loss["arms"][1]["mean"] == pytest.approx(
        sum(t["metrics"]["loss"] for t in eca["trials"]) / 2)


def _table(results: dict) -> list:
    return [(arm["name"], [(t["seed"], t["status"], t["metrics"], t["curves"]) for t in arm["trials"]], arm["mean"],
             arm["std"], arm["vs_baseline"], arm["verdict"]) for arm in results["arms"]]


@pytest.mark.slow  # a local Ray starts in 10-20 s, and the four trials run again: about a minute on 2 cores
def test_ray_gives_the_same_table_as_the_local_executor(tmp_path: Path, trainers: Path) -> None:
    """Each trial runs in a process of its own on either executor (the Ray workers live on; the trials do not)."""
    pytest.importorskip("ray")
    common = {"blocks": ("eca",), "seeds": (0, 1), "trainer": "ablate_trainers:fit",
              "loading": Loading(input_shape=(1, 1, 16, 16))}
    local = ablate(DIGITS[0], AblateOptions(tmp_path / "local", **common))
    on_ray = ablate(DIGITS[0], AblateOptions(tmp_path / "ray", **common, execution=Execution("ray", ray_cpus=2)))
    assert local.complete and on_ray.complete
    assert _table(on_ray.results) == _table(local.results)
    processes = {path.name.split("-")[1] for path in trainers.iterdir()}
    assert len(processes) == 8, sorted(path.name for path in trainers.iterdir())  # 4 trials on each side
    assert "trained seed 1" in (tmp_path / "ray/trials/eca/seed-1/log.txt").read_text()  # the trial's output
    import ray

    assert not ray.is_initialized()  # the Ray started for the run is stopped after it


@pytest.fixture
def ray_with_a_gpu(trainers: Path) -> Iterator[None]:
    """A local Ray that says it has one GPU (none is needed: Ray only hands out its index), stopped afterwards; started
    after ``trainers`` set the path its workers inherit."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow  # a local Ray starts in 5-20 s
def test_a_ray_trial_sees_the_gpu_ray_gave_its_task(tmp_path: Path, trainers: Path, ray_with_a_gpu: None) -> None:
    """The trial runs in a process the Ray task starts, which inherits the CUDA_VISIBLE_DEVICES Ray set for the
    task."""
    options = AblateOptions(tmp_path / "exp", seeds=(0,), trainer="ablate_trainers:visible",
                            loading=Loading(input_shape=(1, 1, 16, 16)),
                            execution=Execution("ray", gpus_per_trial=1))
    result = ablate(DIGITS[0], options)
    assert result.complete
    (trial,) = result.results["arms"][0]["trials"]
    assert trial["metrics"]["cuda_visible"] == 0.0
    assert trial["metrics"]["pid"] != os.getpid()
