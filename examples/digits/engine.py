"""The training loop and evaluation shared by ``train_base.py`` and ``run.py``: plain PyTorch, nothing patched."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["evaluate", "seed_everything", "train"]


def seed_everything(seed: int) -> None:
    """Fix every source of randomness the example uses, and make CPU kernels deterministic.

    One thread, because a CPU reduction split over another number of threads sums in another order: the
    digits would then train to other weights on a machine with more cores.
    """
    torch.set_num_threads(1)
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 512) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the logits of ``model`` in eval mode (its train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return (logits.argmax(1) == labels).float().mean().item(), logits


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
          batch_size: int = 64, weight_decay: float = 5e-4, seed: int = 0, log: bool = True,
          after_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """SGD with momentum and a cosine schedule; returns the mean training loss of each epoch.

    The shuffling uses its own generator, so the order of batches depends on ``seed`` only. ``after_epoch(epoch,
    mean_loss)`` is called after each epoch (1-based), e.g. to evaluate; the model is back in train mode after it.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15, anneal_strategy="cos")
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        losses.append(total / len(images))
        if log:
            print(f"  epoch {epoch + 1}/{epochs}  train loss {losses[-1]:.4f}")
        if after_epoch is not None:
            after_epoch(epoch + 1, losses[-1])
            model.train()
    model.eval()
    return losses
