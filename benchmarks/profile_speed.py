"""How long counting takes: ``surgeon.profile.measure.counting.count_ops`` against fvcore's ``FlopCountAnalysis``.

Each round times, in turn, ``count_ops`` (default: meta execution), ``count_ops(execution="real")`` and
``FlopCountAnalysis(model, inputs).total()``, so that noise on a shared machine hits all three alike; the medians
over the rounds are compared. A ratio below 1 means ours is faster.

    python benchmarks/profile_speed.py
    python benchmarks/profile_speed.py --rounds 11 --threads 1 --models resnet50 efficientnet_b0
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torchvision

from surgeon.profile.measure.counting import count_ops

MODELS = ["resnet50", "resnet18", "mobilenet_v2", "efficientnet_b0"]


def fvcore_total(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore traces with torch.jit, which now warns that it is deprecated
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, inputs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total()


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, 1x3x{args.size}x{args.size}, "
          f"{args.rounds} rounds, medians in ms")
    header = f"{'model':<16} {'ours':>9} {'ours real':>10} {'fvcore':>9} {'ours/fvcore':>12} {'real/fvcore':>12}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = getattr(torchvision.models, name)(weights=None).eval()
        inputs = (torch.randn(1, 3, args.size, args.size),)
        contenders = {
            "ours": partial(count_ops, model, inputs),
            "ours real": partial(count_ops, model, inputs, execution="real"),
            "fvcore": partial(fvcore_total, model, inputs),
        }
        for fn in contenders.values():  # first calls pay one-off costs (oneDNN setup, tracer warm-up)
            fn()
        samples: dict[str, list[float]] = {key: [] for key in contenders}
        for _ in range(args.rounds):
            for key, fn in contenders.items():
                samples[key].append(seconds(fn))
        ours, real, fvcore = (statistics.median(samples[key]) * 1000 for key in contenders)
        print(f"{name:<16} {ours:>9.1f} {real:>10.1f} {fvcore:>9.1f} {ours / fvcore:>12.3f} {real / fvcore:>12.3f}")


if __name__ == "__main__":
    main()
