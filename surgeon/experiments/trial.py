"""One trial: build the arm's model, seed everything, call the trainer once, and hand back a record.

:func:`run_trial` runs in the trial's own process (``python -m surgeon.experiments.worker``, which either executor
starts). It writes nothing of the experiment's store: what the trainer writes goes to its ``workdir``, and everything
the driver records — the status, the metrics, the time, the log, the curves the trainer wrote to
``workdir/results.csv``, the trained model — comes back in the :class:`TrialRecord`.
"""

from __future__ import annotations

import csv
import importlib
import math
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SurgeonError
from ..io.registry import adapter_of_model
from ..pipeline import save
from ..recipe import recipe_of
from .arms import build_arm_model
from .plan import ExperimentPlan, framework_trainer

__all__ = ["STATUSES", "TrialRecord", "TrialSpec", "load_trainer", "read_curves", "run_trial", "seed_everything"]

STATUSES = ("done", "failed", "diverged")
MODEL_FILE = "model.pt"
RECORD_FILE = "record.json"
"""The files a local worker process hands its record over in (in a scratch directory of the driver)."""


@dataclass(frozen=True)
class TrialSpec:
    """What one trial runs: plain data, so it crosses to any process.

    Attributes:
        plan: the plan, as :meth:`ExperimentPlan.to_dict` writes it.
        arm: the arm's name.
        seed: the seed.
        workdir: where the trainer writes (the trial's ``train/`` directory).
        threads: torch's intra-op thread count during the trial.
    """

    plan: dict[str, Any]
    arm: str
    seed: int
    workdir: str
    threads: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return self.arm, self.seed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrialRecord:
    """What a trial hands back to the driver.

    Attributes:
        status: ``done``, ``failed`` (the trial raised) or ``diverged`` (a metric is NaN or infinite).
        metrics: the trainer's metrics.
        seconds: wall time of the trial, model building included.
        error: the traceback of a failure, or why the trial diverged.
        log: what the trial printed (stdout and stderr).
        curves: the columns of ``workdir/results.csv`` if the trainer wrote one (``{column: [values]}``).
        model: the trained model's file (``model.pt``) as bytes; ``None`` where a framework's trainer saved it in
            the workdir, in the framework's own layout.
    """

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    log: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)
    model: bytes | None = None

    def summary(self) -> dict[str, Any]:
        """The record without its log and model, as ``status.json`` holds it."""
        return {"status": self.status, "metrics": self.metrics, "seconds": self.seconds, "error": self.error}


def seed_everything(seed: int, threads: int) -> None:
    """Seed Python's, NumPy's and torch's generators, and fix torch's CPU thread count (a reduction split over
    another number of threads sums in another order)."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs, but is not required
        return
    numpy.random.seed(seed % 2**32)


def load_trainer(spec: str) -> Callable[..., Mapping[str, Any]]:
    """The function ``package.module:function`` names.

    Raises:
        SurgeonError: the module cannot be imported or has no such callable.
    """
    module_name, _, name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SurgeonError(f"trainer {spec}: cannot import {module_name} ({exc})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise SurgeonError(f"trainer {spec}: {module_name} has no function {name}")
    return function


def read_curves(workdir: Path) -> dict[str, list[float]]:
    """The numeric columns of the ``results.csv`` a trainer wrote in ``workdir`` (or, as Ultralytics does, in a run
    directory below it), headers stripped of padding; empty without one."""
    path = workdir / "results.csv"
    if not path.is_file():
        path = next(iter(sorted(workdir.rglob("results.csv"))), path)
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    if not rows:
        return {}
    curves: dict[str, list[float]] = {}
    for index, header in enumerate(rows[0]):
        try:
            values = [float(row[index]) for row in rows[1:] if index < len(row) and row[index].strip()]
        except ValueError:  # a text column (a run name): not a curve
            continue
        if values:
            curves[header.strip()] = values
    return curves


def _call_trainer(plan: ExperimentPlan, model: nn.Module, seed: int, workdir: Path) -> dict[str, float]:
    spec = plan.trainer["spec"]
    framework = framework_trainer(spec)
    if framework is not None:  # the framework's own trainer, through its adapter
        returned = framework.train(model, seed=seed, workdir=workdir, args=dict(plan.trainer["args"]),
                                   metric=plan.metric)
    else:
        returned = load_trainer(spec)(model, seed=seed, workdir=workdir)
    if not isinstance(returned, Mapping) or not returned:
        raise SurgeonError(f"trainer {spec} returned {type(returned).__name__}; it must return a mapping of metric "
                           "names to numbers, e.g. {'accuracy': 0.93}")
    try:
        metrics = {str(name): float(value) for name, value in returned.items()}
    except (TypeError, ValueError):
        raise SurgeonError(f"trainer {spec} returned a metric that is not a number: {dict(returned)!r}") from None
    if plan.metric is not None and plan.metric not in metrics:
        raise SurgeonError(f"trainer {spec} returned no {plan.metric!r} (it returned {', '.join(metrics)}); pass "
                           "--metric with one of those")
    return metrics


def _model_bytes(plan: ExperimentPlan, model: nn.Module) -> bytes | None:
    """The trained model's file: a patched model with its recipe (``surgeon.load`` rebuilds it), else its
    state_dict. ``None`` where a framework's trainer trained it (it saved its checkpoints in its own layout, in the
    workdir) or where the framework's layout is a directory (a ``save_pretrained`` one), not one file."""
    adapter = adapter_of_model(model)
    if framework_trainer(plan.trainer["spec"]) is not None or (adapter is not None and adapter.writes_directory):
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / MODEL_FILE
        if recipe_of(model) is not None:
            save(model, path)
        else:
            torch.save(model.state_dict(), path)
        return path.read_bytes()


def _run(spec: TrialSpec) -> TrialRecord:
    plan = ExperimentPlan.from_dict(spec.plan)
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.seed, spec.threads)
    model = build_arm_model(plan, plan.arm(spec.arm))
    metrics = _call_trainer(plan, model, spec.seed, workdir)
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    record = TrialRecord("diverged" if bad else "done", metrics, curves=read_curves(workdir))
    if bad:
        record.error = "diverged: " + ", ".join(f"{name} = {metrics[name]}" for name in bad)
    try:
        record.model = _model_bytes(plan, model)
    except SurgeonError as exc:  # the figures stand; only the file is missing, and the log says why
        print(f"attn-surgeon: the trained model was not saved: {exc}", file=sys.stderr)
    return record


def run_trial(spec: TrialSpec) -> TrialRecord:
    """Run one trial; never raises for what the trial does (a failure is a record with its traceback).

    It runs in the trial's own process (``python -m surgeon.experiments.worker``), whose parent reads what it prints
    as the trial's log; a failure's traceback is printed there too.
    """
    started = time.perf_counter()
    try:
        record = _run(spec)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = traceback.format_exc()
        print(text, file=sys.stderr, end="")
        record = TrialRecord("failed", error=text)
    record.seconds = time.perf_counter() - started
    return record
