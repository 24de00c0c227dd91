"""Keeping the blocks through training: a model that lost them is refused, and ``Trainer`` gets a callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...errors import SurgeonError
from ...recipe import Recipe, recipe_of
from .files import CONFIG_KEY, is_model_directory, read_recipe, record_recipe
from .models import is_transformers_model

__all__ = ["MissingBlocksError", "check_blocks", "note_recipe", "surgeon_callback"]


class MissingBlocksError(SurgeonError):
    """A transformers model whose config records attn-surgeon blocks that the model does not have."""


def note_recipe(model: nn.Module, recipe: Recipe) -> None:
    """Give a transformers model's config the recipe a surgery or a replay just gave the model."""
    if is_transformers_model(model):
        record_recipe(model, recipe)


def check_blocks(model: nn.Module) -> None:
    """Raise :class:`MissingBlocksError` if ``model``'s config records attn-surgeon blocks that it does not have.

    That is a patched model loaded with its plain class (``from_pretrained``), which drops the blocks. Does nothing for
    any other model.
    """
    if not is_transformers_model(model) or recipe_of(model) is not None:
        return
    recorded = getattr(model.config, CONFIG_KEY, None)
    steps = recorded.get("steps") if isinstance(recorded, dict) else None
    if not steps:
        return
    cls = type(model).__name__
    first = steps[0].get("module", "?") if isinstance(steps[0], dict) else "?"
    raise MissingBlocksError(
        f"this {cls}'s config records {len(steps)} attn-surgeon blocks (e.g. {first}) that the model does not have: "
        f"it was loaded with the plain {cls}.from_pretrained, which drops them. Load it with surgeon.load(DIRECTORY), "
        f"or give it its blocks with surgeon.apply(model, DIRECTORY) and then load the weights")


def _check_resume(model: nn.Module, output_dir: str, step: int) -> None:
    """Raise if training resumed from ``output_dir/checkpoint-STEP`` and that checkpoint's blocks are not the model's.

    ``Trainer`` loads a checkpoint into whatever model it holds with ``strict=False``, so a model built without the
    blocks would otherwise resume without them, the blocks' tensors merely logged as unexpected.
    """
    checkpoint = Path(output_dir) / f"checkpoint-{step}"
    recorded = read_recipe(checkpoint) if step and is_model_directory(checkpoint) else None
    if recorded is None or not recorded.steps:
        return
    own = recipe_of(model)
    if own is None or [s.module for s in own.steps] != [s.module for s in recorded.steps]:
        what = "does not have" if own is None else "has other blocks than"
        raise MissingBlocksError(
            f"resuming from {checkpoint}, whose model has {len(recorded.steps)} attn-surgeon blocks (e.g. "
            f"{recorded.steps[0].module}), but this model {what} them: build and patch it as in the first run, or "
            f"give it the recorded blocks with surgeon.apply(model, {str(checkpoint)!r}), before resuming")


def surgeon_callback() -> Any:
    """A ``transformers.TrainerCallback`` that checks, when training begins, that the model has its blocks.

    ``Trainer(..., callbacks=[surgeon_callback()])``: training a patched model that was loaded without its blocks
    (:func:`check_blocks`), or resuming from a checkpoint of ``output_dir`` whose blocks the model does not have,
    stops at once with :class:`MissingBlocksError` instead of training the model without them.
    """
    from transformers import TrainerCallback

    class SurgeonCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                           **kwargs: Any) -> None:
            if model is None:
                return
            check_blocks(model)
            if args is not None and state is not None:  # state holds the step training resumes at
                _check_resume(model, args.output_dir, state.global_step)

    return SurgeonCallback()
