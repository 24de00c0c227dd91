"""``save_pretrained`` directories: recognised by content, read (the base model, its recipe and its weights) without
side effects, written atomically with the recipe in ``config.json``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import CheckpointError, ModelLoadError, OutputExistsError
from ...io import Layout, LoadedModel, LoadOptions, SaveResult, file_mode, read_checkpoint
from ...io.reading import check_trusted
from ...recipe import Recipe
from .models import is_transformers_model, model_class

__all__ = ["CONFIG_KEY", "NOTE", "is_model_directory", "load_state", "native_layout", "read_directory", "read_recipe",
           "record_recipe", "write_directory"]

CONFIG_KEY = "attn_surgeon"
"""The ``config.json`` key (and config attribute) that holds the recipe of a patched model."""

NOTE = ("attention blocks inserted by attn-surgeon: load with surgeon.load(DIRECTORY); a plain {cls}.from_pretrained "
        "drops them (their tensors are reported as UNEXPECTED)")
"""The note before the recipe in ``config.json``."""

_CONFIG = "config.json"
_SAFETENSORS, _SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
_BIN, _BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
_WEIGHT_FILES = (_SAFETENSORS, _SAFETENSORS_INDEX, _BIN, _BIN_INDEX)
# Names that would make a directory look like a checkpoint file.
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# What Trainer's checkpoint-N directories hold beside the model: state of one training run, which refers to the old
# parameter list and so is not carried into a patched model's directory.
_TRAINING_STATE = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "trainer_state.json",
                   "training_args.bin")


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / _CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) and isinstance(config.get("model_type"), str) else None


def is_model_directory(path: Path) -> bool:
    """A ``save_pretrained`` directory: ``config.json`` with a ``model_type``, and a weights file beside it."""
    return (path / _CONFIG).is_file() and any((path / name).is_file() for name in _WEIGHT_FILES) and \
        _read_config(path) is not None


def _recipe_from(data: Any, where: str) -> Recipe | None:
    if data is None:
        return None
    try:
        return Recipe.from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: its {CONFIG_KEY} entry: {exc}") from None


def read_recipe(path: Path) -> Recipe | None:
    """The recipe a model directory's ``config.json`` records under ``attn_surgeon``, or ``None``."""
    config = _read_config(path)
    return _recipe_from((config or {}).get(CONFIG_KEY), str(path / _CONFIG))


def _shards(path: Path, index: str) -> list[Path]:
    try:
        weight_map = json.loads((path / index).read_text(encoding="utf-8"))["weight_map"]
        return [path / name for name in dict.fromkeys(weight_map.values())]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path / index}: not a readable weights index") from None


def _read_weights(path: Path) -> OrderedDict[str, torch.Tensor]:
    """Every tensor of the directory, read without running code (safetensors, else ``weights_only=True``)."""
    if (path / _SAFETENSORS).is_file():
        files = [path / _SAFETENSORS]
    elif (path / _SAFETENSORS_INDEX).is_file():
        files = _shards(path, _SAFETENSORS_INDEX)
    elif (path / _BIN).is_file():
        files = [path / _BIN]
    else:
        files = _shards(path, _BIN_INDEX)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for file in files:
        part = read_checkpoint(file)
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"{file}: holds no state_dict")
        state.update(part)
    return state


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load every tensor; a key that ``save_pretrained`` left out because it shares memory (tied) may be missing."""
    own = model.state_dict()
    loaded = {tensor.data_ptr() for key, tensor in own.items() if key in state}
    missing = [key for key, tensor in own.items() if key not in state and tensor.data_ptr() not in loaded]
    unexpected = [key for key in state if key not in own]
    mismatched = [key for key in own if key in state and own[key].shape != state[key].shape]
    if missing or unexpected or mismatched:
        parts = [f"{len(keys)} {label} (e.g. {keys[0]})" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("with other shapes", mismatched)) if keys]
        raise CheckpointError(f"{where}: the weights do not fit the model its config and recipe build: "
                              f"{'; '.join(parts)}")
    model.load_state_dict(state, strict=False)


def _saved_dtype(config: dict[str, Any], state: Mapping[str, torch.Tensor]) -> torch.dtype | None:
    """The dtype ``from_pretrained`` gives the model by default (``dtype="auto"``): the config's, else the weights'."""
    named = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or ""), None)
    if isinstance(named, torch.dtype):
        return named
    dtypes = {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def native_layout(module: nn.Module) -> Layout | None:
    """A transformers model's layout; its source is the directory ``from_pretrained`` read it from, if local."""
    if not is_transformers_model(module):
        return None
    source = Path(str(getattr(module, "name_or_path", "") or ""))
    return Layout(format="safetensors", framework="transformers",
                  source=source if str(source) not in ("", ".") and is_model_directory(source) else None)


