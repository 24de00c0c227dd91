"""Ultralytics YOLO: model yaml specs, native checkpoints, and inserted blocks kept through Ultralytics' training.

Specs ``ultralytics:yolov8n.yaml`` (any model yaml Ultralytics ships: ``yolo11s-seg.yaml``, ``yolov8n-cls.yaml``)
build with random weights and download nothing. A checkpoint file as Ultralytics writes it pickles the model under
``model``/``ema``; it is read only with ``trust_pickle``, through Ultralytics' own restricted loader
(``torch_safe_load(..., safe_only=True)``) where that accepts the file. A patched model is written back in the same
layout, pickled whole, so ``YOLO("out.pt")`` and the ``yolo`` command load it as they load any checkpoint.

Why a hook: Ultralytics' trainer does not train the module it was given. It rebuilds the network from
``model.yaml`` (``trainer.get_model(cfg=model.yaml, weights=model)``) and copies over the tensors whose names
match, so every inserted block would be dropped without a word; resuming and the multi-GPU launcher's child
process rebuild the same way. Ultralytics has no extension point for model construction (its callbacks belong to
one trainer object, and neither the ``yolo`` command nor the DDP child sees them), so attn-surgeon wraps, in this
one place (:func:`install`), two methods of ``ultralytics.nn.tasks``:

- ``__init__`` of the task models (:data:`MODEL_CLASSES`): a model built from a yaml dict that carries a recipe
  under ``attn_surgeon`` gets its blocks back by replaying that recipe;
- ``BaseModel.load``: weights from a patched model are loaded only into a model with the same blocks; a model built
  without them (a yaml without the recipe: a model patched in memory) gets the recipe replayed first, and if a
  block is still missing afterwards it raises.

The hook is installed when a recipe-carrying ``model.yaml`` is unpickled (it carries :class:`YamlRecipe`, whose
unpickling installs it first), when ``surgeon`` is imported after Ultralytics, or when Ultralytics is imported after
``surgeon``; importing ``surgeon`` never imports Ultralytics. It checks the Ultralytics version and the signatures
it wraps, and raises :class:`UltralyticsHookError` rather than let a patched model train without its blocks.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import importlib.abc
import importlib.util
import inspect
import logging
import os
import pickle
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import FRAMEWORKS, Framework, Layout
from ..errors import ModelLoadError, SurgeonError
from ..pipeline import recipe_of, replay
from ..probe import ULTRALYTICS_IMGSZ
from ..recipe import Recipe

__all__ = ["CHECKED_VERSIONS", "MODEL_CLASSES", "YAML_KEY", "UltralyticsHookError", "YamlRecipe", "build",
           "info_gflops", "install", "is_ultralytics_model", "places", "register"]

YAML_KEY = "attn_surgeon"
# Ultralytics releases whose model construction the hook was read against and tested with, as (major, minor).
CHECKED_VERSIONS = ((8, 3), (8, 4))
MODEL_CLASSES = ("DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel")
_UNCHECKED_ENV = "ATTN_SURGEON_ULTRALYTICS_UNCHECKED"
_WRAPPED = "__attn_surgeon_wraps__"
_LOCK = threading.Lock()
_installed = False


class UltralyticsHookError(SurgeonError):
    """Ultralytics would build a patched model without its blocks; raised instead of training it that way."""


class YamlRecipe(dict):
    """The recipe as it travels inside ``model.yaml``: a plain dict whose unpickling installs the hook first.

    Every copy of the model Ultralytics makes (EMA, checkpoints, the DDP child's state file) carries it, so no
    process can unpickle a patched model's yaml without the hook in place.
    """

    def __reduce__(self) -> tuple:
        return _unpickle_yaml_recipe, (dict(self),)


def _unpickle_yaml_recipe(data: dict[str, Any]) -> YamlRecipe:
    install()
    return YamlRecipe(data)


# ---------------------------------------------------------------------------------------------------- the hook


def _version_problem(version: str) -> str | None:
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < (8, 3):
        return f"Ultralytics {version} is older than 8.3, which attn-surgeon's training hook needs"
    if found not in CHECKED_VERSIONS and not os.environ.get(_UNCHECKED_ENV):
        checked = ", ".join(f"{major}.{minor}" for major, minor in CHECKED_VERSIONS)
        return (f"attn-surgeon's training hook was checked against Ultralytics {checked}, not {version}, which may "
                "build models another way and train a patched model without its blocks; install a checked "
                f"Ultralytics, or set {_UNCHECKED_ENV}=1 to try this one")
    return None


def _signature_problem(tasks: Any) -> str | None:
    for name in MODEL_CLASSES:
        cls = getattr(tasks, name, None)
        if not (isinstance(cls, type) and issubclass(cls, tasks.BaseModel)):
            return f"ultralytics.nn.tasks.{name} is gone"
        params = inspect.signature(getattr(cls.__init__, _WRAPPED, cls.__init__)).parameters
        if not {"cfg", "ch", "nc"} <= set(params):
            return f"ultralytics.nn.tasks.{name}.__init__ no longer takes cfg, ch, nc"
    load = getattr(tasks.BaseModel, "load", None)
    if load is None or "weights" not in inspect.signature(getattr(load, _WRAPPED, load)).parameters:
        return "ultralytics.nn.tasks.BaseModel.load(weights) is gone"
    return None


def install() -> None:
    """Wrap Ultralytics' model construction so that patched models keep their blocks (idempotent, thread-safe).

    Raises:
        UltralyticsHookError: this Ultralytics is not one the hook was checked against, or what it wraps changed.
    """
    global _installed
    if _installed:
        return
    with _LOCK:
        if _installed:
            return
        import ultralytics
        from ultralytics.nn import tasks

        problem = _version_problem(ultralytics.__version__) or _signature_problem(tasks)
        if problem:
            raise UltralyticsHookError(f"{problem}. A model patched by attn-surgeon cannot be trained safely here")
        for name in MODEL_CLASSES:
            cls = getattr(tasks, name)
            if not hasattr(cls.__dict__.get("__init__"), _WRAPPED):
                cls.__init__ = _replaying_init(cls, cls.__dict__["__init__"])
        if not hasattr(tasks.BaseModel.load, _WRAPPED):
            tasks.BaseModel.load = _checked_load(tasks.BaseModel.load)
        _installed = True


def _yaml_recipe(model: nn.Module) -> Recipe | None:
    cfg = getattr(model, "yaml", None)
    entry = cfg.get(YAML_KEY) if isinstance(cfg, dict) else None
    return Recipe.from_dict(dict(entry)) if entry is not None else None


def _replay(model: nn.Module, recipe: Recipe, why: str) -> None:
    """Put ``recipe``'s blocks into a model Ultralytics built, probing with the channels it was built for."""
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict):
        raise UltralyticsHookError(f"Ultralytics built a {type(model).__name__} {why}, but it has no model yaml to "
                                   "rebuild attn-surgeon's blocks from")
    channels = cfg.get("channels", recipe.input_shape[1])
    recipe = dataclasses.replace(recipe, input_shape=(1, int(channels), *recipe.input_shape[2:]))
    try:
        replay(model, recipe)
    except SurgeonError as exc:
        raise UltralyticsHookError(f"Ultralytics built a {type(model).__name__} {why}, and attn-surgeon cannot put "
                                   f"its blocks back: {exc}") from exc
    cfg[YAML_KEY] = YamlRecipe(recipe.to_dict())


