"""Train the base model from scratch and write the shipped checkpoint ``digits_resnet.pt`` (a bare state_dict).

Run from the repository root::

    python -m examples.digits.train_base

This is an ordinary training script with no attn-surgeon in it: the checkpoint it writes stands for the
pretrained weights a project already has. Seeds are fixed and CPU kernels deterministic, so re-running it on the
same machine reproduces the file's tensors.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .data import load_split
from .engine import evaluate, seed_everything, train
from .model import build

CHECKPOINT = Path(__file__).with_name("digits_resnet.pt")


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=CHECKPOINT)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    data = load_split()
    model = build()
    print(f"Training {type(model).__name__} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
          f"{len(data.train_images)} digits for {args.epochs} epochs")
    started = time.perf_counter()
    train(model, data.train_images, data.train_labels, epochs=args.epochs, lr=args.lr, seed=args.seed)
    accuracy, _ = evaluate(model, data.test_images, data.test_labels)
    print(f"Test accuracy: {accuracy:.2%} on {len(data.test_images)} images ({time.perf_counter() - started:.1f} s)")
    torch.save(model.state_dict(), args.output)
    print(f"Wrote {args.output}")
    return accuracy


if __name__ == "__main__":
    main()
