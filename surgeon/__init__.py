"""attn-surgeon: insert attention blocks into existing PyTorch models, keeping every original weight key.

    >>> import surgeon, torchvision
    >>> model = surgeon.insert(torchvision.models.resnet50(), "eca", after="bottleneck")
    >>> surgeon.save(model, "resnet50_eca.pt")
"""

from . import errors, integrations
from ._version import __version__
from .blocks import get_block, list_blocks, register_block
from .experiments import AblateOptions, ablate
from .io import LoadOptions
from .match import Rule, Selector
from .pipeline import (
    CompareOptions,
    PatchOptions,
    apply,
    compare,
    insert,
    install_training_hooks,
    load,
    patch,
    recipe_of,
    replay,
    run_surgery,
    save,
    sites,
    swap,
)
from .profile import LatencyOptions, profile_models
from .recipe import Recipe

install_training_hooks()  # the frameworks' training hooks get the one replay path (Ultralytics': once it is imported)

__all__ = [
    "AblateOptions",
    "CompareOptions",
    "LatencyOptions",
    "LoadOptions",
    "PatchOptions",
    "Recipe",
    "Rule",
    "Selector",
    "__version__",
    "ablate",
    "apply",
    "compare",
    "errors",
    "get_block",
    "insert",
    "list_blocks",
    "load",
    "patch",
    "profile_models",
    "recipe_of",
    "register_block",
    "replay",
    "run_surgery",
    "save",
    "sites",
    "swap",
]
