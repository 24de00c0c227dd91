"""A tiny synthetic YOLO data set written to disk in seconds: coloured rectangles on noise, one class per colour.

Detection, segmentation, pose and OBB: ``images/{train,val}/*.png`` with ``labels/{train,val}/*.txt`` (normalised
coordinates, in Ultralytics' label format for the task) and a data yaml; classification: ``{train,val}/<class>/*.png``
folders. Each rectangle is labelled as its task needs: a box (``class cx cy w h``), a polygon (its four corners), a
box with keypoints (its corners, each visible) or an oriented box (its four corners). Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KEYPOINTS", "write_classify_dataset", "write_detect_dataset", "write_obb_dataset", "write_pose_dataset",
           "write_segment_dataset"]

_COLOURS = ((230, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 40))
KEYPOINTS = 4
"""Keypoints per object in the pose set: the rectangle's corners, clockwise from the top left."""

Label = Callable[[int, float, float, float, float], str]
"""(class, x0, y0, x1, y1) of a rectangle, normalised → one label line."""


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 60, (size, size, 3), dtype=np.uint8)


def _corners(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _box(cls: int, x0: float, y0: float, x1: float, y1: float) -> str:
    return f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"


def _polygon(cls: int, x0: float, y0: float, x1: float, y1: float) -> str:
    return f"{cls} " + " ".join(f"{x:.6f} {y:.6f}" for x, y in _corners(x0, y0, x1, y1))


def _keypoints(cls: int, x0: float, y0: float, x1: float, y1: float) -> str:
    return _box(cls, x0, y0, x1, y1) + "".join(f" {x:.6f} {y:.6f} 2" for x, y in _corners(x0, y0, x1, y1))


def _write_boxes(root: str | Path, label: Label, extra: str, *, classes: int, images: int, size: int,
                 seed: int) -> Path:
    """Images of rectangles with one ``label`` line per rectangle, and a data yaml ending in ``extra``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(images):
            picture, rows = _image(rng, size), []
            for box in range(2):
                cls = (i + box) % classes
                w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                picture[y:y + h, x:x + w] = _COLOURS[cls % len(_COLOURS)]
                rows.append(label(cls, x / size, y / size, (x + w) / size, (y + h) / size))
            Image.fromarray(picture).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    names = "".join(f"  {c}: shape{c}\n" for c in range(classes))
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}{extra}")
    return data


def write_detect_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write a detection data set under ``root``; return the path of its data yaml."""
    return _write_boxes(root, _box, "", classes=classes, images=images, size=size, seed=seed)


def write_segment_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 64,
                          seed: int = 0) -> Path:
    """Write a segmentation data set (each rectangle's outline as a polygon); return its data yaml."""
    return _write_boxes(root, _polygon, "", classes=classes, images=images, size=size, seed=seed)


def write_pose_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write a pose data set (:data:`KEYPOINTS` visible keypoints per rectangle, its corners); return its data yaml.

    A horizontal flip swaps the left and right corners, as ``flip_idx`` says.
    """
    extra = f"kpt_shape: [{KEYPOINTS}, 3]\nflip_idx: [1, 0, 3, 2]\n"
    return _write_boxes(root, _keypoints, extra, classes=classes, images=images, size=size, seed=seed)


def write_obb_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write an oriented-box data set (each rectangle's four corners); return its data yaml."""
    return _write_boxes(root, _polygon, "", classes=classes, images=images, size=size, seed=seed)


def write_classify_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 32,
                           seed: int = 0) -> Path:
    """Write a classification data set (one folder per class); return its root, which ``data=`` takes."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for cls in range(classes):
            folder = root / split / f"shape{cls}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images):
                picture = _image(rng, size)
                picture[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = _COLOURS[cls % len(_COLOURS)]
                Image.fromarray(picture).save(folder / f"{i}.png")
    return root
