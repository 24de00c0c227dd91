"""Hugging Face transformers vision models: specs, ``save_pretrained`` directories, and blocks kept through ``Trainer``.

Specs: ``transformers:ResNetForImageClassification`` (any model class transformers exports whose input is
``pixel_values``: ``*ForImageClassification``, ``*Model``) builds the class from its default config, with random
weights; ``arch_args`` (``--arch-args``) are config fields (``depths=[1,1,1,1]``, ``num_labels=10``). Nothing is
downloaded.

Directories: a directory as ``save_pretrained`` writes it — ``config.json`` with a ``model_type``, beside
``model.safetensors`` (or safetensors shards and their index, or ``pytorch_model.bin``) — is recognised by content.
Its model class is the first of the config's ``architectures``, taken from transformers itself: no code is imported
from the directory. A directory without a recipe loads with the class's own ``from_pretrained`` (local files only).

The recipe lives in ``config.json``, under ``attn_surgeon``. A transformers config keeps the keys it does not know as
attributes and writes them back, so every directory a patched model is saved to — by :func:`surgeon.save`,
``model.save_pretrained``, ``Trainer.save_model`` and each ``checkpoint-N`` of ``Trainer`` — carries the recipe, and
:func:`surgeon.load` rebuilds the model with its blocks from it: the class from its config, the recipe replayed, then
every tensor loaded with ``strict=True``. The patched model's config gets the recipe at the moment of surgery (or of
a replay), through the adapter's ``note_recipe``.

A plain ``from_pretrained`` of such a directory cannot know the blocks: transformers builds the class, loads every
original tensor, logs its LOAD REPORT with each block tensor as UNEXPECTED, and returns the model without the blocks.
No field of ``config.json`` can make transformers refuse or redirect that load short of running code from the
directory (``auto_map`` with ``trust_remote_code``), and attn-surgeon puts no code into model directories. What the
config carries instead is the recipe, which the plainly loaded model keeps as ``model.config.attn_surgeon``: every
attn-surgeon call given such a model (``insert``, ``apply`` with rules, ``save``) and :func:`surgeon_callback` at the
start of training raise :class:`MissingBlocksError`, which says how to get the blocks back.

The package has the skeleton every integration has: :mod:`.adapter` (the :class:`TransformersAdapter`, registered in
:mod:`surgeon.io.registry`), :mod:`.models` (specs, model classes), :mod:`.files` (``save_pretrained`` directories),
:mod:`.training` (keeping the blocks through ``Trainer``), :mod:`.reporting`.
"""

from __future__ import annotations

from ...io import adapter_named
from ...io import register as register_adapter
from .adapter import TransformersAdapter
from .files import CONFIG_KEY, NOTE, is_model_directory, read_directory, read_recipe, write_directory
from .models import build, is_transformers_model
from .training import MissingBlocksError, check_blocks, note_recipe, surgeon_callback

__all__ = ["CONFIG_KEY", "NOTE", "MissingBlocksError", "TransformersAdapter", "build", "check_blocks",
           "is_model_directory", "is_transformers_model", "note_recipe", "read_directory", "read_recipe", "register",
           "surgeon_callback", "write_directory"]


def register() -> None:
    """Register the transformers adapter in :mod:`surgeon.io.registry` (idempotent)."""
    if not isinstance(adapter_named(TransformersAdapter.name), TransformersAdapter):
        register_adapter(TransformersAdapter(), replace=True)
