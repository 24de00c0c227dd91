"""``ablate``'s Ultralytics trainer: one trial trained by Ultralytics' own trainer, as ``yolo train`` would.

The arm's model (patched or not) is written to ``workdir/initial.pt`` in Ultralytics' checkpoint layout and trained
from there with ``YOLO(initial.pt).train(...)``: the route a user takes with a patched checkpoint, where Ultralytics
rebuilds the network from ``model.yaml`` (the training hook of :mod:`.training` puts the blocks back), takes the
model's weights, and writes ``workdir/train/`` (``weights/best.pt`` and ``last.pt`` with their blocks,
``results.csv``, which ``ablate`` reads as the trial's curves). The arguments are ``yolo train``'s, parsed from
``key=value`` text with Ultralytics' own value parser; ``seed`` and ``deterministic=True`` are set per trial.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import SurgeonError

__all__ = ["INITIAL_FILE", "MANAGED_ARGS", "RUN_NAME", "default_metric", "train", "train_overrides"]

INITIAL_FILE = "initial.pt"
"""The arm's model before training, in ``workdir``, as the checkpoint Ultralytics' trainer starts from."""
RUN_NAME = "train"
"""Ultralytics' run directory inside ``workdir``."""
MANAGED_ARGS = ("model", "seed", "deterministic", "project", "name", "exist_ok", "resume", "mode")
"""``yolo train`` arguments that ``ablate`` sets per trial; a user's ``--train-args`` may not set them."""


def train_overrides(args: Mapping[str, str], *, seed: int, workdir: Path) -> dict[str, Any]:
    """``args`` (``yolo train``'s ``key=value`` pairs, values as text) as the keyword arguments of ``YOLO.train``:
    values parsed as the ``yolo`` command parses them, then the trial's seed, determinism and run directory.

    Raises:
        SurgeonError: an argument that ``ablate`` sets itself, or no ``data``.
    """
    from ultralytics.cfg import smart_value

    managed = sorted(set(args) & set(MANAGED_ARGS))
    if managed:
        raise SurgeonError(f"train args: ablate sets {', '.join(managed)} itself for every trial; remove it from "
                           "--train-args")
    if "data" not in args:
        raise SurgeonError("train args: no data; pass the data set as yolo train takes it, e.g. --train-args "
                           "\"data=coco8.yaml epochs=100 imgsz=640\"")
    overrides = {key: smart_value(value) if isinstance(value, str) else value for key, value in args.items()}
    return {**overrides, "seed": int(seed), "deterministic": True, "project": str(workdir), "name": RUN_NAME,
            "exist_ok": True}


def default_metric(metrics: Mapping[str, float]) -> str:
    """The metric ``ablate`` compares by default: mAP50-95 of the task's first head (``metrics/mAP50-95(B)`` for
    detection, segmentation and pose: the boxes), top-1 accuracy for classification, else the first metric."""
    for prefix in ("metrics/mAP50-95(", "metrics/accuracy_top1"):
        found = next((name for name in metrics if name.startswith(prefix)), None)
        if found:
            return found
    return next(iter(metrics))


@contextlib.contextmanager
def _torch_determinism_restored() -> Iterator[None]:
    """Ultralytics' ``deterministic=True`` switches torch's deterministic algorithms and cuDNN flags on for the
    whole process; the caller gets its own settings back."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    environment = {key: os.environ.get(key) for key in ("CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")}
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        for key, value in environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _save_initial(model: nn.Module, path: Path) -> None:
    """The model as a checkpoint ``YOLO(path)`` loads: patched, with its recipe (``surgeon.save``); unpatched (the
    baseline, a control) as ``YOLO.save`` writes one (the model pickled whole in half precision, its metadata)."""
    from ...io import atomic_write, save_model
    from ...recipe import recipe_of
    from .files import native_layout
    from .models import is_ultralytics_model

    if not is_ultralytics_model(model):
        raise SurgeonError(f"the ultralytics trainer trains Ultralytics models; this is a {type(model).__name__} "
                           "(pass --trainer package.module:function for it)")
    recipe = recipe_of(model)
    if recipe is not None:
        save_model(model, path, recipe, force=True)
        return
    layout = native_layout(model)
    checkpoint = {**layout.extras, layout.key: copy.deepcopy(model).half()}
    atomic_write(path, lambda file: torch.save(checkpoint, file), force=True)


def train(model: nn.Module, *, seed: int, workdir: Path, args: Mapping[str, str],
          metric: str | None = None) -> dict[str, float]:
    """Train ``model`` (an Ultralytics model, patched or not) with Ultralytics' trainer; return the final validation
    metrics, named as the trainer names them (``metrics/mAP50-95(B)``, ``val/box_loss``, ...).

    Args:
        model: the arm's model; it is not changed (the trainer trains a copy it builds from the model's file).
        seed: the trial's seed (Ultralytics' ``seed``, with ``deterministic=True``).
        workdir: the trial's directory: ``initial.pt`` and the run directory ``train/`` go there.
        args: ``yolo train``'s arguments, ``data`` at least, values as text (``{"epochs": "100", "imgsz": "640"}``).
        metric: the metric ``ablate`` compares, put first in the result [default: :func:`default_metric`].

    Returns:
        Every metric of the final validation (of ``best.pt``, as Ultralytics' trainer ends), the compared one first.

    Raises:
        SurgeonError: ``args`` sets what ablate sets, lacks ``data``, or ``metric`` is not among the trainer's.
    """
    workdir = Path(workdir)
    overrides = train_overrides(args, seed=seed, workdir=workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    initial = workdir / INITIAL_FILE
    _save_initial(model, initial)
    from ultralytics import YOLO

    with _torch_determinism_restored():
        yolo = YOLO(initial)
        yolo.train(**overrides)
    trainer = yolo.trainer
    metrics = {str(name): float(value) for name, value in dict(getattr(trainer, "metrics", None) or {}).items()}
    if not metrics:
        raise SurgeonError(f"Ultralytics' trainer returned no validation metrics (see {workdir / RUN_NAME})")
    chosen = metric or default_metric(metrics)
    if chosen not in metrics:
        raise SurgeonError(f"metric {chosen!r} is not one Ultralytics' trainer reports; it reports "
                           f"{', '.join(metrics)}")
    return {chosen: metrics[chosen], **{k: v for k, v in metrics.items() if k != chosen}}
