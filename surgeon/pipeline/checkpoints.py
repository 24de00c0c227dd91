"""Models from and to files: :func:`load_model` (build the base, replay the recipe, load the weights), :func:`save`,
and :func:`patch`, the whole of ``attn-surgeon insert``, ``swap`` and ``apply``: load, patch, profile, save, report.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from torch import nn

from .. import checkpoint, precision
from ..arch import build_arch, is_spec
from ..blocks import get_block
from ..checkpoint import (
    Layout,
    LoadedModel,
    SaveResult,
    choose_arch,
    default_output,
    find_siblings,
    load_weights,
    pickled_model,
    split_container,
    stored_recipe,
)
from ..errors import ModelForwardError, OutputExistsError, SurgeonError
from ..files import read_checkpoint
from ..frameworks import framework_layout, framework_of_directory
from ..profile.latency import quiet_profiler_logs
from ..profile.report import Step, model_facts
from ..recipe import Recipe, recipe_of, unwrap
from ..report import (
    PatchResult,
    ProfileMode,
    SurgeryResult,
    html_report_path,
    report_path,
    surgery_profile,
    surgery_summary,
    write_reports,
)
from ..rules import RuleSet
from ..tensors import default_input_shape, probe_input
from .surgery import check_model, replay, resolve, surgery

__all__ = ["load", "load_model", "patch", "save", "save_model"]


def load_model(source: str | os.PathLike[str], arch: str | None = None, arch_args: dict[str, Any] | None = None,
               trust_code: bool = False, *, trust_pickle: bool = False) -> LoadedModel:
    """Turn a spec or a checkpoint file into a model with its weights.

    A checkpoint written by attn-surgeon is rebuilt from its recipe (base architecture + the same surgery) and
    then loaded with ``strict=True``. A file that holds only weights is loaded into ``arch``, or, without it, into
    the architecture detected from its keys and shapes. A framework's model directory (a ``save_pretrained``
    directory of Hugging Face transformers) is read by that framework's registered
    :class:`~surgeon.checkpoint.Framework`.

    Args:
        source: a spec (``torchvision:resnet50``), a file path, or a framework's model directory.
        arch: architecture spec for a file that holds only weights.
        arch_args: keyword arguments for the architecture's factory.
        trust_code: allow a recipe whose base is a ``package.module:factory`` (imports and runs that factory).
        trust_pickle: allow a file that holds pickled code (``torch.save(model)``); unpickling runs that code.

    Raises:
        ModelLoadError, CheckpointError: with one line that says what is wrong and what to do.
    """
    arch_args = dict(arch_args or {})
    source = str(source)
    if is_spec(source):
        module = build_arch(source, **arch_args)
        return LoadedModel(module, source, arch_args, framework_layout(module) or Layout())
    path = Path(source)
    framework = framework_of_directory(path)
    if framework is not None:  # a framework's model directory (save_pretrained's): read the framework's way
        return framework.load_directory(path, arch, arch_args, trust_code)
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    weights, layout = split_container(obj, path)
    if isinstance(weights, nn.Module):
        return pickled_model(weights, layout, path, arch, arch_args)
    recipe = stored_recipe(weights)
    arch, arch_args, detection = choose_arch(obj, weights, recipe, path, arch, arch_args, trust_code)
    model = build_arch(arch, **arch_args)
    if recipe is not None:
        replay(model, recipe)
    layout.prefix = load_weights(model, weights, f"--arch {arch}" if recipe is None else
                                 f"{arch} patched by its recipe")
    if layout.kind == "container":
        layout.siblings = find_siblings(layout, {k[len(layout.prefix):] for k in weights})
    return LoadedModel(model, arch, arch_args, layout, path, recipe, detection)


def save_model(model: nn.Module, path: str | os.PathLike[str], recipe: Recipe, layout: Layout | None = None,
               force: bool = False, protect: tuple[str | os.PathLike[str], ...] = (),
               fmt: str | None = None, pickle_note: bool = True) -> SaveResult:
    """:func:`surgeon.checkpoint.save_model`, with a pickled EMA module beside the weights patched by replaying
    ``recipe`` (so it keeps the same keys as the model)."""
    return checkpoint.save_model(model, path, recipe, layout, force=force, protect=protect, fmt=fmt,
                                 patch_sibling=lambda sibling: replay(sibling, recipe), pickle_note=pickle_note)


def save(model: nn.Module, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Save a patched model's state_dict with its recipe (``torch.load(weights_only=True)``-safe, atomic).

    A Hugging Face transformers model is saved as a ``save_pretrained`` directory instead (config, weights, and the
    recipe inside ``config.json``); an Ultralytics model as an Ultralytics checkpoint (the model pickled whole, as
    ``YOLO.save`` writes it), which ``YOLO(path)`` loads and trains with its blocks.

    A DistributedDataParallel or ``torch.compile`` wrapper is unwrapped, so the keys carry no ``module.`` or
    ``_orig_mod.`` prefix.

    Raises:
        SurgeonError: the model was not patched by attn-surgeon, or ``path`` exists and ``force`` is false.
    """
    model = unwrap(model)
    check_model(model)
    recipe = recipe_of(model)
    if recipe is None:
        raise SurgeonError("this model was not patched by attn-surgeon; save it with torch.save(model.state_dict())")
    save_model(model, path, recipe, force=force)


