"""scikit-learn's handwritten digits (1,797 8x8 scans, shipped inside scikit-learn: nothing is downloaded).

The split is fixed (stratified, ``random_state=0``): 1,347 training and 450 test images. Pixel values 0..16 are
scaled to 0..1 and each image is upsampled 2x with nearest-neighbour, which copies pixels and invents nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import INPUT_SIZE

__all__ = ["DigitsSplit", "load_split"]


@dataclass
class DigitsSplit:
    """Images ``(N, 1, 16, 16)`` in 0..1 and labels ``(N,)``, for training and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _to_images(pixels: torch.Tensor) -> torch.Tensor:
    images = pixels.reshape(-1, 1, 8, 8) / 16.0
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="nearest")


def load_split(test_size: float = 0.25, seed: int = 0) -> DigitsSplit:
    """The fixed train/test split of the digits data set."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=test_size, random_state=seed, stratify=digits.target)
    return DigitsSplit(
        _to_images(torch.as_tensor(x_train, dtype=torch.float32)), torch.as_tensor(y_train, dtype=torch.long),
        _to_images(torch.as_tensor(x_test, dtype=torch.float32)), torch.as_tensor(y_test, dtype=torch.long))