def _replaying_init(cls: type, init: Any) -> Any:
    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        recipe = _yaml_recipe(self)
        if recipe is None or recipe_of(self) is not None:
            return
        outermost = next(c for c in type(self).__mro__ if "__init__" in vars(c))
        if outermost is cls:  # the model is complete: replay now
            _replay(self, recipe, "from a model yaml that carries attn-surgeon blocks")
        elif not hasattr(vars(outermost)["__init__"], _WRAPPED):  # a subclass whose own __init__ is not hooked
            raise UltralyticsHookError(f"{type(self).__name__} is built from a model yaml that carries attn-surgeon "
                                       f"blocks, but attn-surgeon replays them only in {', '.join(MODEL_CLASSES)}")

    setattr(__init__, _WRAPPED, init)
    return __init__


def _checked_load(load: Any) -> Any:
    @functools.wraps(load)
    def checked(self: nn.Module, weights: Any, *args: Any, **kwargs: Any) -> Any:
        source = (weights.get("ema") or weights.get("model")) if isinstance(weights, dict) else weights
        recipe = recipe_of(source) if isinstance(source, nn.Module) else None
        if recipe is not None and recipe_of(self) is None:
            _replay(self, recipe, "to take the weights of a patched model")
        result = load(self, weights, *args, **kwargs)
        if recipe is not None:
            names = {name for name, _ in self.named_modules()}
            missing = [step.module for step in recipe.steps if step.module not in names]
            if missing:
                raise UltralyticsHookError(f"the weights of a patched model went into a {type(self).__name__} without "
                                           f"its blocks (e.g. {missing[0]}); training it would lose them")
        return result

    setattr(checked, _WRAPPED, load)
    return checked


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Installs the hook right after ``ultralytics.nn.tasks`` is first imported (surgeon was imported before)."""

    target = "ultralytics.nn.tasks"

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _install_quietly()

        loader.exec_module = exec_module
        return spec


def _install_quietly() -> None:
    """Install where Ultralytics is in use; a refusal is only warned about here, and raised when a patched model is
    met (no patched model may be in sight yet)."""
    try:
        install()
    except UltralyticsHookError as exc:
        warnings.warn(str(exc), RuntimeWarning, stacklevel=2)


def _install_when_used() -> None:
    if "ultralytics.nn.tasks" in sys.modules:
        _install_quietly()
    elif not any(isinstance(finder, _InstallOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())


# ---------------------------------------------------------------------------------------------------- files and specs


def build(name: str, **arch_args: Any) -> nn.Module:
    """``ultralytics:NAME.yaml``: the model Ultralytics builds from that yaml, random weights, nothing downloaded.

    ``arch_args``: ``nc`` (number of classes) and ``ch`` (input channels), as Ultralytics' model classes take them.
    """
    if not name.endswith((".yaml", ".yml")):
        raise ModelLoadError(f"ultralytics:{name}: give a model yaml (ultralytics:yolov8n.yaml, yolo11s-seg.yaml); "
                             "for trained weights pass the .pt file itself, with --trust-pickle")
    unknown = set(arch_args) - {"nc", "ch"}
    if unknown:
        raise ModelLoadError(f"ultralytics:{name}: unknown argument {sorted(unknown)[0]!r}; valid: nc, ch")
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # ClassificationModel prints its summary even with verbose=False
    try:
        model = YOLO(name, verbose=False).model
        if arch_args:
            rebuilt = type(model)(model.yaml, verbose=False, **arch_args)
            rebuilt.args, rebuilt.task = model.args, model.task
            model = rebuilt
    except FileNotFoundError:
        raise ModelLoadError(f"ultralytics:{name}: Ultralytics has no model yaml by that name "
                             "(e.g. yolov8n.yaml, yolo11n.yaml, yolov8n-seg.yaml, yolo11n-cls.yaml)") from None
    finally:
        LOGGER.setLevel(level)
    return model


def _native_layout(model: nn.Module) -> Layout:
    """The layout of ``YOLO(...).save(path)``: the model pickled whole under ``model``, with its metadata."""
    import ultralytics

    extras = {"ema": None, "date": datetime.datetime.now().astimezone().isoformat(), "version": ultralytics.__version__,
              "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
    return Layout("container", key="model", extras=extras, pickled=True, framework="ultralytics")


def _owns(global_name: str) -> bool:
    return global_name.startswith("ultralytics.")


def is_ultralytics_model(model: nn.Module) -> bool:
    """A model of Ultralytics' ``nn.tasks`` (YOLO detection, segmentation, classification, ...)."""
    return any(cls.__module__.startswith("ultralytics.nn.") for cls in type(model).__mro__[:-1]) and hasattr(
        model, "yaml")