def load(path: str | os.PathLike[str], *, arch: str | None = None, trust_code: bool = False,
         trust_pickle: bool = False) -> nn.Module:
    """Rebuild a patched model from a checkpoint written by attn-surgeon (base architecture + recipe + weights).

    ``trust_pickle`` allows a file holding a whole pickled model (as written for a pickled input); unpickling runs
    code from the file.
    """
    return load_model(path, arch=arch, trust_code=trust_code, trust_pickle=trust_pickle).module


# ------------------------------------------------------------------------------------------------------ patch


def _no_step(message: str) -> AbstractContextManager[Any]:
    return nullcontext()


def _output_suffix(rules_or_recipe: Any, resolved: Recipe | RuleSet) -> str:
    """What a default output name says was done: ``replayed`` for a recipe, the block(s) of a list of rules, a rules
    file's or preset's name, else ``patched`` (YAML text, a rules document)."""
    if isinstance(resolved, Recipe):
        return "replayed"
    if isinstance(rules_or_recipe, Sequence) and not isinstance(rules_or_recipe, (str, bytes)):
        return "_".join(dict.fromkeys(get_block(rule.block).name.rsplit(":", 1)[-1].lower() for rule in resolved))
    if isinstance(rules_or_recipe, (str, os.PathLike)) and "\n" not in os.fspath(rules_or_recipe):
        return Path(os.fspath(rules_or_recipe)).stem
    return "patched"


def _patch_in_memory(source: str, loaded: LoadedModel, resolved: Recipe | RuleSet, input_shape: tuple[int, ...],
                     output: Path, profile: ProfileMode, dry_run: bool,
                     step: Step) -> tuple[SurgeryResult, dict[str, Any]]:
    """:func:`patch`'s surgery and its profile, before anything is written."""
    before = original = None
    if not dry_run and profile == "counts":
        with step("Counting the original model"):
            before = model_facts(loaded.module, source, input_shape[1:])
    elif not dry_run and profile == "full":
        original = copy.deepcopy(loaded.module)  # surgery is in place; the full profile times both models
    measured = not dry_run and profile != "off"  # reduced precision (float16/bfloat16): the original before surgery
    if measured:
        example = probe_input(input_shape, loaded.module)
        with step("Running the original model in reduced precision"):
            reduced = precision.measure(loaded.module, example)
    with step("Finding sites and rewriting"):
        result = surgery(loaded.module, resolved, input_shape=input_shape, base=loaded.spec,
                         arch_args=loaded.arch_args, dry_run=dry_run, where=source)
    summary = surgery_summary(result, source, None if dry_run else str(output))
    if measured:
        with step("Running the patched model in reduced precision"):
            checked = precision.check(result.model, example, reduced, result.recipe)
        summary["precision"] = [item.to_dict() for item in checked]
        summary["precision_warnings"] = precision.warnings_of(checked)
    if not dry_run:
        quiet_profiler_logs()
        summary["profile"] = surgery_profile(profile, result, before=before, original=original,
                                             names=(source, "patched"), input_shape=input_shape, step=step)
    return result, summary


