"""Helpers shared by the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(spec: str) -> torch.nn.Module:
    from surgeon.checkpoint import build_arch

    torch.manual_seed(0)
    return build_arch(spec).eval()


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics and affine weights so identity checks cannot pass by accident."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine:
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
