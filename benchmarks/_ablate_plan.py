"""The plan both ablate benchmarks run: the digits CNN of ``examples/digits``, the baseline and inserted blocks,
trained by the example's own trainer for a set number of epochs, one torch thread per trial.

Run as a script, it is one trial "by hand", as a user runs their training script once per variant and seed::

    python benchmarks/_ablate_plan.py BLOCK|baseline SEED WORKDIR

It seeds Python, NumPy and torch, builds the model, inserts the block, trains it, saves the trained weights and
writes the metrics: what ``ablate``'s trial does, without the runner. :func:`train` is the trainer ``ablate`` calls
(``--trainer _ablate_plan:train``, with this folder on ``PYTHONPATH``), so both sides train the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MODEL = "examples.digits.model:build"
INPUT_SHAPE = (1, 1, 16, 16)
EPOCHS_ENV = "ATTN_SURGEON_BENCH_EPOCHS"
"""How many epochs each trial trains (the digits trainer's default when unset); both sides read it."""
TRAINER = "_ablate_plan:train"


def train(model: Any, *, seed: int, workdir: Path) -> dict[str, float]:
    """The digits trainer, for the epochs :data:`EPOCHS_ENV` says."""
    from examples.digits.train import EPOCHS
    from examples.digits.train import train as digits_train

    return digits_train(model, seed=seed, workdir=workdir, epochs=int(os.environ.get(EPOCHS_ENV, EPOCHS)))


def environment(epochs: int) -> dict[str, str]:
    """The environment of every process either side starts: the repository and this folder importable, the epochs."""
    paths = [str(ROOT), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), EPOCHS_ENV: str(epochs)}


def ablate_command(blocks: Sequence[str], seeds: int, output: Path, *extra: str) -> list[str]:
    """``attn-surgeon ablate`` of the plan, as a user types it (the console script's entry point, in a new process)."""
    command = [sys.executable, "-c", "from surgeon.cli import main; main()", "ablate", MODEL, "--input-shape",
               ",".join(map(str, INPUT_SHAPE)), "--seeds", str(seeds), "--trainer", TRAINER, "-o", str(output)]
    return command + (["--blocks", ",".join(blocks)] if blocks else []) + list(extra)


def run_ablate(blocks: Sequence[str], seeds: int, output: Path, epochs: int, *extra: str) -> float:
    """Wall seconds of one ``ablate`` run (output hidden); raises if it did not finish every trial."""
    start = time.perf_counter()
    subprocess.run(ablate_command(blocks, seeds, output, *extra), check=True, env=environment(epochs),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_by_hand(blocks: Sequence[str], seeds: int, output: Path, epochs: int) -> float:
    """Wall seconds of the same trials run one after another, each ``python _ablate_plan.py ARM SEED DIR``."""
    start = time.perf_counter()
    for arm in ["baseline", *blocks]:
        for seed in range(seeds):
            subprocess.run([sys.executable, str(Path(__file__).resolve()), arm, str(seed),
                            str(output / arm / f"seed-{seed}")], check=True, env=environment(epochs),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def trials(blocks: Sequence[str], seeds: int) -> int:
    return (1 + len(blocks)) * seeds


def _one_trial(arm: str, seed: int, workdir: Path) -> None:
    import random

    import numpy
    import torch

    import surgeon
    from examples.digits.model import build

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # what ablate gives a trial with --cpus-per-trial 1, its default
    model = build()
    if arm != "baseline":
        surgeon.insert(model, arm, input_shape=INPUT_SHAPE)
    metrics = train(model, seed=seed, workdir=workdir)
    torch.save(model.state_dict(), workdir / "model.pt")
    (workdir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")


if __name__ == "__main__":
    _one_trial(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
