"""Surgery on a model in memory: the rules Python and the shell build, one surgery run, and one replay path.

:func:`run_surgery` runs the stages in order (sites → match → rewrite → verify) for rules; :func:`replay_surgery`
does the same for a recorded recipe, wherever it comes from (:func:`replay`, :func:`apply` with a recipe,
:func:`surgeon.load`, ``attn-surgeon apply --recipe``). :func:`insert_rule` and :func:`swap_rule` build the rules of
:func:`insert`, :func:`swap` and the commands of the same names, checking the block's kind up front.

Every function here that takes a model modifies it **in place** and returns it (or a result holding it); pass
``copy.deepcopy(model)`` to keep the original. Errors are raised before the model is touched.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..blocks import check_init, get_block
from ..build import check_fits
from ..errors import (
    BlockError,
    CheckpointError,
    NoMatchError,
    RewriteError,
    SelectorError,
    SurgeonError,
    VerificationError,
)
from ..io import adapters, is_checkpoint, read_recipe
from ..io.registry import adapter_of_directory
from ..match import Plan, Rule, Selector, make_plan, parse_site_spec, plan_from_recipe
from ..recipe import Recipe, attach_recipe, recipe_of
from ..report import SurgeryResult
from ..rewrite import RewriteResult, recipe_from_rewrite, rewrite
from ..rules import RuleSet, load_rules, locate
from ..sites import SiteTable, find_sites
from ..tensors import probe_input
from ..verify import capture_reference, verify

__all__ = ["SurgeryResult", "apply", "check_model", "insert", "insert_rule", "install_training_hooks", "recipe_source",
           "replay", "replay_surgery", "resolve", "run_surgery", "sites", "surgery", "swap", "swap_rule"]


def check_model(model: nn.Module) -> None:
    """Every registered framework's check of ``model`` before surgery or saving (a Hugging Face model that lost the
    blocks its config records is refused)."""
    for adapter in adapters():
        adapter.check_model(model)


def install_training_hooks() -> None:
    """Give every registered framework's training hooks the one replay path (:func:`replay`); idempotent.

    Run once when ``surgeon`` is imported. A framework whose version cannot be hooked safely is only warned about
    here, and refused when one of its patched models is met (no patched model may be in sight yet).
    """
    for adapter in adapters():
        try:
            adapter.install_training_hooks(replay)
        except SurgeonError as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)


# ------------------------------------------------------------------------------------------------------- rules


def insert_rule(block: str, after: str | Selector = "bottleneck", position: str | None = None, *,
                init: str = "identity", args: Mapping[str, Any] | None = None, stage: str | int | None = None,
                stride: int | None = None, name: str | None = None) -> Rule:
    """The rule that inserts ``block`` at every site ``after`` selects (see :func:`insert`).

    Args:
        block: registry name or ``package.module:Class``.
        after: a site description (``bottleneck``, ``conv3x3``, a class name, a name glob, ``re:REGEX``) or a
            :class:`~surgeon.match.Selector`.
        position: ``residual``, ``after`` or ``before`` [default: by site kind].
        init: ``identity`` or ``paper``.
        args: block options.
        stage, stride: extra filters of a site description (a selector carries its own).
        name: the rule's name in messages.

    Raises:
        BlockError: an unknown block, a swap block, or an unknown init mode.
        SelectorError: a site description that cannot be read.
    """
    info = get_block(block)
    if info.kind == "swap":
        raise BlockError(f"{block!r} is a swap block (it replaces a conv unit); use swap "
                         f"(`attn-surgeon swap --with {block}`) to swap it in")
    selector = after if isinstance(after, Selector) else parse_site_spec(after, stage=stage, stride=stride)
    return Rule(selector, block, "insert", position, dict(args or {}), check_init(init),
                name=name or f"--block {block}")


def swap_rule(block: str, conv: str | Selector = "conv3x3", *, module: str | Selector | None = None,
              args: Mapping[str, Any] | None = None, stage: str | int | None = None, stride: int | None = None,
              name: str | None = None) -> Rule:
    """The rule that replaces every conv unit ``conv`` selects by the swap ``block``, or, with ``module``, every
    module it selects (a model's own attention module, by class) by the insert ``block`` (see :func:`swap`).

    Args:
        block: a swap block's registry name; with ``module``, an insert block's.
        conv: a kernel (``3x3``), a conv site description (``conv3x3``, a name glob) or a selector.
        module: the modules to replace: a class name (``SqueezeExcitation``, ``SEModule``, ``CBAM``), a name glob,
            ``re:REGEX`` or a selector; ``conv`` is then ignored.
        args: block options.
        stage, stride: extra filters of a site description (a selector carries its own).
        name: the rule's name in messages.

    Raises:
        BlockError: an unknown block, an insert block without ``module``, or a swap block with it.
        SurgeonError: ``conv`` selects sites other than convolutions.
    """
    info = get_block(block)
    if module is not None:
        if info.kind != "insert":
            raise BlockError(f"{block!r} is a swap block (it replaces a conv unit); a module is replaced by an insert "
                             "block (mlca, eca, se, ...)")
        selector = module if isinstance(module, Selector) else parse_site_spec(module, stage=stage, stride=stride)
        if selector.kind not in (None, "module"):
            raise SurgeonError(f"a block replaces modules; {module!r} selects {selector.kind} sites")
        selector = Selector(**{**selector.__dict__, "kind": "module"})
        return Rule(selector, block, "replace", None, dict(args or {}), "paper",
                    name=name or f"--with {block} --module {module}")
    if info.kind != "swap":
        raise BlockError(f"{block!r} is an insert block; swap takes a swap block (scconv, sk, ...) — "
                         f"use `attn-surgeon insert --block {block}` to insert it, or `--module CLASS` to put it in "
                         "place of a model's attention module")
    if isinstance(conv, str) and conv[:1].isdigit():  # a kernel, as the command line writes it: 3x3
        conv = f"conv{conv}"
    selector = conv if isinstance(conv, Selector) else parse_site_spec(conv, stage=stage, stride=stride)
    if selector.kind not in (None, "conv"):
        raise SurgeonError(f"swap replaces convolutions; {conv!r} selects {selector.kind} sites")
    if selector.kind is None:
        selector = Selector(**{**selector.__dict__, "kind": "conv"})
    return Rule(selector, block, "replace", None, dict(args or {}), "paper", name=name or f"--with {block}")


# ----------------------------------------------------------------------------------------------------- surgery


def run_surgery(model: nn.Module, rules: Sequence[Rule], *, input_shape: Sequence[int] | None = None,
                base: str | None = None, arch_args: dict[str, Any] | None = None,
                dry_run: bool = False) -> SurgeryResult:
    """Find sites, plan, rewrite ``model`` in place, and verify the guarantees.

    Args:
        model: the model to patch (modified in place unless ``dry_run``).
        rules: what to insert where, applied in order.
        input_shape: shape of the probe batch used to measure sites and output deviation; ``None`` for the model's
            declared input size (see :func:`~surgeon.tensors.default_input_shape`). The recipe records the shape used.
        base: architecture spec recorded in the recipe, so the saved checkpoint can be rebuilt from the file alone.
        arch_args: keyword arguments of the base architecture, recorded likewise.
        dry_run: plan only; the model is not changed.

    Raises:
        SurgeonError: a user error (no match, bad block options, a block that does not fit a site, untraceable site,
            a model that refuses the probe batch, ...); the model is unchanged.
        VerificationError: the patched model lost an original tensor or cannot run (a bug, reported as such).
    """
    check_model(model)
    table = find_sites(model, input_shape)
    plan = make_plan(table.sites, rules)
    check_fits(plan.actions)
    if dry_run:
        return SurgeryResult(model, table, plan)
    return _execute(model, table, plan, lambda result: recipe_from_rewrite(result, base, table.input_shape,
                                                                           arch_args))


def replay_surgery(model: nn.Module, recipe: Recipe | dict[str, Any], *, input_shape: Sequence[int] | None = None,
                   base: str | None = None, arch_args: dict[str, Any] | None = None,
                   dry_run: bool = False) -> SurgeryResult:
    """Replay a recorded surgery on ``model``, in place: the same sites, blocks, options and module names.

    The one replay path: :func:`replay`, :func:`load`, :func:`apply` with a recipe and ``attn-surgeon apply
    --recipe`` all come here. Each recorded site is found by name and its channels are checked; the result is
    verified like any surgery.

    Args:
        input_shape: probe batch shape [default: the recipe's].
        base, arch_args: the architecture recorded in the new recipe [default: the recipe's].

    Raises:
        CheckpointError: the model does not have the recorded sites (not the same base architecture).
        RewriteError: a block did not get its recorded name (the model was patched before).
    """
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
    table = find_sites(model, tuple(int(v) for v in input_shape or recipe.input_shape))
    plan = plan_from_recipe(recipe, table)
    check_fits(plan.actions)
    if dry_run:
        return SurgeryResult(model, table, plan)
    if base is None:
        base, arch_args = recipe.base, recipe.arch_args

    def record(result: RewriteResult) -> Recipe:
        for step, item in zip(recipe.steps, result.inserted):
            if step.module != item.key:
                raise RewriteError(f"replay put {step.block!r} at {item.key!r}, the recipe recorded "
                                   f"{step.module!r}; was the model patched before?")
        return Recipe(base, table.input_shape, list(recipe.steps), dict(arch_args or {}))

    return _execute(model, table, plan, record)


def _execute(model: nn.Module, table: SiteTable, plan: Plan,
             record: Callable[[RewriteResult], Recipe]) -> SurgeryResult:
    """Rewrite ``model`` by ``plan``, verify it, and attach the recipe ``record`` makes of the rewrite."""
    params_before = sum(p.numel() for p in model.parameters())
    reference = capture_reference(model, probe_input(table.input_shape, model), table.probe_outputs)
    result = rewrite(model, plan, table.traces)
    removed = [key for item in result.inserted for key in item.removed_keys]
    verification = verify(model, reference, removed_by_swap=removed)
    if not verification.forward_ok:
        raise VerificationError(f"the patched model fails on a probe batch of shape {list(table.input_shape)}: "
                                f"{verification.error}")
    if not verification.keys_preserved:
        keys = verification.missing_keys + verification.changed_keys
        raise VerificationError(f"surgery lost or changed {len(keys)} original tensors (e.g. {keys[0]}); "
                                "please report this as a bug")
    previous = recipe_of(model)
    recipe = record(result)
    if previous is not None:
        recipe = previous.extended(recipe)
    attach_recipe(model, recipe)
    for adapter in adapters():
        adapter.note_recipe(model, recipe)
    return SurgeryResult(model, table, plan, result, verification, recipe, params_before)


# ------------------------------------------------------------------------------------------------ public API


def replay(model: nn.Module, recipe: Recipe | dict[str, Any]) -> nn.Module:
    """Apply a recorded surgery to a freshly built base model, in place, naming every block as recorded.

    Raises:
        CheckpointError: the model does not have the recorded sites (not the same base architecture).
    """
    return replay_surgery(model, recipe).model


def insert(model: nn.Module, block: str, after: str | Selector = "bottleneck", position: str | None = None, *,
           init: str = "identity", input_shape: Sequence[int] | None = None, **block_args: Any) -> nn.Module:
    """Insert ``block`` at every site that ``after`` selects; modifies ``model`` in place and returns it.

    Args:
        model: any ``nn.Module`` taking an NCHW image batch.
        block: registry name (``"eca"``, see :func:`list_blocks`) or ``"package.module:ClassName"``.
        after: the sites: ``"bottleneck"``, ``"conv3x3"``, a class name, a name glob (``"layer3.*"``),
            ``"re:REGEX"``, or a :class:`~surgeon.match.Selector`.
        position: ``"residual"`` (before the skip addition; default for residual units), ``"after"`` (default
            otherwise) or ``"before"``.
        init: ``"identity"`` (the patched model computes the same function) or ``"paper"``.
        input_shape: probe batch shape; ``None`` for the model's declared input size.
        **block_args: options of the block (e.g. ``k_size=3``).

    Example:
        >>> model = surgeon.insert(torchvision.models.resnet50(), "eca", after="bottleneck")
    """
    rule = insert_rule(block, after, position, init=init, args=block_args)
    return run_surgery(model, [rule], input_shape=input_shape).model


def swap(model: nn.Module, block: str, conv: str | Selector = "conv3x3", *, module: str | Selector | None = None,
         input_shape: Sequence[int] | None = None, stride: int | None = None, **block_args: Any) -> nn.Module:
    """Replace every selected conv unit (conv → norm → activation) by a swap block, or with ``module``, every
    selected module (a model's own attention module: ``"SqueezeExcitation"``, ``"SEModule"``, ``"CBAM"``) by an
    insert block built for its channels; in place.

    The swapped convolutions' keys are replaced by the new operator's (their weights are inherited where
    shapes allow), a replaced module's keys by the block's; every other key is preserved. The recipe lists the
    removed keys of each step.

    Example:
        >>> model = surgeon.swap(torchvision.models.mobilenet_v3_small(), "mlca", module="SqueezeExcitation")
    """
    rule = swap_rule(block, conv, module=module, args=block_args, stride=stride)
    return run_surgery(model, [rule], input_shape=input_shape).model


def recipe_source(source: Any, trust_code: bool) -> Recipe | None:
    """The recipe ``source`` holds (a :class:`Recipe`, its dict, or a checkpoint path), or ``None`` for rules."""
    if isinstance(source, (str, os.PathLike)) and (is_checkpoint(source) or adapter_of_directory(source)):
        return read_recipe(source, trust_code=trust_code)
    if isinstance(source, Recipe):
        return source
    if isinstance(source, dict) and "steps" in source:
        return Recipe.from_dict(source)
    return None


def apply(model: nn.Module, rules_or_recipe: Any, *, input_shape: Sequence[int] | None = None,
          init: str | None = None, trust_code: bool = False) -> nn.Module:
    """Apply rules, or replay a recipe, to ``model`` in place and return it.

    Args:
        model: the model to patch.
        rules_or_recipe: rules — a rules file path, a preset name (``"se_resnet"``, see
            :func:`surgeon.rules.list_presets`), YAML text, a rules document as a dict (``{"version": 1,
            "rules": [...]}``) or a list of :class:`Rule` — or a recipe: a :class:`Recipe`, its dict (with
            ``steps``), or the path of a checkpoint written by attn-surgeon or of a model directory written from a
            patched model (a Hugging Face ``save_pretrained`` directory), whose recipe is replayed.
        input_shape: probe batch shape [default: a recipe's own, else the model's declared input size].
        init: ``"identity"`` or ``"paper"`` for every insert rule, overriding the document (rules only).
        trust_code: allow blocks given as ``package.module:Class`` in a rules document or a checkpoint's recipe
            (importing runs code).

    Raises:
        RuleError: a rules document that cannot be read, or a rule that matches nothing or conflicts with another;
            the message starts with ``file:line:column: rule 'name':``.
        CheckpointError: a recipe whose sites the model does not have.
    """
    return surgery(model, resolve(rules_or_recipe, init=init, trust_code=trust_code), input_shape=input_shape).model


def resolve(rules_or_recipe: Any, *, init: str | None = None, trust_code: bool = False) -> Recipe | RuleSet:
    """Read what :func:`apply` takes into a recipe or rules (a :class:`RuleSet` is returned as it is).

    Raises:
        RuleError: rules that cannot be read.
        CheckpointError: a checkpoint without a recipe, or whose recipe imports code without ``trust_code``.
        SurgeonError: ``init`` given with a recipe.
    """
    recipe = recipe_source(rules_or_recipe, trust_code)
    if recipe is not None:
        if init is not None:
            raise SurgeonError("init applies to rules; a recipe replays the recorded init of each block")
        return recipe
    if isinstance(rules_or_recipe, RuleSet) and init is None:
        return rules_or_recipe
    return load_rules(rules_or_recipe, init=init, trust_code=trust_code)


def surgery(model: nn.Module, rules_or_recipe: Recipe | RuleSet, *, input_shape: Sequence[int] | None,
            base: str | None = None, arch_args: dict[str, Any] | None = None, dry_run: bool = False,
            where: str = "the model") -> SurgeryResult:
    """Run rules, or replay a recipe, on ``model`` (see :func:`resolve`).

    Args:
        base, arch_args: the architecture the new recipe records.
        dry_run: plan only.
        where: how messages name the model.

    Raises:
        RuleError: a rule that matches nothing or conflicts with another, with its location.
        CheckpointError: a recipe that does not fit the model.
    """
    if isinstance(rules_or_recipe, Recipe):
        recipe = rules_or_recipe
        try:
            return replay_surgery(model, recipe, input_shape=input_shape, base=base, arch_args=arch_args,
                                  dry_run=dry_run)
        except CheckpointError as exc:
            if recipe.origin is None:
                raise
            raise CheckpointError(f"{recipe.origin}: its recipe does not fit {where} ({exc})") from None
    try:
        return run_surgery(model, rules_or_recipe, input_shape=input_shape, base=base, arch_args=arch_args,
                           dry_run=dry_run)
    except (NoMatchError, SelectorError) as exc:
        raise locate(exc, rules_or_recipe) from None


def sites(model: nn.Module, input_shape: Sequence[int] | None = None) -> SiteTable:
    """Every candidate site of ``model``, probed at ``input_shape`` (``None``: its declared input size); the model is
    not changed."""
    return find_sites(model, input_shape)
