"""The training hook: inserted blocks kept wherever Ultralytics rebuilds a model from its yaml.

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

The pipeline installs the hook, handing it its one replay path: when ``surgeon`` is imported (at once if Ultralytics
is, else right after Ultralytics is imported: :func:`install_when_used`; importing ``surgeon`` never imports
Ultralytics), and when it loads a patched model from an Ultralytics checkpoint. Unpickling a recipe-carrying
``model.yaml`` installs it too (the yaml carries :class:`YamlRecipe`), a safety net for a user's own ``YOLO(path)``.
The hook checks the Ultralytics version and the signatures it wraps, and raises :class:`UltralyticsHookError` rather
than let a patched model train without its blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.util
import inspect
import os
import re
import sys
import threading
import warnings
from typing import Any

from torch import nn

from ...errors import SurgeonError
from ...io import Replay
from ...recipe import Recipe, recipe_of

__all__ = ["CHECKED_VERSIONS", "MODEL_CLASSES", "YAML_KEY", "UltralyticsHookError", "YamlRecipe", "install",
           "install_when_used", "record_recipe"]

YAML_KEY = "attn_surgeon"
# Ultralytics releases whose model construction the hook was read against and tested with, as (major, minor).
CHECKED_VERSIONS = ((8, 3), (8, 4))
MODEL_CLASSES = ("DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel",
                 "RTDETRDetectionModel")
_UNCHECKED_ENV = "ATTN_SURGEON_ULTRALYTICS_UNCHECKED"
_WRAPPED = "__attn_surgeon_wraps__"
_LOCK = threading.Lock()
_installed = False
_replay_recipe: Replay | None = None  # the pipeline's replay, handed over when it installs the hook


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
    """Wrap Ultralytics' model construction so that patched models keep their blocks (idempotent, thread-safe); the
    hook replays with what :func:`install_when_used` was handed.

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
    if _replay_recipe is None:  # the pipeline hands it over when surgeon is imported, before any model is met
        raise UltralyticsHookError(f"Ultralytics built a {type(model).__name__} {why}, but attn-surgeon's pipeline "
                                   "was not imported to put its blocks back; import surgeon first")
    channels = cfg.get("channels", recipe.input_shape[1])
    recipe = dataclasses.replace(recipe, input_shape=(1, int(channels), *recipe.input_shape[2:]))
    try:
        _replay_recipe(model, recipe)
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


def install_when_used(replay: Replay) -> None:
    """Keep the pipeline's ``replay`` for the hook, and install it now if Ultralytics is imported, else right after
    it is (never importing it here).

    Raises:
        UltralyticsHookError: Ultralytics is imported, and is not one the hook was checked against.
    """
    global _replay_recipe
    _replay_recipe = replay
    if "ultralytics.nn.tasks" in sys.modules:
        install()
    elif not any(isinstance(finder, _InstallOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstallOnImport())


def record_recipe(model: nn.Module, recipe: Recipe) -> None:
    """Put ``recipe`` into ``model.yaml``, the only part of a model that Ultralytics' trainer rebuilds from."""
    if isinstance(getattr(model, "yaml", None), dict):
        install()
        model.yaml[YAML_KEY] = YamlRecipe(recipe.to_dict())
