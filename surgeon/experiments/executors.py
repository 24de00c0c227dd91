"""Where trials run: one at a time in fresh local processes (the default), or as Ray tasks.

An executor only runs trials and hands back their records; it writes nothing of the store. Every trial, on either
executor, is a process of its own, ``python -m surgeon.experiments.worker``, so no state of one trial (threads,
deterministic flags, imported modules, a leaked CUDA context) reaches the next, and both executors run a trial
the same way. A Ray task starts that process from a Ray worker that lives on across trials: the worker's own start
(importing Ray, joining the cluster) is paid once per worker, not once per trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

from ..errors import SurgeonError
from .options import Execution
from .trial import MODEL_FILE, RECORD_FILE, TrialRecord, TrialSpec

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "run_in_process"]

Started = Callable[[TrialSpec], None]
RAY_MISSING = 'the ray executor needs Ray: pip install "attn-surgeon[ray]"'


class Executor(ABC):
    """Runs trials and yields each one's record as it finishes (in any order)."""

    parallel: int = 1
    """How many trials run at once (for the estimate of the time left)."""

    @abstractmethod
    def run(self, trials: Sequence[TrialSpec], started: Started) -> Iterator[tuple[TrialSpec, TrialRecord]]:
        """Run ``trials``, calling ``started(trial)`` as each begins; yield ``(trial, record)`` as each ends."""

    def close(self) -> None:
        """Release what the executor started (a local Ray)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """One trial at a time, each in a fresh process (:func:`run_in_process`): it inherits this one's environment and
    working directory, so ``--trainer my_pkg.train:fit`` imports there as it would here."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def run(self, trials: Sequence[TrialSpec], started: Started) -> Iterator[tuple[TrialSpec, TrialRecord]]:
        for trial in trials:
            started(trial)
            yield trial, run_in_process(trial, self.scratch)


def run_in_process(trial: TrialSpec, scratch: Path) -> TrialRecord:
    """Run ``trial`` in a new ``python -m surgeon.experiments.worker`` process and read back its record.

    The process inherits this process's environment (``CUDA_VISIBLE_DEVICES`` as Ray set it for a task, the path)
    and working directory; its stdout and stderr, C libraries' output included, become the record's log. It hands
    its record over in a temporary directory under ``scratch``, removed afterwards. A process that dies without a
    record (killed, out of memory) gives a ``failed`` record with its exit status.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder, tempfile.TemporaryFile("w+b") as log:
        out = Path(folder)
        spec_path = out / "spec.json"
        spec_path.write_text(json.dumps(trial.to_dict()), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "surgeon.experiments.worker", str(spec_path), str(out), str(os.getpid())]
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        log.seek(0)
        text = log.read().decode("utf-8", errors="replace")
        record_path = out / RECORD_FILE
        if not record_path.is_file():  # the process died (killed, out of memory) before it could say so
            return TrialRecord("failed", error=f"the trial's process exited with status {code} and no record", log=text)
        data = json.loads(record_path.read_text(encoding="utf-8"))
        model = out / MODEL_FILE
        return TrialRecord(data["status"], data["metrics"], data["seconds"], data["error"], text, data["curves"],
                           model.read_bytes() if model.is_file() else None)


def _remote_trial(spec: dict[str, Any]) -> TrialRecord:
    """A Ray task's body: one trial in a process of its own, on the worker's machine; the record goes back through
    Ray's object store."""
    return run_in_process(TrialSpec(**spec), Path(tempfile.gettempdir()))


def _start_local_ray(ray: Any, cpus: int | None) -> None:
    """A Ray for this run whose workers import what the driver imports (the user's trainer, this package).

    A local Ray's workers inherit the environment of the process that starts it, so the driver's path goes into
    ``PYTHONPATH`` for the start alone. (A ``runtime_env`` would say the same, but makes Ray start every worker in a
    pool of its own instead of the ones it starts with: seconds per trial on a small machine.)
    """
    path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


class RayExecutor(Executor):
    """Trials as Ray tasks, on a local Ray started for the run (stopped by :meth:`close`) or an existing cluster.

    Each task asks for ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs and runs its trial in a process of its
    own (:func:`run_in_process`, which sees the GPUs Ray gave the task); the Ray worker that starts it lives on to
    start the next (the trial's process, not the worker, holds the GPU, so ``max_calls`` stays unlimited for GPU
    tasks too). A task whose worker dies is retried ``max_retries`` times. The records come back through Ray's
    object store; workers need no shared filesystem for results (the trainer's own output stays in its workdir on
    the worker's machine).

    Raises:
        SurgeonError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, execution: Execution) -> None:
        try:
            import ray
        except ImportError:
            raise SurgeonError(RAY_MISSING) from None
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            try:
                if execution.ray_address:
                    ray.init(address=execution.ray_address, logging_level="ERROR", log_to_driver=False)
                else:
                    _start_local_ray(ray, execution.ray_cpus)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = execution.ray_address or "a local Ray"
                raise SurgeonError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
            self.started_here = True
        cpus = execution.cpus_per_trial
        self.remote = ray.remote(num_cpus=cpus, num_gpus=execution.gpus_per_trial, max_retries=execution.max_retries,
                                 max_calls=0)(_remote_trial)
        total = int(ray.cluster_resources().get("CPU", cpus))
        self.parallel = max(1, total // cpus)

    def run(self, trials: Sequence[TrialSpec], started: Started) -> Iterator[tuple[TrialSpec, TrialRecord]]:
        ray = self.ray
        pending = {self.remote.remote(trial.to_dict()): trial for trial in trials}
        # Ray does not say when a queued task starts; the first `parallel` are taken as running, then one per finish
        queue = list(pending.values())
        for trial in queue[:self.parallel]:
            started(trial)
        queue = queue[self.parallel:]
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            trial = pending.pop(ready)
            try:
                record = ray.get(ready)
            except Exception as exc:  # noqa: BLE001  the worker died max_retries + 1 times: the trial failed
                record = TrialRecord("failed", error=f"the Ray task failed: {exc}")
            yield trial, record
            if queue:  # after the driver counted the finished one
                started(queue.pop(0))

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False


def make_executor(execution: Execution, scratch: Path) -> Executor:
    """The executor ``execution`` asks for; ``scratch`` is a directory of the driver's for local workers' files.

    Raises:
        SurgeonError: ``ray`` without Ray installed.
    """
    if execution.executor == "ray":
        return RayExecutor(execution)
    return LocalExecutor(scratch)
