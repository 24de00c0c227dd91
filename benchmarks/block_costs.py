"""What each registered block costs on ResNet-50: parameters, FLOPs and latency, as a Markdown table for README.

Every block goes into torchvision's ResNet-50 (random weights, ``init="paper"``, default options) the same way, so
the rows compare the blocks, not the papers' placements: an insert block on the residual branch of each of the 16
bottlenecks (before the skip addition); ``sk`` and ``scconv`` in place of each bottleneck's 3x3 unit (conv2);
``scbottleneck`` in place of each conv1 + conv2 pair. Counts follow ``attn-surgeon profile``'s conventions (FLOPs
include the element-wise, pooling, softmax and normalisation work; ops it cannot count are listed under the table).
Latency: batch 1, 224x224, eval mode, ``--threads`` torch threads, the original and the patched model interleaved
(``surgeon.profile.profile_models``); the ratio is the patched model's median over the original's.

    python benchmarks/block_costs.py                 # every registered block
    python benchmarks/block_costs.py --blocks ema mlca --runs 5
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
import torchvision
from _timing import configure_threads, machine_line

import surgeon
from surgeon.blocks import list_blocks
from surgeon.pipeline import insert_rule, run_surgery, swap_rule
from surgeon.profile import LatencyOptions, profile_models

SHAPE = (1, 3, 224, 224)
SWAP_SITES = {"scbottleneck": "layer*.*.conv1"}  # its two units: conv1 and conv2


def patch(model: torch.nn.Module, name: str, shape: tuple[int, ...]) -> torch.nn.Module:
    """``model`` (a copy) with ``name`` at every bottleneck, as the module docstring says."""
    info = surgeon.blocks.get_block(name)
    if info.kind == "swap":
        rule = swap_rule(name, SWAP_SITES.get(name, "layer*.*.conv2"))
    else:
        rule = insert_rule(name, "bottleneck", "residual", init="paper")
    return run_surgery(copy.deepcopy(model), [rule], input_shape=shape).model.eval()


def row(name: str, model: torch.nn.Module, shape: tuple[int, ...], runs: int, threads: int) -> tuple[str, set[str]]:
    patched = patch(model, name, shape)
    timing = LatencyOptions(runs=runs, warmup=2, threads=threads)
    report = profile_models(model, patched, input_shape=shape, latency=timing, names=("resnet50", name))
    before, after = report["models"]
    latency = report["delta"]["latency"][0]["ratio"] if runs else float("nan")
    where = "3x3 unit" if name in ("sk", "scconv") else "conv1+conv2" if name in SWAP_SITES else "residual"
    line = (f"| `{name}` | {where} | {report['delta']['parameters']:+,} | {after['flops'] / 1e9:.2f} "
            f"({after['flops'] / before['flops']:.3f}x) | {latency:.2f} |")
    return line, set(after.get("uncounted_ops") or [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [info.name for info in list_blocks() if info.builtin]
    parser.add_argument("--blocks", nargs="+", default=names, choices=names)
    parser.add_argument("--runs", type=int, default=9,
                        help="timed rounds at least (0: counts only); more until the ratio is known to ±2%% or 10 s "
                             "are spent")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default="x".join(map(str, SHAPE)), help="NxCxHxW of the probe batch")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    warnings.filterwarnings("ignore")
    configure_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    base = sum(p.numel() for p in model.parameters())
    print(machine_line())
    print(f"torchvision resnet50 ({base:,} parameters), input {args.shape}, init=paper, default options; latency: "
          f"at least {args.runs} interleaved rounds at batch {shape[0]}, {args.threads} thread(s), "
          "patched/original medians")
    print()
    print("| block | where (each of the 16 bottlenecks) | parameters | GFLOPs (x ResNet-50) | latency ratio |")
    print("|---|---|---:|---:|---:|")
    uncounted: dict[str, set[str]] = {}
    for name in args.blocks:
        line, missed = row(name, model, shape, args.runs, args.threads)
        print(line, flush=True)
        if missed:
            uncounted[name] = missed
    if uncounted:
        print()
        print("uncounted ops: " + "; ".join(f"{name}: {', '.join(sorted(ops))}" for name, ops in uncounted.items()))


if __name__ == "__main__":
    main()
