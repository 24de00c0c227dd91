"""transformers model classes: ``transformers:CLASS`` specs, built from a default config with random weights."""

from __future__ import annotations

import difflib
import sys
from typing import Any

from torch import nn

from ...errors import ModelLoadError

__all__ = ["build", "is_transformers_model", "model_class"]


def _modeling() -> Any:
    """``transformers.modeling_utils`` if something imported it, else ``None`` (then no model can be one of its)."""
    return sys.modules.get("transformers.modeling_utils")


def is_transformers_model(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers ``PreTrainedModel``; never imports transformers."""
    modeling = _modeling()
    return modeling is not None and isinstance(module, modeling.PreTrainedModel)


def model_class(name: str, where: str = "") -> type:
    """The transformers model class ``name``, checked to take an image batch (``pixel_values``).

    Raises:
        ModelLoadError: no such class (with the closest names), or not a vision model; the message starts with
            ``where``.
    """
    import transformers

    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        names = [n for n in dir(transformers) if n.endswith(("ForImageClassification", "Model"))]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelLoadError(f"{where}transformers has no model class {name!r}{hint}; use transformers:ClassName, "
                             "e.g. transformers:ResNetForImageClassification")
    if cls.main_input_name != "pixel_values":
        raise ModelLoadError(f"{where}transformers:{name} takes {cls.main_input_name}, not an image batch "
                             "(pixel_values); attn-surgeon patches vision models")
    return cls


def _config(cls: type, fields: dict[str, Any]) -> Any:
    """``cls``'s config with ``fields`` set; an unknown field is an error (a config would keep it silently)."""
    known = cls.config_class()
    unknown = [key for key in fields if not hasattr(known, key)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known.to_dict()), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelLoadError(f"{cls.config_class.__name__} has no field {unknown[0]!r}{hint}")
    try:
        return cls.config_class(**fields)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"cannot build {cls.config_class.__name__}: {exc}") from None


def build(name: str, **config_fields: Any) -> nn.Module:
    """``transformers:NAME``: the class built from its default config (with ``config_fields`` set), random weights.

    Raises:
        ModelLoadError: no such class in transformers, not a vision model, or a config field it does not have.
    """
    cls = model_class(name)
    config = _config(cls, config_fields)
    try:
        return cls(config).eval()
    except ImportError as exc:  # a class whose extra library is not installed (DiNAT needs natten)
        raise ModelLoadError(f"cannot build transformers:{name}: {str(exc).strip().splitlines()[0]}") from None
