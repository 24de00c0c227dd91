"""``surgeon.ablate``: plan the experiment, count each arm, run the trials that are not finished, and keep the
results; ``read_results`` and ``render_report`` read an experiment back without running anything.

The driver is the only writer of the store. It runs a trial again only if it never finished (killed midway: no
``status.json``) or failed (an error of the run, which the user may have fixed); ``done`` and ``diverged`` trials
are results and are never re-run.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SurgeonError
from ..io.registry import adapter_of_model
from ..pipeline import load_model
from .arms import ArmCost, arm_cost, build_arm_model
from .executors import Executor, make_executor
from .options import AblateOptions
from .plan import ExperimentPlan, build_plan, framework_trainer
from .results import build_results
from .store import Store, StoredTrial
from .trial import TrialRecord, TrialSpec

__all__ = ["REPORT_FORMATS", "AblateResult", "TrialProgress", "ablate", "plan_ablation", "read_results",
           "render_report"]

REPORT_FORMATS = ("md", "latex", "csv", "json", "html")


@dataclass(frozen=True)
class TrialProgress:
    """Where a run stands, told to the progress callback whenever a trial starts or ends.

    Attributes:
        done: trials finished in this run (whatever their status).
        running: trials running now.
        left: trials not started yet.
        total: trials this run has to run (the finished ones of an earlier run excluded).
        eta: estimated seconds left, from the mean time of the trials finished so far; ``None`` before the first.
        message: what just happened (``se seed 2: done in 14.2 s``).
        status: the status of the trial that just ended; ``None`` when one started.
    """

    done: int
    running: int
    left: int
    total: int
    eta: float | None
    message: str
    status: str | None = None


@dataclass
class AblateResult:
    """What :func:`ablate` did.

    Attributes:
        plan: the experiment's plan.
        costs: each arm's parameters and FLOPs, by name.
        results: the results dict (``results.json``); ``None`` for a dry run.
        resumed: trials already finished in the directory, not run again.
        ran: trials run now.
        output: the experiment directory.
        pending: the ``(arm, seed)`` trials a run has to run (never finished, or failed).
    """

    plan: ExperimentPlan
    costs: dict[str, ArmCost]
    results: dict[str, Any] | None = None
    resumed: int = 0
    ran: int = 0
    output: Path | None = None
    pending: list[tuple[str, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every trial of the experiment is ``done`` (the command's exit status is 0 only then)."""
        return bool(self.results and self.results["complete"])


Progress = Callable[[TrialProgress], None]


def _default_trainer(source: str, options: AblateOptions) -> str:
    if options.trainer is not None:
        return options.trainer
    framework = adapter_of_model(load_model(source, options.loading).module)
    if framework is not None and framework_trainer(framework.name) is not None:
        return framework.name
    raise SurgeonError(f"{source}: give the trainer that trains it, --trainer package.module:function (called as "
                       "function(model, *, seed, workdir) and returning {metric: value})")


