"""How long surgery takes, next to how long timm takes to build the same model.

Each round builds the model with ``timm.create_model(name)`` (random initialisation, nothing downloaded) and times
it, then times ``surgeon.run_surgery`` inserting a block after every residual unit of that fresh model (what
``attn-surgeon insert MODEL --block eca --after bottleneck`` runs: sites, match, rewrite, verify; construction
excluded). The ratio is surgery time / build time, paired within each round. A line is then fitted through the
median surgery time against the number of sites over all models: the slope is the cost of one more site.

Each round also times one eval-mode forward pass of the fresh model on the probe batch: surgery runs the model at
least twice (once to measure the sites and record the reference outputs, once to verify the patched model), so
``2 fwd/build`` is the floor of the ratio that the pipeline's design allows on this machine, and a second line is
fitted through surgery time minus those two forwards (the work that grows with the sites).

    python benchmarks/surgery_time.py
    python benchmarks/surgery_time.py --models resnet50 resnet152 --rounds 7 --threads 1
    python benchmarks/surgery_time.py --profile resnet152      # where the time goes (cProfile)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import warnings
from dataclasses import dataclass
from functools import partial

import timm
import torch
from _timing import configure_threads, goal_mark, linear_fit, machine_line, paired_ratio, seconds, set_clock

import surgeon
from surgeon.match import Rule, parse_site_spec

# resnetrs350 has 116 residual units (timm's resnet200d has 66, regnety_160 only 18)
MODELS = ["resnet18", "resnet50", "resnet101", "resnet152", "resnet200d", "resnetrs350"]
QUICK_MODELS = ["resnet18", "resnet34"]
GOAL = 1.0


@dataclass
class Row:
    model: str
    sites: int
    build: list[float]
    forward: list[float]
    surgery: list[float]


def surgery(model: torch.nn.Module, block: str, input_shape: tuple[int, ...]) -> int:
    """Insert ``block`` after every residual unit of ``model`` (in place); the number of blocks inserted."""
    rule = Rule(parse_site_spec("bottleneck"), block, "insert", None, {}, "identity", name=f"--block {block}")
    result = surgeon.run_surgery(model, [rule], input_shape=input_shape)
    return len(result.rewrite.inserted)


def forward(model: torch.nn.Module, probe: torch.Tensor) -> None:
    training = model.training
    model.eval()
    with torch.no_grad():
        model(probe)
    model.train(training)


def _build(into: list[torch.nn.Module], name: str) -> None:
    into.append(timm.create_model(name))


def _patch(into: list[int], model: torch.nn.Module, block: str, input_shape: tuple[int, ...]) -> None:
    into.append(surgery(model, block, input_shape))


def measure(name: str, block: str, rounds: int, input_shape: tuple[int, ...]) -> Row:
    """Alternate build, one forward and surgery of the model just built (each timed), ``rounds`` times after a
    warm-up round."""
    row = Row(name, 0, [], [], [])
    probe = torch.randn(input_shape)
    for r in range(rounds + 1):  # round 0 warms up imports, tracer caches and oneDNN primitives
        models: list[torch.nn.Module] = []
        built = seconds(partial(_build, models, name))
        ran = seconds(partial(forward, models[0], probe))
        counts: list[int] = []
        took = seconds(partial(_patch, counts, models[0], block, input_shape))
        if r:
            row.build.append(built)
            row.forward.append(ran)
            row.surgery.append(took)
        row.sites = counts[0]
    return row


def profile(name: str, block: str, input_shape: tuple[int, ...], lines: int) -> None:
    model = timm.create_model(name)
    surgery(timm.create_model("resnet18"), block, input_shape)  # one-off costs out of the picture
    profiler = cProfile.Profile()
    profiler.enable()
    surgery(model, block, input_shape)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"surgeon/|fx/_symbolic_trace|fx/graph|interpreter|torch.conv2d", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="timm model names")
    parser.add_argument("--block", default="eca")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=224, help="probe resolution (the pipeline's default is 224)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall time")
    parser.add_argument("--profile", metavar="MODEL", help="print a cProfile of one surgery of MODEL and exit")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.models, args.rounds, args.size = args.models or QUICK_MODELS, 1, 32
    configure_threads(args.threads or None)
    set_clock(args.clock)
    warnings.filterwarnings("ignore")
    input_shape = (1, 3, args.size, args.size)
    print(machine_line())
    if args.profile:
        profile(args.profile, args.block, input_shape, 40)
        return

    print(f"surgery = run_surgery(insert {args.block} after every residual unit), probe 1x3x{args.size}x{args.size}; "
          f"build = timm.create_model(name); {args.rounds} rounds, medians in ms, ratio = median of per-round "
          f"surgery/build [p25, p75]; goal mark 'noise': median above the goal, 25th percentile not")
    header = (f"{'model':<14} {'sites':>5} {'build ms':>9} {'fwd ms':>8} {'surgery ms':>11} {'ms/site':>8} "
              f"{'surgery/build':>24} {'goal<=' + str(GOAL):>9} {'2 fwd/build':>12}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models or MODELS:
        row = measure(name, args.block, args.rounds, input_shape)
        rows.append(row)
        ratio = paired_ratio(row.surgery, row.build)
        floor = paired_ratio([2 * t for t in row.forward], row.build)
        surgery_ms, forward_ms = ratio.numerator_s * 1e3, statistics.median(row.forward) * 1e3
        print(f"{name:<14} {row.sites:>5} {ratio.denominator_s * 1e3:>9.1f} {forward_ms:>8.1f} {surgery_ms:>11.1f} "
              f"{surgery_ms / max(row.sites, 1):>8.2f} {ratio!s:>24} {goal_mark(ratio, GOAL):>9} "
              f"{floor.value:>12.3f}", flush=True)
    sites = [row.sites for row in rows]
    times = [statistics.median(row.surgery) * 1e3 for row in rows]
    slope, intercept, r2 = linear_fit(sites, times)
    print(f"fit: surgery ms = {intercept:.1f} + {slope:.2f} ms/site x sites, R^2 = {r2:.3f} over {len(rows)} models")
    # the two probe forwards scale with the model's FLOPs, not its sites: the rest is the per-site work
    rest = [statistics.median(s - 2 * f for s, f in zip(row.surgery, row.forward)) * 1e3 for row in rows]
    slope, intercept, r2 = linear_fit(sites, rest)
    print(f"fit without two forwards: ms = {intercept:.1f} + {slope:.2f} ms/site x sites, R^2 = {r2:.3f}")


if __name__ == "__main__":
    main()
