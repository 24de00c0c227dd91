"""A tiny synthetic YOLO data set written to disk in seconds: coloured rectangles on noise, one class per colour.

Detection: ``images/{train,val}/*.png`` with ``labels/{train,val}/*.txt`` (``class cx cy w h``, normalised) and a data
yaml; classification: ``{train,val}/<class>/*.png`` folders. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_classify_dataset", "write_detect_dataset"]

_COLOURS = ((230, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 40))


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 60, (size, size, 3), dtype=np.uint8)


def write_detect_dataset(root: str | Path, *, classes: int = 2, images: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write a detection data set under ``root``; return the path of its data yaml."""
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
                rows.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            Image.fromarray(picture).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    names = "".join(f"  {c}: shape{c}\n" for c in range(classes))
    data = root / "data.yaml"
    data.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data


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
