"""From a YOLOv8n checkpoint to a trained C2f_CBAM-YOLOv8n with the YOLO docs page's commands, on CPU in under a minute.

    python examples/yolo/run.py                      # a random-weight yolov8n (nothing downloaded), tiny data
    python examples/yolo/run.py --weights yolov8n.pt # your own checkpoint (Ultralytics downloads yolov8n.pt)

It writes a tiny synthetic data set, then runs, as a user would type them:

    attn-surgeon apply yolov8n.pt yolo_c2f_cbam --trust-pickle -o yolov8n_cbam.pt
    yolo train model=yolov8n_cbam.pt data=data.yaml epochs=1 imgsz=64
    yolo predict model=runs/train/weights/best.pt source=images/val

and checks that the trained checkpoint still holds every CBAM block. Everything goes under ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from examples.yolo.tiny_dataset import write_detect_dataset  # noqa: E402


def _run(*command: str, cwd: Path) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def _tool(name: str) -> str:
    """The console script installed beside this Python (attn-surgeon, yolo)."""
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else shutil.which(name) or name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="an Ultralytics detection checkpoint [default: random yolov8n]")
    parser.add_argument("--out", type=Path, default=Path("yolo_example"), help="working directory")
    args = parser.parse_args()
    start = time.perf_counter()
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = write_detect_dataset(work / "data", classes=2, images=8, size=64)
    weights = args.weights.resolve() if args.weights else work / "yolov8n.pt"
    if args.weights is None:  # stands in for the released yolov8n.pt: same file layout, random weights
        from ultralytics import YOLO

        yolo = YOLO("yolov8n.yaml")
        yolo.ckpt = yolo.ckpt or {}  # Ultralytics 8.3.0 leaves it None for a model built from a yaml
        yolo.save(weights)

    _run(_tool("attn-surgeon"), "apply", str(weights), "yolo_c2f_cbam", "--trust-pickle", "--profile", "off",
         "--force", "-o", "yolov8n_cbam.pt", cwd=work)
    _run(_tool("yolo"), "train", "model=yolov8n_cbam.pt", f"data={data}", "epochs=1", "imgsz=64", "batch=8",
         "workers=0", "device=cpu", "plots=False", "amp=False", f"project={work / 'runs'}", "name=train",
         "exist_ok=True", cwd=work)
    best = work / "runs" / "train" / "weights" / "best.pt"
    _run(_tool("yolo"), "predict", f"model={best}", f"source={work / 'data' / 'images' / 'val'}", "imgsz=64",
         "device=cpu", f"project={work / 'runs'}", "name=predict", "exist_ok=True", cwd=work)

    import surgeon  # noqa: F401  (the checkpoint's patched classes come from attn-surgeon)

    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    model = checkpoint.get("ema") or checkpoint["model"]
    blocks = [name for name, module in model.named_modules() if type(module).__name__ == "CBAM"]
    print(f"{best}: {len(blocks)} CBAM blocks after Ultralytics' training ({', '.join(blocks[:3])}, ...), "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {time.perf_counter() - start:.0f} s in all")
    if not blocks:
        raise SystemExit("the trained checkpoint lost its blocks")


if __name__ == "__main__":
    main()
