"""A trainer module for the ablation tests, written into the test's directory and importable by the trials'
processes (their ``PYTHONPATH`` is the test's directory and the repository)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests._util import REPO

TRAINERS = '''
import os
from pathlib import Path

import torch
import torch.nn.functional as F


def _count(seed):
    calls = os.environ.get("ABLATE_TEST_CALLS")
    if calls:
        Path(calls, f"seed{seed}-{os.getpid()}").touch()


def fit(model, *, seed, workdir):
    """Three SGD steps on one fixed batch; the model's initial weights carry the seed."""
    _count(seed)
    generator = torch.Generator().manual_seed(1234)
    images = torch.randn(32, 1, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    (workdir / "results.csv").write_text("epoch,loss,note\\n" + "".join(f"{i},{v},x\\n" for i, v in enumerate(losses)))
    print(f"trained seed {seed}")
    return {"score": -losses[-1], "loss": losses[-1]}


def visible(model, *, seed, workdir):
    """The GPU indices this trial's process was given, as CUDA_VISIBLE_DEVICES says (-1: unset)."""
    return {"cuda_visible": float(os.environ.get("CUDA_VISIBLE_DEVICES") or -1), "pid": float(os.getpid())}


def flaky(model, *, seed, workdir):
    _count(seed)
    if seed == 1:
        raise RuntimeError(f"boom on seed {seed}")
    if seed == 2:
        return {"score": float("nan")}
    return {"score": 1.0}
'''

DIGITS = ("examples.digits.model:build", "--input-shape", "1,1,16,16")
"""The digits CNN as the command line names it."""


@pytest.fixture
def trainers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ablate_trainers:fit``, ``:visible`` and ``:flaky`` importable here and in the trials' processes; returns the
    directory where ``fit`` and ``flaky`` leave one file per call."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "ablate_trainers.py").write_text(textwrap.dedent(TRAINERS))
    calls = tmp_path / "calls"
    calls.mkdir()
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(code), str(REPO)]))
    monkeypatch.setenv("ABLATE_TEST_CALLS", str(calls))
    return calls


def calls_by_seed(calls: Path) -> dict[int, int]:
    """How many times the trainer ran, by seed."""
    counts: dict[int, int] = {}
    for path in calls.iterdir():
        seed = int(path.name.split("-")[0].removeprefix("seed"))
        counts[seed] = counts.get(seed, 0) + 1
    return counts