def plan_ablation(model: str | os.PathLike[str], options: AblateOptions) -> AblateResult:
    """The plan and each arm's cost, without running or writing anything (``--dry-run``).

    Every arm's model is built once, which checks that each block fits and each control loads before hours of
    training. If ``options.output`` already holds the same experiment, ``resumed`` counts its finished trials.

    Raises:
        SurgeonError: the model or a control cannot be loaded, a block does not fit, or the directory holds another
            experiment.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise SurgeonError(f"ablate rebuilds the model in each trial's own process, so it takes a spec or a checkpoint "
                           f"path, not a {type(model).__name__}: save its weights (torch.save(model.state_dict(), "
                           "path)) and pass the path with Loading(arch='package.module:factory')")
    plan = build_plan(str(model), options, _default_trainer(str(model), options))
    store = Store(options.output) if options.output is not None else None
    stored = _stored_trials(store, plan) if store is not None and store.check(plan) else {}  # refused at once
    costs = {}
    for arm in plan.arms:
        built = build_arm_model(plan, arm)
        costs[arm.name] = arm_cost(plan, arm, built)
        del built
        gc.collect()  # patched models hold reference cycles; free each before building the next
    pending = [(arm.name, seed) for arm in plan.arms for seed in plan.seeds
               if stored.get((arm.name, seed)) is None or stored[(arm.name, seed)]["status"] == "failed"]
    return AblateResult(plan, costs, resumed=plan_size(plan) - len(pending), output=store and store.root,
                        pending=pending)


def plan_size(plan: ExperimentPlan) -> int:
    """Trials in the plan: arms x seeds."""
    return len(plan.arms) * len(plan.seeds)


def _stored_trials(store: Store, plan: ExperimentPlan) -> dict[tuple[str, int], StoredTrial | None]:
    return {(arm.name, seed): store.read_trial(arm, seed) for arm in plan.arms for seed in plan.seeds}


def ablate(model: str | os.PathLike[str], options: AblateOptions, *,
           progress: Progress | None = None) -> AblateResult:
    """Train every arm with every seed through the trainer, and compare each arm with the baseline, paired by seed.

    Args:
        model: the model, as a spec (``torchvision:resnet18``, ``ultralytics:yolov8n.yaml``,
            ``package.module:factory``) or a checkpoint path: each trial rebuilds it in its own process.
        options: the arms, seeds, trainer, experiment directory and executor.
        progress: told where the run stands as trials start and end.

    Returns:
        The plan, the costs, the results (also in ``options.output / "results.json"``) and what ran.

    Raises:
        SurgeonError: before anything runs, for anything :func:`plan_ablation` refuses; or the executor cannot
            start (Ray missing or unreachable). A trial that fails does not raise: it is recorded ``failed``.
    """
    if options.output is None:
        raise SurgeonError("an ablation needs an experiment directory (-o EXPDIR, AblateOptions.output)")
    planned = plan_ablation(model, options)
    plan, store = planned.plan, Store(options.output)
    # the executor first: a missing Ray or an unreachable cluster fails before anything is written
    executor = make_executor(options.execution, store.scratch) if planned.pending else None
    try:
        store.open(plan)
        costs = {name: cost.to_dict() for name, cost in planned.costs.items()}
        store.write_costs(costs)
        stored = _stored_trials(store, plan)
        if executor is not None:
            _run_trials(executor, store, plan, planned.pending, stored, costs, options, progress)
    finally:
        if executor is not None:
            executor.close()
    results = build_results(plan, stored, costs)
    store.write_results(results)
    return AblateResult(plan, planned.costs, results, planned.resumed, len(planned.pending), store.root,
                        list(planned.pending))


def _run_trials(executor: Executor, store: Store, plan: ExperimentPlan, pending: list[tuple[str, int]],
                stored: dict[tuple[str, int], StoredTrial | None], costs: dict[str, dict[str, Any]],
                options: AblateOptions, progress: Progress | None) -> None:
    """Run the ``pending`` trials on ``executor``, recording each (and the results so far) as it finishes."""
    specs = []
    for name, seed in pending:
        workdir = store.prepare_trial(plan.arm(name), seed)
        stored[(name, seed)] = None
        specs.append(TrialSpec(plan.to_dict(), name, seed, str(workdir.resolve()), options.execution.cpus_per_trial))
    store.write_results(build_results(plan, stored, costs))
    tell = progress or (lambda state: None)
    counts = {"done": 0, "running": 0}
    started_at = time.perf_counter()
    parallel = executor.parallel

    def report(message: str, status: str | None = None) -> None:
        done, running = counts["done"], counts["running"]
        left = len(specs) - done - running
        eta = None
        if done:  # trials finished per second so far, at the parallelism the executor has
            eta = (time.perf_counter() - started_at) / done * (left + running)
        tell(TrialProgress(done, running, left, len(specs), eta, message, status))

    def started(trial: TrialSpec) -> None:
        counts["running"] += 1
        report(f"{trial.arm} seed {trial.seed}: running")

    report(f"{len(specs)} trials to run, {min(parallel, len(specs))} at a time")
    for trial, record in executor.run(specs, started):
        arm = plan.arm(trial.arm)
        store.write_trial(arm, trial.seed, record)
        stored[trial.key] = store.read_trial(arm, trial.seed)
        counts["done"] += 1
        counts["running"] -= 1
        store.write_results(build_results(plan, stored, costs))
        report(f"{trial.arm} seed {trial.seed}: {_outcome(record)}", record.status)
    shutil.rmtree(store.scratch, ignore_errors=True)


def _outcome(record: TrialRecord) -> str:
    if record.status == "done":
        return f"done in {record.seconds:.1f} s"
    reason = (record.error or "").strip().splitlines()
    return f"{record.status} ({reason[-1] if reason else 'no reason given'})"


def read_results(output: str | Path, *, metric: str | None = None, mode: str | None = None) -> dict[str, Any]:
    """The results of an experiment directory, finished or not, recomputed from its stored trials.

    Args:
        output: the experiment directory.
        metric, mode: compare another metric, or the other way, than the plan says.

    Raises:
        ExperimentError: not an experiment directory.
    """
    store = Store(output)
    plan = store.read_plan()
    if mode is not None and mode not in ("max", "min"):
        raise SurgeonError(f"mode must be max or min, got {mode!r}")
    return build_results(plan, _stored_trials(store, plan), store.read_costs(), metric=metric, mode=mode)


def render_report(output: str | Path, fmt: str, *, metric: str | None = None, mode: str | None = None) -> str:
    """An experiment's results as ``md``, ``latex``, ``csv``, ``json`` or ``html`` text; nothing runs.

    Raises:
        ExperimentError: not an experiment directory.
        SurgeonError: an unknown format.
    """
    if fmt not in REPORT_FORMATS:
        raise SurgeonError(f"unknown report format {fmt!r}; valid: {', '.join(REPORT_FORMATS)}")
    results = read_results(output, metric=metric, mode=mode)
    if fmt == "json":
        return json.dumps(results, indent=2) + "\n"
    from .render import render_results  # the renderers (and the HTML page's chart) load only for a report

    return render_results(results, fmt)
