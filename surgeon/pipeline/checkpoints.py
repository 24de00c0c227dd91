"""Models from and to files: :func:`load_model` (read the base, replay the recipe, load the weights), :func:`save`,
and :func:`patch`, the whole of ``attn-surgeon insert``, ``swap`` and ``apply``: load, patch, profile, save, report.

Reading and writing are :mod:`surgeon.io`'s, which never patch; replaying a recipe — on the model read from a file,
and on the pickled EMA copies beside it once the model is patched — is done here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .. import precision
from ..blocks import get_block
from ..errors import ModelForwardError, OutputExistsError, SurgeonError
from ..io import Layout, LoadedModel, LoadOptions, adapter_named, default_output, load_state, read_model, save_model
from ..profile import Step, model_facts, quiet_profiler_logs
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

__all__ = ["PatchOptions", "give_siblings_blocks", "load", "load_model", "patch", "save"]


@dataclass(frozen=True)
class PatchOptions:
    """How :func:`patch` loads, patches, reports and writes: what the options of ``attn-surgeon insert``, ``swap`` and
    ``apply`` say.

    Attributes:
        load: how to load the source (see :class:`~surgeon.io.LoadOptions`).
        input_shape: probe batch shape [default: a recipe's own, else the model's declared input size].
        init: overrides the init of every insert rule.
        profile: ``counts``, ``full`` or ``off`` (see :func:`~surgeon.report.surgery_profile`); with ``counts`` or
            ``full`` the report also has both models' deviation under float16 and bfloat16 (:mod:`surgeon.precision`).
        fmt: checkpoint format, ``pt`` or ``safetensors`` [default: the input's].
        dry_run: plan only: nothing is changed or written.
        force: overwrite existing outputs.
    """

    load: LoadOptions = field(default_factory=LoadOptions)
    input_shape: tuple[int, ...] | None = None
    init: str | None = None
    profile: ProfileMode = "counts"
    fmt: str | None = None
    dry_run: bool = False
    force: bool = False


def load_model(source: str | os.PathLike[str], options: LoadOptions | None = None) -> LoadedModel:
    """Turn a spec, a checkpoint file or a framework's model directory into a model with its weights.

    The source is read (:func:`surgeon.io.read_model`, which has no side effects); a checkpoint written by
    attn-surgeon is rebuilt from its recipe — base architecture, the same surgery replayed here — and its weights
    are loaded with ``strict=True``. A file that holds only weights is loaded into ``options.arch``, or, without it,
    into the architecture detected from its keys and shapes. A patched model of a framework whose trainer rebuilds
    models (Ultralytics) gets that framework's training hooks installed before it is returned.

    Args:
        source: a spec (``torchvision:resnet50``), a file path, or a framework's model directory.
        options: ``arch``, ``arch_args``, ``trust_code`` and ``trust_pickle`` (see :class:`~surgeon.io.LoadOptions`).

    Raises:
        ModelLoadError, CheckpointError: with one line that says what is wrong and what to do.
    """
    loaded = read_model(source, options)
    if loaded.state is not None:
        if loaded.recipe is not None:
            replay(loaded.module, loaded.recipe)
        load_state(loaded)
    framework = adapter_named(loaded.layout.framework)
    if framework is not None and loaded.recipe is not None:  # a patched model must not reach a trainer unhooked
        framework.install_training_hooks(replay)
    return loaded


def give_siblings_blocks(layout: Layout, model: nn.Module, recipe: Recipe) -> None:
    """Give the pickled EMA modules of ``layout`` (its siblings) the blocks ``model`` got from ``recipe``: each keeps
    its own weights and takes the new blocks' from ``model``, so that saving only has to write them."""
    for name in layout.siblings:
        sibling = layout.extras.get(name)
        if isinstance(sibling, nn.Module):
            own = sibling.state_dict()
            replay(sibling, recipe)
            sibling.load_state_dict({k: v for k, v in model.state_dict().items() if k not in own}, strict=False)


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
    return load_model(path, LoadOptions(arch=arch, trust_code=trust_code, trust_pickle=trust_pickle)).module


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
                     output: Path, options: PatchOptions, step: Step) -> tuple[SurgeryResult, dict[str, Any]]:
    """:func:`patch`'s surgery and its profile, before anything is written."""
    profile, dry_run = options.profile, options.dry_run
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


def patch(source: str | os.PathLike[str], rules_or_recipe: Any, output: str | os.PathLike[str] | None = None,
          options: PatchOptions | None = None, *, step: Step = _no_step) -> PatchResult:
    """Load a model, patch it, and write the checkpoint with its report: what ``attn-surgeon insert``, ``swap`` and
    ``apply`` do.

    Beside the checkpoint ``X.pt`` go ``X.report.json`` (:func:`~surgeon.report.surgery_summary`, with the profile
    of original against patched under ``options.profile``) and ``X.report.html`` (that profile as a page). Nothing is
    written on a dry run, and nothing is overwritten without ``options.force``; the input file is never modified.

    Args:
        source: a spec (``torchvision:resnet50``) or a checkpoint file.
        rules_or_recipe: anything :func:`apply` takes.
        output: the checkpoint to write [default: beside ``source``, named after what was done].
        options: how to load, patch, report and write (see :class:`PatchOptions`).
        step: wraps each long step (the CLI passes a progress spinner).

    Raises:
        SurgeonError: anything the user can fix (an existing output, an unreadable source, a rule that matches
            nothing, a recipe that does not fit, ...), before anything is written.
    """
    options = options or PatchOptions()
    source = str(source)
    # a bad rules file fails before the load
    resolved = resolve(rules_or_recipe, init=options.init, trust_code=options.load.trust_code)
    if output is None:
        output = default_output(source, _output_suffix(rules_or_recipe, resolved), options.fmt)
    output = Path(output)
    report, html = report_path(output), html_report_path(output) if options.profile != "off" else None
    if not options.dry_run:
        for path in (output, report, *([html] if html else [])):
            if path.exists() and not options.force:  # before minutes of work, not after
                raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")
    with step(f"Loading {source}"):
        loaded = load_model(source, options.load)
    input_shape = options.input_shape
    if input_shape is None:
        input_shape = resolved.input_shape if isinstance(resolved, Recipe) else default_input_shape(loaded.module)
    input_shape = tuple(int(v) for v in input_shape)
    try:
        result, summary = _patch_in_memory(source, loaded, resolved, input_shape, output, options, step)
    except ModelForwardError as exc:  # named as the caller named the model, at the shape it was probed with
        raise ModelForwardError(source, input_shape, exc.reason, exc.declared) from exc.__cause__
    if options.dry_run:
        return PatchResult(result, summary, loaded, output, report, html)
    give_siblings_blocks(loaded.layout, result.model, result.recipe)
    with step(f"Saving {output}"):
        saved = save_model(result.model, output, result.recipe, loaded.layout, force=options.force,
                           protect=(loaded.path,) if loaded.path else (), fmt=options.fmt)
        write_reports(summary, report, html, force=options.force)
    return PatchResult(result, summary, loaded, output, report, html, list(saved), saved.notes)
