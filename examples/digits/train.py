"""The trainer ``attn-surgeon ablate`` calls for the digits CNN: ``train(model, *, seed, workdir)``.

Run from the repository root (15 trials: one to two minutes on a quiet CPU core)::

    attn-surgeon ablate examples.digits.model:build --input-shape 1,1,16,16 --blocks se,eca --seeds 5 \\
        --trainer examples.digits.train:train -o out/digits-ablate

Each trial gets a freshly built model (random weights drawn after ``torch.manual_seed(seed)``, so the arms of one
seed start from the same weights wherever they share layers), trains it from scratch on the fixed training split
and returns the test accuracy and loss. The data order depends on ``seed`` only and CPU kernels are deterministic,
so a trial repeated gives the same figures. One line per epoch goes to ``workdir/results.csv``, which ``ablate``
reads as the trial's training curves.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_split
from .engine import evaluate
from .engine import train as fit

__all__ = ["EPOCHS", "train"]

EPOCHS = 2  # 94-95% test accuracy from scratch: room left for a block to show, and 15 trials in a few minutes
LEARNING_RATE = 0.1
BATCH_SIZE = 64


def train(model: nn.Module, *, seed: int, workdir: Path, epochs: int = EPOCHS) -> dict[str, float]:
    """Train ``model`` from its current weights and return ``{"accuracy": ..., "loss": ...}`` on the test split.

    SGD with Nesterov momentum and a one-cycle cosine schedule, as ``engine.train`` trains the shipped model.

    Args:
        model: the model to train, in place.
        seed: orders the batches.
        workdir: where ``results.csv`` (epoch, train loss, test accuracy, test loss) is written.
        epochs: passes over the 1,347 training images.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(model, seed, Path(workdir), epochs)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(model: nn.Module, seed: int, workdir: Path, epochs: int) -> dict[str, float]:
    data = load_split()
    workdir.mkdir(parents=True, exist_ok=True)
    scores = {"accuracy": math.nan, "loss": math.nan}
    with (workdir / "results.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "train_loss", "test_accuracy", "test_loss"])

        def after_epoch(epoch: int, train_loss: float) -> None:
            accuracy, logits = evaluate(model, data.test_images, data.test_labels)
            scores.update(accuracy=accuracy, loss=F.cross_entropy(logits, data.test_labels).item())
            writer.writerow([epoch, f"{train_loss:.6f}", f"{accuracy:.6f}", f"{scores['loss']:.6f}"])
            file.flush()
            print(f"epoch {epoch}/{epochs}  train loss {train_loss:.4f}  test accuracy {accuracy:.2%}  "
                  f"test loss {scores['loss']:.4f}")

        fit(model, data.train_images, data.train_labels, epochs=epochs, lr=LEARNING_RATE, batch_size=BATCH_SIZE,
            seed=seed, log=False, after_epoch=after_epoch)
    return scores