def _restricted_load(path: Path) -> Any:
    """Ultralytics' own weights-only loader, or ``None`` where it refuses the file (a patched model's classes).

    As Ultralytics documents, the classes a restricted load allows stay allowed for ``torch.load(weights_only=True)``
    in this process.
    """
    from ultralytics.nn.tasks import torch_safe_load

    if path.suffix.lower() != ".pt":
        return None
    try:
        checkpoint = torch_safe_load(str(path), safe_only=True)[0]
    except (TypeError, pickle.UnpicklingError, ModuleNotFoundError, AttributeError, RuntimeError):
        return None
    # Ultralytics 8.3's safe_only stands placeholders in for the classes it does not rebuild: only a real model counts
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    return checkpoint if isinstance(model, nn.Module) else None


def _adopt(model: nn.Module) -> nn.Module:
    """As Ultralytics' ``load_checkpoint`` does: checkpoints store half precision, models run in float."""
    if is_ultralytics_model(model) and recipe_of(model) is not None:
        install()  # a patched model from a file: it must not reach a trainer without the hook
    return model.float()


def _to_pickle(model: nn.Module, recipe: Recipe) -> nn.Module:
    """What ``YOLO.save()`` pickles: a half-precision copy. The recipe goes into ``model.yaml`` (of the caller's model
    too), the only part of a model that Ultralytics' trainer rebuilds from."""
    if isinstance(getattr(model, "yaml", None), dict):
        install()
        model.yaml[YAML_KEY] = YamlRecipe(recipe.to_dict())
    return copy.deepcopy(model).half()


