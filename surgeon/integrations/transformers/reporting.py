"""What attn-surgeon reports about a transformers model in transformers' terms: nothing of its own yet.

transformers publishes no FLOP count for a vision model (``PreTrainedModel.floating_point_ops`` estimates a language
model's training cost from its token count, which an image batch does not have), and no convention names the places
attention goes in its vision backbones; the profile's own count and ``attn-surgeon sites`` stand alone. The module is
here so that both integrations have the same skeleton, and a count or a convention has one place to go.
"""

from __future__ import annotations

from torch import nn

from ...io import ReferenceFlops

__all__ = ["places", "reference_flops"]


def reference_flops(model: nn.Module) -> ReferenceFlops | None:
    """``None``: transformers reports no FLOP count for an image model."""
    return None


def places(model: nn.Module) -> dict[str, str]:
    """Empty: transformers names no places for attention in its vision backbones."""
    return {}
