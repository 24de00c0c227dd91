"""The options of an ablation, as one typed dataclass shared by ``attn-surgeon ablate`` and :func:`surgeon.ablate`,
and the parsing of the values the command line writes as text (seeds, ``key=value`` training arguments)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import SurgeonError
from ..io import LoadOptions

__all__ = ["EXECUTORS", "AblateOptions", "Execution", "Loading", "Placement", "parse_seeds",
           "parse_train_args"]

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Placement:
    """Where the ``blocks`` of an ablation go, as :func:`surgeon.insert` and ``attn-surgeon insert`` take it."""

    after: str = "bottleneck"
    position: str | None = None
    stage: str | int | None = None
    stride: int | None = None
    init: str = "identity"


@dataclass(frozen=True)
class Loading(LoadOptions):
    """How to load the model and the controls (:class:`~surgeon.io.LoadOptions`: ``arch``, ``arch_args``,
    ``trust_code``, ``trust_pickle``), and the probe batch they are patched and counted at.

    Attributes:
        input_shape: the probe batch for surgery and for counting FLOPs [default: the model's declared size].
    """

    input_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Execution:
    """Where the trials run. Not part of the plan: the same plan gives the same table on either executor.

    Attributes:
        executor: ``local`` (one trial at a time, each in its own process) or ``ray`` (Ray tasks).
        ray_address: an existing Ray cluster [default: a local Ray started for the run, and stopped after it].
        ray_cpus: CPUs of the local Ray started for the run [default: all of this machine's].
        cpus_per_trial: CPUs each trial takes; also its torch thread count on either executor, so that both give
            the same numbers.
        gpus_per_trial: GPUs each Ray trial takes (a fraction shares a GPU).
        max_retries: times Ray retries a trial whose worker died (a trial that raised is not retried).
    """

    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus: int | None = None
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    max_retries: int = 1

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise SurgeonError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        if self.cpus_per_trial < 1 or self.gpus_per_trial < 0 or self.max_retries < 0:
            raise SurgeonError("cpus per trial must be at least 1; GPUs per trial and retries must not be negative")


@dataclass(frozen=True)
class AblateOptions:
    """What to train and how: the arms, the seeds, the trainer, the store and the executor.

    Attributes:
        output: the experiment directory (``-o EXPDIR``): the plan, one directory per trial, ``results.json``
            (required to run; a dry run without it checks no directory).
        blocks: one candidate arm per block, at ``placement``.
        placement: where ``blocks`` go.
        rules: one candidate arm per rules file, preset name or patched checkpoint (whose recipe is replayed).
        controls: one control arm per model spec or path, trained the same way (the next size up).
        seeds: the seeds; every arm is trained once with each.
        trainer: ``package.module:function`` called as ``function(model, *, seed, workdir)``, or a framework whose
            adapter trains (``ultralytics``) [default: the model's framework's trainer, else required].
        train_args: arguments of the Ultralytics trainer (``{"data": "coco8.yaml", "epochs": "3"}``).
        metric: the metric compared [default: the first one the trainer returns].
        mode: ``max`` when higher is better, ``min`` when lower is.
        loading: how to load the model and the controls.
        execution: where the trials run.
    """

    output: Path | None = None
    blocks: tuple[str, ...] = ()
    placement: Placement = field(default_factory=Placement)
    rules: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    trainer: str | None = None
    train_args: dict[str, str] = field(default_factory=dict)
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    loading: Loading = field(default_factory=Loading)
    execution: Execution = field(default_factory=Execution)

    def __post_init__(self) -> None:
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "seeds", tuple(int(seed) for seed in self.seeds))
        if not self.seeds:
            raise SurgeonError("an ablation needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise SurgeonError(f"seeds repeat: {', '.join(map(str, self.seeds))}")
        if self.mode not in ("max", "min"):
            raise SurgeonError(f"mode must be max or min, got {self.mode!r}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``3`` means seeds 0, 1, 2; ``0,7,42`` means those seeds.

    Raises:
        SurgeonError: anything else.
    """
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SurgeonError(f"seeds: expected a count like 3 or a list like 0,7,42, got {text!r}") from None
    if not values:
        raise SurgeonError(f"seeds: expected a count like 3 or a list like 0,7,42, got {text!r}")
    if "," not in text:
        if values[0] < 1:
            raise SurgeonError(f"seeds: a count must be at least 1, got {values[0]}")
        return tuple(range(values[0]))
    if len(set(values)) != len(values):
        raise SurgeonError(f"seeds repeat in {text!r}")
    return tuple(values)


def parse_train_args(texts: Sequence[str]) -> dict[str, str]:
    """``yolo train``'s ``key=value`` arguments (``"data=coco8.yaml epochs=3"``, repeatable) as a dict of strings.

    Values stay text: the trainer reads them the way ``yolo`` does. Quoting follows the shell's rules, so
    ``"name='my run'"`` keeps its space.

    Raises:
        SurgeonError: a word without ``=``, or a key given twice.
    """
    parsed: dict[str, str] = {}
    for text in texts:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise SurgeonError(f"train args {text!r}: {exc}") from None
        for word in words:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise SurgeonError(f"train args: expected key=value as `yolo train` takes it, got {word!r}")
            if key in parsed:
                raise SurgeonError(f"train args: {key} is given twice ({parsed[key]!r} and {value!r})")
            parsed[key] = value
    return parsed
