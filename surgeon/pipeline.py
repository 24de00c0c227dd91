"""The surgery pipeline: sites → match → rewrite → verify, and the public functions built on it.

Every function here modifies the model **in place** and returns it (or a result holding it); pass
``copy.deepcopy(model)`` to keep the original. Errors are raised before the model is touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from .checkpoint import LoadedModel, load_model, save_model
from .errors import RewriteError, SurgeonError, VerificationError
from .match import Plan, Rule, Selector, make_plan, parse_site_spec
from .probe import DEFAULT_INPUT_SHAPE, probe_input
from .recipe import Recipe, plan_from_recipe, recipe_from_rewrite
from .rewrite import RewriteResult, rewrite
from .sites import SiteTable, find_sites
from .verify import Verification, capture_reference, verify

__all__ = ["MODEL_HOOKS", "ModelHook", "SurgeryResult", "run_surgery", "replay", "insert", "swap", "apply", "sites",
           "save", "load", "recipe_of", "DEFAULT_INPUT_SHAPE"]

_RECIPE_ATTR = "_surgeon_recipe"


@dataclass(frozen=True)
class ModelHook:
    """What a framework integration does around surgery on its models; registered by :mod:`surgeon.integrations`.

    Attributes:
        check: ``model -> None``, before surgery and before saving: raises a :class:`SurgeonError` for a model that
            lost blocks it records (a patched Hugging Face model loaded with its plain class), and does nothing for
            a model that is not the framework's.
        recorded: ``(model, recipe) -> None``, after a surgery or a replay gave ``model`` its recipe (a Hugging Face
            model copies it into its config, so that ``save_pretrained`` writes it).
    """

    check: Callable[[nn.Module], None]
    recorded: Callable[[nn.Module, Recipe], None]


MODEL_HOOKS: list[ModelHook] = []


def _set_recipe(model: nn.Module, recipe: Recipe) -> None:
    model.__dict__[_RECIPE_ATTR] = recipe
    for hook in MODEL_HOOKS:
        hook.recorded(model, recipe)


def _check(model: nn.Module) -> None:
    for hook in MODEL_HOOKS:
        hook.check(model)


@dataclass
class SurgeryResult:
    """Everything one surgery produced; ``rewrite``, ``verification`` and ``recipe`` are ``None`` on a dry run."""

    model: nn.Module
    sites: SiteTable
    plan: Plan
    rewrite: RewriteResult | None = None
    verification: Verification | None = None
    recipe: Recipe | None = None
    params_before: int = 0


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def recipe_of(model: nn.Module) -> Recipe | None:
    """The recipe of every surgery applied to ``model`` (or to the model a DDP/compile wrapper holds), or ``None``."""
    return _unwrap(model).__dict__.get(_RECIPE_ATTR)


def run_surgery(
    model: nn.Module,
    rules: Sequence[Rule],
    *,
    input_shape: Sequence[int] | None = None,
    base: str | None = None,
    arch_args: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> SurgeryResult:
    """Find sites, plan, rewrite ``model`` in place, and verify the guarantees.

    Args:
        model: the model to patch (modified in place unless ``dry_run``).
        rules: what to insert where, applied in order.
        input_shape: shape of the probe batch used to measure sites and output deviation; ``None`` for the model's
            declared input size (see :func:`~surgeon.probe.default_input_shape`). The recipe records the shape used.
        base: architecture spec recorded in the recipe, so the saved checkpoint can be rebuilt from the file alone.
        arch_args: keyword arguments of the base architecture, recorded likewise.
        dry_run: plan only; the model is not changed.

    Raises:
        SurgeonError: a user error (no match, bad block options, untraceable site, a model that refuses the probe
            batch, ...); the model is unchanged.
        VerificationError: the patched model lost an original tensor or cannot run (a bug, reported as such).
    """
    _check(model)
    table = find_sites(model, input_shape)
    plan = make_plan(table.sites, rules)
    if dry_run:
        return SurgeryResult(model, table, plan)
    return _execute(model, table, plan, base=base, arch_args=arch_args)


def _execute(model: nn.Module, table: SiteTable, plan: Plan, *, base: str | None,
             arch_args: dict[str, Any] | None) -> SurgeryResult:
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
    recipe = recipe_from_rewrite(result, base, table.input_shape, arch_args)
    if previous is not None:
        recipe = previous.extended(recipe)
    _set_recipe(model, recipe)
    return SurgeryResult(model, table, plan, result, verification, recipe, params_before)


def replay(model: nn.Module, recipe: Recipe | dict[str, Any]) -> nn.Module:
    """Apply a recorded surgery to a freshly built base model, in place, naming every block as recorded.

    Raises:
        CheckpointError: the model does not have the recorded sites (not the same base architecture).
    """
    recipe = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)
    table = find_sites(model, recipe.input_shape)
    plan = plan_from_recipe(recipe, table)
    result = rewrite(model, plan, table.traces)
    for step, item in zip(recipe.steps, result.inserted):
        if step.module != item.key:
            raise RewriteError(f"replay put {step.block!r} at {item.key!r}, the recipe recorded {step.module!r}; "
                               "was the model patched before?")
    _set_recipe(model, recipe)
    return model


def _selector(after: str | Selector, **filters: Any) -> Selector:
    return after if isinstance(after, Selector) else parse_site_spec(after, **filters)


def insert(
    model: nn.Module,
    block: str,
    after: str | Selector = "bottleneck",
    position: str | None = None,
    *,
    init: str = "identity",
    input_shape: Sequence[int] | None = None,
    **block_args: Any,
) -> nn.Module:
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
    rule = Rule(_selector(after), block, "insert", position, dict(block_args), init, name=f"--block {block}")
    return run_surgery(model, [rule], input_shape=input_shape).model


def swap(
    model: nn.Module,
    block: str,
    conv: str | Selector = "conv3x3",
    *,
    input_shape: Sequence[int] | None = None,
    stride: int | None = None,
    **block_args: Any,
) -> nn.Module:
    """Replace every selected conv unit (conv → norm → activation) by a swap block; in place.

    The swapped convolutions' keys are replaced by the new operator's (their weights are inherited where
    shapes allow); every other key is preserved.
    """
    selector = _selector(conv, stride=stride)
    if selector.kind not in (None, "conv"):
        raise SurgeonError(f"swap replaces convolutions; {conv!r} selects {selector.kind} sites")
    if selector.kind is None:
        selector = Selector(**{**selector.__dict__, "kind": "conv"})
    rule = Rule(selector, block, "replace", None, dict(block_args), "paper", name=f"--with {block}")
    return run_surgery(model, [rule], input_shape=input_shape).model


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
        input_shape: probe batch shape for rules, ``None`` for the model's declared input size (a recipe replays at
            the shape it recorded).
        init: ``"identity"`` or ``"paper"`` for every insert rule, overriding the document (rules only).
        trust_code: allow blocks given as ``package.module:Class`` in a rules document (importing runs code).

    Raises:
        RuleError: a rules document that cannot be read, or a rule that matches nothing or conflicts with another;
            the message starts with ``file:line:column: rule 'name':``.
        CheckpointError: a recipe whose sites the model does not have.
    """
    from .errors import NoMatchError, SelectorError
    from .rules import is_checkpoint, load_rules, locate, read_recipe

    source = rules_or_recipe
    if isinstance(source, (str, os.PathLike)) and is_checkpoint(source):
        source = read_recipe(source)
    if isinstance(source, Recipe) or (isinstance(source, dict) and "steps" in source):
        if init is not None:
            raise SurgeonError("init applies to rules; a recipe replays the recorded init of each block")
        return replay(model, source)
    rules = load_rules(source, init=init, trust_code=trust_code)
    try:
        return run_surgery(model, rules, input_shape=input_shape).model
    except (NoMatchError, SelectorError) as exc:
        raise locate(exc, rules) from None


def sites(model: nn.Module, input_shape: Sequence[int] | None = None) -> SiteTable:
    """Every candidate site of ``model``, probed at ``input_shape`` (``None``: its declared input size); the model is
    not changed."""
    return find_sites(model, None if input_shape is None else tuple(input_shape))


def save(model: nn.Module, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Save a patched model's state_dict with its recipe (``torch.load(weights_only=True)``-safe, atomic).

    A Hugging Face transformers model is saved as a ``save_pretrained`` directory instead (config, weights, and the
    recipe inside ``config.json``).

    A DistributedDataParallel or ``torch.compile`` wrapper is unwrapped, so the keys carry no ``module.`` or
    ``_orig_mod.`` prefix.

    Raises:
        SurgeonError: the model was not patched by attn-surgeon, or ``path`` exists and ``force`` is false.
    """
    model = _unwrap(model)
    _check(model)
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
    loaded: LoadedModel = load_model(path, arch=arch, trust_code=trust_code, trust_pickle=trust_pickle)
    return loaded.module