def read_directory(path: Path, options: LoadOptions) -> LoadedModel:
    """The model of a ``save_pretrained`` directory; with a recipe in its config, the base model, the recipe and the
    weights still to load (nothing replayed here).

    Args:
        path: the directory.
        options: ``arch`` (``transformers:ClassName``, to build instead of the config's first ``architectures``
            entry), ``arch_args`` (config fields to override), ``trust_code`` (allow a recipe that inserts
            ``package.module:Class`` blocks).

    Raises:
        ModelLoadError, CheckpointError: one line saying what is wrong and what to do.
    """
    config = _read_config(path) or {}
    if options.arch is not None:
        library, _, name = options.arch.partition(":")
        if library != "transformers":
            raise ModelLoadError(f"{path}: is a transformers model directory; --arch takes transformers:ClassName")
    else:
        names = config.get("architectures") or []
        if not names:
            raise ModelLoadError(f"{path / _CONFIG}: names no model class (architectures); pass "
                                 "--arch transformers:ClassName")
        name = names[0]
    cls = model_class(name, where=f"{path}: ")
    recipe = _recipe_from(config.get(CONFIG_KEY), str(path / _CONFIG))
    if recipe is not None:
        check_trusted(recipe, path, options.trust_code)
    layout = Layout(format="safetensors", framework="transformers", source=path)
    if recipe is None:  # an ordinary model directory: transformers' own loader, local files only
        model = cls.from_pretrained(path, local_files_only=True, **dict(options.arch_args))
        return LoadedModel(model, f"transformers:{name}", {}, layout, path)
    model = cls(cls.config_class.from_dict({**config, **dict(options.arch_args)})).eval()
    model.config._name_or_path = str(path)  # as from_pretrained records where a model came from
    return LoadedModel(model, f"transformers:{name}", {}, layout, path, recipe, state=_read_weights(path))


def load_state(loaded: LoadedModel) -> None:
    """Load the weights of a model directory into its model (the recipe replayed), in the dtype ``from_pretrained``
    would give it; a tied key that ``save_pretrained`` left out may be missing."""
    if loaded.state is None or loaded.path is None:
        return
    dtype = _saved_dtype(_read_config(loaded.path) or {}, loaded.state)
    if dtype is not None:
        loaded.module.to(dtype)
    _load_strict(loaded.module, loaded.state, str(loaded.path))


def _carried_files(source: Path | None) -> list[Path]:
    """The input directory's other files (image processor config, model card, ...), not weights or training state."""
    if source is None or not source.is_dir():
        return []
    skip = {_CONFIG, *_WEIGHT_FILES, *_TRAINING_STATE}
    return [file for file in sorted(source.iterdir()) if file.is_file() and file.name not in skip
            and not file.name.endswith((".safetensors", ".bin", ".pth"))]


def write_directory(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout | None = None, *,
                    force: bool = False, protect: tuple[str | os.PathLike[str], ...] = ()) -> SaveResult:
    """Write ``model`` as ``save_pretrained`` does, its recipe in ``config.json``; atomic (a temporary directory
    beside ``path``, then renamed into place).

    The files of the input directory other than weights and training state (``preprocessor_config.json``, a model
    card) are carried over.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false, or ``path`` is the input directory.
        CheckpointError: ``path`` names a file (``.pt``, ``.safetensors``, ...), the parent directory is missing or
            not writable, or the write failed.
    """
    path = Path(path)
    if path.suffix in _FILE_SUFFIXES:
        raise CheckpointError(f"{path}: a transformers model is saved as a save_pretrained directory; give a directory "
                              f"name without {path.suffix}")
    for other in protect:
        if path.exists() and Path(other).exists() and path.resolve() == Path(other).resolve():
            raise OutputExistsError(f"{path}: is the input directory; choose another output directory")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CheckpointError(f"{path}: directory {parent} does not exist")
    record_recipe(model, recipe)
    result = SaveResult()
    try:
        temp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write in {parent} ({exc.strerror})") from None
    try:
        with _quiet_progress():
            model.save_pretrained(temp)
        source = layout.source if layout is not None else None
        for file in _carried_files(source):
            shutil.copyfile(file, temp / file.name)
        dropped = [name for name in _TRAINING_STATE if source is not None and (source / name).exists()]
        if dropped:
            result.notes.append(f"left out {', '.join(dropped)}: training state cannot match the new parameters")
        for file in temp.iterdir():
            os.chmod(file, file_mode(path / file.name))
        os.chmod(temp, file_mode(path, directory=True))
        if path.exists():  # --force: the old output goes only once the new one is complete
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"{path}: write failed ({exc.strerror or exc}); nothing was written") from None
        raise
    return result


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Writing model shards" bar from transformers while saving: the caller reports the save its own way."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()



def record_recipe(model: nn.Module, recipe: Recipe) -> None:
    """Put the recipe into the model's config, as JSON data, so that every ``save_pretrained`` writes it; a note for
    whoever opens ``config.json`` comes first."""
    recorded = {"note": NOTE.format(cls=type(model).__name__), **recipe.to_dict()}
    setattr(model.config, CONFIG_KEY, json.loads(json.dumps(recorded, default=str)))
