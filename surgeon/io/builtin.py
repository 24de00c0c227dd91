"""The frameworks attn-surgeon knows without an integration: torchvision and timm.

Their models are what architecture detection recognises in a bare state_dict, and their specs need no trust (a
``package.module:factory`` spec imports the user's code). Their files are plain checkpoints (:mod:`surgeon.io.layouts`),
so neither has a directory, a native layout, hooks or a trainer of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .adapter import FrameworkAdapter
from .specs import build_timm, build_torchvision

__all__ = ["TimmAdapter", "TorchvisionAdapter"]


def _defined_in(model: nn.Module, package: str) -> bool:
    module = type(model).__module__
    return module == package or module.startswith(package + ".")


class TorchvisionAdapter(FrameworkAdapter):
    """``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None)``."""

    name = "torchvision"

    def build(self, name: str, **arch_args: Any) -> nn.Module:
        return build_torchvision(name, **arch_args)

    def owns(self, model: nn.Module) -> bool:
        return _defined_in(model, "torchvision")


class TimmAdapter(FrameworkAdapter):
    """``timm:NAME``: ``timm.create_model(NAME, pretrained=False)``; timm's training checkpoints name their model."""

    name = "timm"

    def build(self, name: str, **arch_args: Any) -> nn.Module:
        return build_timm(name, **arch_args)

    def owns(self, model: nn.Module) -> bool:
        return _defined_in(model, "timm")

    def arch_hint(self, container: Mapping[str, Any]) -> str | None:
        """timm's ``train.py`` stores the model's name under ``arch``."""
        arch = container.get("arch")
        if not isinstance(arch, str):
            return None
        import timm

        return f"timm:{arch}" if timm.is_model(arch) else None
