"""Whole ablations on the local executor: dry run, failures and divergence, resuming, and a refused directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surgeon.errors import ExperimentError
from surgeon.experiments import AblateOptions, Loading, ablate
from tests._util import REPO, run_cli

from .conftest import DIGITS, calls_by_seed


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path, trainers: Path) -> None:
    result = run_cli("ablate", *DIGITS, "--blocks", "eca,se", "--seeds", "0,7", "--trainer", "ablate_trainers:fit",
                     "-o", tmp_path / "exp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 arms x 2 seeds (0,7) = 6 trials, trainer ablate_trainers:fit" in result.stdout
    assert "31,434" in result.stdout and "31,446" in result.stdout and "+12" in result.stdout  # ECA: 12 parameters
    assert not (tmp_path / "exp").exists() and not any(trainers.iterdir())


def test_failed_and_diverged_trials_are_recorded_and_the_exit_status_is_1(tmp_path: Path, trainers: Path) -> None:
    exp = tmp_path / "exp"
    result = run_cli("ablate", *DIGITS, "--seeds", "3", "--trainer", "ablate_trainers:flaky", "-o", exp)
    assert result.exit_code == 1, result.output
    assert "not every trial finished (1 failed, 1 diverged)" in result.stderr
    statuses = [json.loads((exp / f"trials/baseline/seed-{seed}/status.json").read_text()) for seed in range(3)]
    assert [status["status"] for status in statuses] == ["done", "failed", "diverged"]
    assert "RuntimeError: boom on seed 1" in (exp / "trials/baseline/seed-1/log.txt").read_text()
    assert "RuntimeError: boom on seed 1" in statuses[1]["error"] and statuses[2]["metrics"] == {"score": None}
    results = json.loads((exp / "results.json").read_text())
    assert results["complete"] is False and results["trials"]["failed"] == 1 and results["trials"]["diverged"] == 1
    # the same command retries the failed trial only: done and diverged trials are results
    assert run_cli("ablate", *DIGITS, "--seeds", "3", "--trainer", "ablate_trainers:flaky", "-o", exp).exit_code == 1
    assert calls_by_seed(trainers) == {0: 1, 1: 2, 2: 1}


def _options(exp: Path, seeds: tuple[int, ...] = (0, 1)) -> AblateOptions:
    return AblateOptions(exp, seeds=seeds, trainer="ablate_trainers:fit", loading=Loading(input_shape=(1, 1, 16, 16)))


def test_resuming_runs_only_what_did_not_finish(tmp_path: Path, trainers: Path) -> None:
    exp = tmp_path / "exp"
    first = ablate(DIGITS[0], _options(exp))
    assert first.complete and first.ran == 2 and calls_by_seed(trainers) == {0: 1, 1: 1}
    killed = exp / "trials/baseline/seed-1"
    (killed / "status.json").unlink()  # as if the run had been killed while this trial trained
    (killed / "train/half-written.ckpt").write_text("partial")
    again = ablate(DIGITS[0], _options(exp))
    assert (again.resumed, again.ran) == (1, 1) and calls_by_seed(trainers) == {0: 1, 1: 2}
    assert again.complete and not (killed / "train/half-written.ckpt").exists()
    figures = [[(t["metrics"], t["curves"]) for t in r.results["arms"][0]["trials"]] for r in (first, again)]
    assert figures[0] == figures[1]  # seeded: the trial run again gives the same figures
    curves = again.results["arms"][0]["trials"][1]["curves"]
    assert list(curves) == ["epoch", "loss"] and len(curves["loss"]) == 3  # the text column is not a curve
    assert ablate(DIGITS[0], _options(exp)).ran == 0


def test_another_plan_in_the_directory_is_refused(tmp_path: Path, trainers: Path) -> None:
    exp = tmp_path / "exp"
    ablate(DIGITS[0], _options(exp, seeds=(0,)))
    with pytest.raises(ExperimentError, match=r"holds another experiment \(its seeds differ\)"):
        ablate(DIGITS[0], _options(exp, seeds=(0, 1)))
    result = run_cli("ablate", *DIGITS, "--seeds", "1", "--blocks", "eca", "--trainer", "ablate_trainers:fit",
                     "-o", exp)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {exp}: holds another experiment (its arms differ); give another -o "
                                     "directory, or the command that made it to resume it")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    with pytest.raises(ExperimentError, match="exists and is not an experiment directory"):
        ablate(DIGITS[0], _options(tmp_path / "other"))


def test_the_trainer_is_required_for_a_plain_model(tmp_path: Path) -> None:
    result = run_cli("ablate", *DIGITS, "-o", tmp_path / "exp")
    assert result.exit_code == 1
    assert "give the trainer that trains it, --trainer package.module:function" in result.stderr


def test_without_ray_the_ray_executor_says_how_to_install_it(tmp_path: Path, trainers: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = run_cli("ablate", *DIGITS, "--seeds", "2", "--trainer", "ablate_trainers:fit", "--executor", "ray",
                     "-o", tmp_path / "exp")
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: the ray executor needs Ray: pip install "attn-surgeon[ray]"'
    assert not (tmp_path / "exp").exists()


ORPHAN = """
import os, subprocess, sys, time
child = '''
import sys, threading, time
from surgeon.experiments.worker import exit_with_parent
print("imported", flush=True)
threading.Thread(target=exit_with_parent, args=(int(sys.argv[1]), 0.05), daemon=True).start()
time.sleep(60)
print("slept", flush=True)
'''
# the child shares this process's stdout, the test's pipe; this process dies at once, without waiting for it,
# likely before the child has imported anything: the child watches the process id it was given
subprocess.Popen([sys.executable, "-c", child, str(os.getpid())])
os._exit(0)
"""


def test_a_trial_whose_parent_died_stops() -> None:
    """A trial's process (``exit_with_parent`` is the thread the worker starts) ends once its parent is gone, rather
    than training on with nobody to hand its record to: the pipe it shares with the test closes within seconds,
    not after its 60-second sleep."""
    start = time.monotonic()
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, cwd=REPO, text=True)
    # read to EOF: until every writer of the pipe, the orphaned child too, has exited
    assert parent.stdout.read() == "imported\n"
    assert time.monotonic() - start < 40 and parent.wait() == 0