def patch(source: str | os.PathLike[str], rules_or_recipe: Any, output: str | os.PathLike[str] | None = None, *,
          arch: str | None = None, arch_args: dict[str, Any] | None = None, trust_code: bool = False,
          trust_pickle: bool = False, input_shape: Sequence[int] | None = None, init: str | None = None,
          profile: ProfileMode = "counts", fmt: str | None = None, dry_run: bool = False, force: bool = False,
          step: Step = _no_step) -> PatchResult:
    """Load a model, patch it, and write the checkpoint with its report: what ``attn-surgeon insert``, ``swap`` and
    ``apply`` do.

    Beside the checkpoint ``X.pt`` go ``X.report.json`` (:func:`~surgeon.report.surgery_summary`, with the profile
    of original against patched under ``profile``) and ``X.report.html`` (that profile as a page). Nothing is
    written on a dry run, and nothing is overwritten without ``force``; the input file is never modified.

    Args:
        source: a spec (``torchvision:resnet50``) or a checkpoint file.
        rules_or_recipe: anything :func:`apply` takes.
        output: the checkpoint to write [default: beside ``source``, named after what was done].
        arch, arch_args, trust_code, trust_pickle: how to load ``source`` (see :func:`load_model`).
        input_shape: probe batch shape [default: a recipe's own, else the model's declared input size].
        init: overrides the init of every insert rule.
        profile: ``counts``, ``full`` or ``off`` (see :func:`~surgeon.report.surgery_profile`); with ``counts`` or
            ``full`` the report also has both models' deviation under float16 and bfloat16 (:mod:`surgeon.precision`).
        fmt: checkpoint format, ``pt`` or ``safetensors`` [default: the input's].
        dry_run: plan only: nothing is changed or written.
        force: overwrite existing outputs.
        step: wraps each long step (the CLI passes a progress spinner).

    Raises:
        SurgeonError: anything the user can fix (an existing output, an unreadable source, a rule that matches
            nothing, a recipe that does not fit, ...), before anything is written.
    """
    source = str(source)
    resolved = resolve(rules_or_recipe, init=init, trust_code=trust_code)  # a bad rules file fails before the load
    if output is None:
        output = default_output(source, _output_suffix(rules_or_recipe, resolved), fmt)
    output = Path(output)
    report, html = report_path(output), html_report_path(output) if profile != "off" else None
    if not dry_run:
        for path in (output, report, *([html] if html else [])):
            if path.exists() and not force:  # before minutes of work, not after
                raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")
    with step(f"Loading {source}"):
        loaded = load_model(source, arch, arch_args, trust_code, trust_pickle=trust_pickle)
    if input_shape is None:
        input_shape = resolved.input_shape if isinstance(resolved, Recipe) else default_input_shape(loaded.module)
    input_shape = tuple(int(v) for v in input_shape)
    try:
        result, summary = _patch_in_memory(source, loaded, resolved, input_shape, output, profile, dry_run, step)
    except ModelForwardError as exc:  # named as the caller named the model, at the shape it was probed with
        raise ModelForwardError(source, input_shape, exc.reason, exc.declared) from exc.__cause__
    if dry_run:
        return PatchResult(result, summary, loaded, output, report, html)
    with step(f"Saving {output}"):
        saved = save_model(result.model, output, result.recipe, loaded.layout, force=force,
                           protect=(loaded.path,) if loaded.path else (), fmt=fmt)
        write_reports(summary, report, html, force=force)
    return PatchResult(result, summary, loaded, output, report, html, list(saved), saved.notes)
