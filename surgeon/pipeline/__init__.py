"""The pipeline: the only layer that knows more than one stage.

It runs them in order — load (:mod:`surgeon.io`) → sites → match → rewrite → verify → save and report — and
holds every public entry point built on them. :mod:`.surgery` works on a model in memory (:func:`insert`,
:func:`swap`, :func:`apply`, :func:`replay`, the rule constructors, the one replay path); :mod:`.checkpoints` on
files (:func:`load`, :func:`save`, and :func:`patch`, which the CLI's ``insert``, ``swap`` and ``apply`` run);
:mod:`.compare` patches copies of one model with each candidate and measures them side by side (:func:`compare`).
Nothing below this package imports it.
"""

from ..match import plan_from_recipe
from ..recipe import recipe_of
from ..report import PatchResult
from ..rewrite import recipe_from_rewrite
from ..tensors import DEFAULT_INPUT_SHAPE
from .checkpoints import PatchOptions, give_siblings_blocks, load, load_model, patch, save
from .compare import EXPORT_SCOPES, CompareOptions, compare
from .surgery import (
    SurgeryResult,
    apply,
    check_model,
    insert,
    insert_rule,
    install_training_hooks,
    replay,
    replay_surgery,
    run_surgery,
    sites,
    swap,
    swap_rule,
)

__all__ = ["DEFAULT_INPUT_SHAPE", "EXPORT_SCOPES", "CompareOptions", "PatchOptions", "PatchResult", "SurgeryResult",
           "apply", "check_model", "compare", "give_siblings_blocks", "insert", "insert_rule", "install_training_hooks",
           "load", "load_model", "patch", "plan_from_recipe", "recipe_from_rewrite", "recipe_of", "replay",
           "replay_surgery", "run_surgery", "save", "sites", "swap", "swap_rule"]