def register() -> None:
    """Register ``ultralytics:`` specs and Ultralytics checkpoint files with :mod:`surgeon.checkpoint`."""
    FRAMEWORKS["ultralytics"] = Framework(
        name="ultralytics", title="an Ultralytics checkpoint", build=build, layout=_native_layout, owns=_owns,
        restricted_load=_restricted_load, adopt=_adopt, to_pickle=_to_pickle)
    _install_when_used()


# ---------------------------------------------------------------------------------------------------- reporting


def info_gflops(model: nn.Module, imgsz: int = ULTRALYTICS_IMGSZ) -> float | None:
    """GFLOPs as ``model.info()`` reports them (Ultralytics' ``get_flops``: thop MACs x 2, at 640 unless told), or
    ``None`` where Ultralytics cannot count them (thop missing)."""
    from ultralytics.utils.torch_utils import get_flops

    flops = get_flops(model, imgsz)
    return float(flops) if flops else None


def places(model: nn.Module) -> dict[str, str]:
    """The places people put attention in a YOLO, by site name: backbone C2f/C3k2, SPPF, P3/P4/P5 head inputs."""
    layers = getattr(model, "model", None)
    cfg = getattr(model, "yaml", None)
    if not isinstance(layers, nn.Sequential) or not isinstance(cfg, dict):
        return {}
    backbone = len(cfg.get("backbone", ()))
    found: dict[str, str] = {}
    for index, layer in enumerate(layers):
        kind = type(layer).__name__  # a patched layer's class keeps its original name
        if index < backbone and kind in ("C2f", "C3k2"):
            found[f"model.{index}"] = f"backbone {kind}"
        elif kind == "SPPF":
            found[f"model.{index}"] = "SPPF"
    sources = getattr(layers[-1], "f", None)
    if isinstance(sources, list) and len(sources) == 3:  # a detection-style head reads P3, P4, P5, finest first
        for level, source in enumerate(sources):
            found[f"model.{source % len(layers)}"] = f"P{3 + level} head input"
    return found
