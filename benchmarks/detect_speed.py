"""How long architecture detection takes for a state_dict given without ``--arch`` (goal: under 10 s for ResNet-50).

For each model, a state_dict is made (on the meta device: detection reads only names and shapes) and
``surgeon.io.detect.detect_arch`` is timed twice: *cold*, with an empty signature cache (every candidate that survives
the narrowing is built on the meta device), then *warm*, reading the cache the cold run wrote. Library imports are
done before timing (the CLI has them loaded already). Each model gets its own empty cache, so no run profits from
another's.

    python benchmarks/detect_speed.py
    python benchmarks/detect_speed.py --models torchvision:resnet50 timm:efficientnet_b0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
import torchvision

from surgeon.io.detect import SignatureCache, detect_arch

MODELS = ["torchvision:resnet50", "torchvision:resnet18", "torchvision:mobilenet_v2", "timm:resnet50"]
GOAL_S = 10.0


def state_of(spec: str) -> dict[str, torch.Tensor]:
    library, _, name = spec.partition(":")
    with torch.device("meta"):
        model = (torchvision.models.get_model(name, weights=None) if library == "torchvision"
                 else timm.create_model(name))
    return model.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()
    timm.list_models()  # warm the registries outside the timings
    torchvision.models.list_models()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}; "
          f"{torch.get_num_threads()} threads")
    header = f"{'model':<26} {'cold s':>7} {'built':>6} {'warm s':>7}  result"
    print(header)
    print("-" * len(header))
    for spec in args.models:
        state = state_of(spec)
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            cold = detect_arch(state, cache=SignatureCache(Path(directory)))
            cold_s = time.perf_counter() - start
            start = time.perf_counter()
            warm = detect_arch(state, cache=SignatureCache(Path(directory)))
            warm_s = time.perf_counter() - start
        assert warm.spec == cold.spec
        flag = "" if cold_s < GOAL_S else f"  (over the {GOAL_S:.0f} s goal)"
        print(f"{spec:<26} {cold_s:>7.2f} {cold.built:>6} {warm_s:>7.2f}  {cold.describe()}{flag}")


if __name__ == "__main__":
    main()
