"""The experiment directory, written by the driver alone.

::

    EXPDIR/
      plan.json                     the plan (what makes a directory this experiment)
      costs.json                    each arm's parameters and FLOPs
      results.json                  the results, rewritten after every trial
      trials/<arm>/seed-<n>/
        train/                      the trainer's workdir (its checkpoints, its results.csv)
        model.pt                    the trained model (a framework's trainer saves its own in train/)
        log.txt                     what the trial printed, and its traceback if it failed
        curves.json                 the columns of the trainer's results.csv
        status.json                 done | failed | diverged, its metrics and time: written last, atomically

A trial directory without ``status.json`` is a trial that was killed midway; resuming clears it and runs it again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ExperimentError
from ..io import atomic_write
from ..profile.jsonsafe import json_safe
from .plan import Arm, ExperimentPlan
from .trial import MODEL_FILE, STATUSES, TrialRecord

__all__ = ["PLAN_FILE", "RESULTS_FILE", "Store", "StoredTrial"]

PLAN_FILE = "plan.json"
COSTS_FILE = "costs.json"
RESULTS_FILE = "results.json"
STATUS_FILE = "status.json"


StoredTrial = dict[str, Any]
"""A finished trial as ``status.json`` holds it (``status``, ``metrics``, ``seconds``, ``error``), with its
``curves``."""


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda file: file.write(text.encode("utf-8")), force=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path}: cannot be read ({exc})") from None


class Store:
    """One experiment directory (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def plan_path(self) -> Path:
        return self.root / PLAN_FILE

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def scratch(self) -> Path:
        """Where local workers hand their records over (inside the directory, so renames stay on one filesystem)."""
        return self.root / ".scratch"

    def trial_dir(self, arm: Arm, seed: int) -> Path:
        return self.root / "trials" / arm.directory / f"seed-{seed}"

    # ------------------------------------------------------------------------------------------------- the plan

    def check(self, plan: ExperimentPlan) -> bool:
        """Whether the directory holds this experiment (``True``: it resumes) or nothing yet (``False``).

        Raises:
            ExperimentError: the directory holds another plan, or files that are not an experiment's.
        """
        if self.plan_path.is_file():
            stored = self.read_plan().identity()
            if stored != plan.identity():
                changed = [key for key, value in plan.identity().items() if stored.get(key) != value]
                raise ExperimentError(f"{self.root}: holds another experiment (its {', '.join(changed)} differ); "
                                      "give another -o directory, or the command that made it to resume it")
            return True
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise ExperimentError(f"{self.root}: exists and is not an experiment directory; give a new or empty "
                                  "-o directory")
        return False

    def open(self, plan: ExperimentPlan) -> bool:
        """Make the directory this experiment's (see :meth:`check`): write the plan in a new or empty directory.
        Returns whether it resumes."""
        if self.check(plan):
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.plan_path, plan.to_dict())
        return False

    def read_plan(self) -> ExperimentPlan:
        """The plan of an existing experiment.

        Raises:
            ExperimentError: no experiment here.
        """
        if not self.plan_path.is_file():
            raise ExperimentError(f"{self.root}: no {PLAN_FILE}; not an experiment directory (written by "
                                  "`attn-surgeon ablate -o DIR`)")
        try:
            return ExperimentPlan.from_dict(_read_json(self.plan_path))
        except ExperimentError:
            raise
        except Exception as exc:  # noqa: BLE001  a SurgeonError or a malformed plan: one line either way
            raise ExperimentError(f"{self.plan_path}: {exc}") from None

    def write_costs(self, costs: dict[str, dict[str, Any]]) -> None:
        _write_json(self.root / COSTS_FILE, costs)

    def read_costs(self) -> dict[str, dict[str, Any]]:
        path = self.root / COSTS_FILE
        return _read_json(path) if path.is_file() else {}

    def write_results(self, results: dict[str, Any]) -> None:
        _write_json(self.results_path, results)

    # ----------------------------------------------------------------------------------------------- the trials

    def read_trial(self, arm: Arm, seed: int) -> StoredTrial | None:
        """The finished trial, or ``None`` if it never ran or was killed midway."""
        folder = self.trial_dir(arm, seed)
        status = folder / STATUS_FILE
        if not status.is_file():
            return None
        data = _read_json(status)
        if data.get("status") not in STATUSES:
            raise ExperimentError(f"{status}: unknown status {data.get('status')!r}")
        curves = folder / "curves.json"
        return dict(data, curves=_read_json(curves) if curves.is_file() else {})

    def prepare_trial(self, arm: Arm, seed: int) -> Path:
        """An empty trial directory (what a killed or failed run left is removed); returns its trainer workdir."""
        folder = self.trial_dir(arm, seed)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder / "train"

    def write_trial(self, arm: Arm, seed: int, record: TrialRecord) -> None:
        """Record a finished trial: its files first, ``status.json`` last, each atomically."""
        folder = self.trial_dir(arm, seed)
        folder.mkdir(parents=True, exist_ok=True)
        log = record.log + (record.error or "" if record.error and record.error not in record.log else "")
        atomic_write(folder / "log.txt", lambda file: file.write(log.encode("utf-8")), force=True)
        if record.model is not None:
            model = record.model
            atomic_write(folder / MODEL_FILE, lambda file: file.write(model), force=True)
        if record.curves:
            _write_json(folder / "curves.json", record.curves)
        _write_json(folder / STATUS_FILE, {"arm": arm.name, "seed": seed, **record.summary()})
