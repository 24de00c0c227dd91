"""Our blocks against timm's implementation of the same block: forward + backward time, measured alternately.

For every block timm also has (SE, ECA, CBAM, GC, Non-local, Coordinate attention, SK), both are built with the
same widths and options and timm's weights are copied into ours (see ``_timm_pairs.py`` for what each pair aligns);
the outputs are compared before anything is timed. One step is a training-mode forward and a backward pass with
respect to the input and every parameter. Steps alternate between ours and timm's, round by round, in one process;
the ratio is the median of the per-round ratios ours / timm's, with its 25th and 75th percentiles. One sample runs as
many steps as fill ``--min-sample`` seconds (at least one) and is divided by their number.

At 8x256x56x56 a step is memory-bound and each full-size tensor is 26 MB: with glibc's default settings its
allocation can cost thousands of page faults, as many or as few as the memory the other contender left behind,
which swings a ratio by 20-40% from one run to the next (``--malloc system`` shows it). By default the script
re-runs itself with malloc keeping freed memory (``_timing.STEADY_MALLOC``), so that both sides are timed on
their work.

The blocks timm does not have (EMA, SCSA, MLCA, LSKA, LSK, SA, CPCA, GAM, ELA) are timed the same way against our SE
at the same shape, the cheapest common attention block, as a yardstick: ``ours/se`` is what one of them costs in
SEs. A block whose defaults do not fit a shape (SA's 64 groups on 32 channels, SCSA's 7x7 window on 4x4 maps) is
built with the options its registry entry proposes, printed in the row.

    python benchmarks/blocks.py
    python benchmarks/blocks.py --blocks se cbam --shapes 8x256x56x56 --rounds 11
    python benchmarks/blocks.py --blocks --new-blocks ema gam    # only the new blocks, against SE
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from functools import partial

import torch
from _timing import (
    allocator_line,
    alternate,
    configure_threads,
    goal_mark,
    machine_line,
    Ratio,
    paired_ratio,
    seconds,
    set_clock,
    use_steady_malloc,
)
from _timm_pairs import PAIRS, max_relative_diff
from torch import nn

import surgeon  # noqa: F401  (registers the blocks)
from surgeon.blocks import create_block, get_block

SHAPES = ["8x256x56x56", "8x1024x14x14"]
QUICK_SHAPES = ["2x32x8x8", "2x64x4x4"]
BLOCKS = ["se", "eca", "cbam", "gc", "gc_mul", "nonlocal", "ca", "sk"]
NEW_BLOCKS = ["ema", "scsa", "mlca", "lska", "lsk", "sa", "cpca", "gam", "ela"]  # no timm counterpart
GOAL = 1.0


def parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(v) for v in text.lower().split("x"))
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"shape must be NxCxHxW, got {text!r}")
    return parts  # type: ignore[return-value]


def train_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeat: int = 1) -> None:
    """``repeat`` forward and backward passes; gradients are dropped first so each step allocates alike."""
    for _ in range(repeat):
        for param in module.parameters():
            param.grad = None
        x.grad = None
        module(x).backward(grad)


def steps_per_sample(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, min_seconds: float) -> int:
    """How many steps make one sample last ``min_seconds``: a 5 ms step timed alone is mostly timer and cache
    noise on a shared machine."""
    train_step(module, x, grad)  # warm-up
    return max(1, round(min_seconds / max(seconds(partial(train_step, module, x, grad)), 1e-6)))


def compare(name: str, shape: tuple[int, int, int, int], rounds: int, min_seconds: float) -> str:
    pair = PAIRS[name]
    ours, theirs = pair.build(shape[1])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    with torch.no_grad():
        deviation = max_relative_diff(ours(x[:2]), theirs(x[:2]))
    ours.train(), theirs.train()
    x.requires_grad_(True)
    grad = torch.randn(shape, generator=generator)
    ours_ms, timm_ms, ratio = time_pair(ours, theirs, x, grad, rounds, steps_per_sample(theirs, x, grad, min_seconds))
    label = "x".join(str(v) for v in shape)
    return (f"{name:<9} {label:>14} {ours_ms:>9.1f} {timm_ms:>9.1f} {ratio!s:>24} {goal_mark(ratio, GOAL):>8} "
            f"{deviation:>10.1e}")


def time_pair(ours: nn.Module, other: nn.Module, x: torch.Tensor, grad: torch.Tensor, rounds: int,
              repeat: int) -> tuple[float, float, Ratio]:
    """Training steps of ``ours`` and ``other`` in alternating rounds: both medians in ms per step, and the paired
    ratio ours ÷ other."""
    samples = alternate({"ours": partial(train_step, ours, x, grad, repeat),
                         "other": partial(train_step, other, x, grad, repeat)}, rounds)
    samples = {key: [t / repeat for t in values] for key, values in samples.items()}
    return (statistics.median(samples["ours"]) * 1e3, statistics.median(samples["other"]) * 1e3,
            paired_ratio(samples["ours"], samples["other"]))


def build_fitting(name: str, shape: tuple[int, int, int, int]) -> tuple[nn.Module, dict[str, object]]:
    """Block ``name`` with ``init="paper"`` for ``shape``, with the options its misfit proposes where the defaults do
    not fit; and those options."""
    info = get_block(name)
    misfit = info.misfit(shape[1], shape[2:])
    options = dict(misfit.fix) if misfit is not None else {}
    return create_block(info, shape[1], init="paper", **options), options


def against_se(name: str, shape: tuple[int, int, int, int], rounds: int, min_seconds: float) -> str:
    """Forward + backward of a block timm does not have, alternating with our SE at the same shape."""
    ours, options = build_fitting(name, shape)
    se = create_block("se", shape[1], init="paper")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, requires_grad=True)
    grad = torch.randn(shape, generator=generator)
    ours.train(), se.train()
    ours_ms, se_ms, ratio = time_pair(ours, se, x, grad, rounds, steps_per_sample(ours, x, grad, min_seconds))
    label = "x".join(str(v) for v in shape)
    shown = ", ".join(f"{key}={value}" for key, value in options.items()) or "defaults"
    return f"{name:<9} {label:>14} {ours_ms:>9.1f} {se_ms:>9.1f} {ratio!s:>24} {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", nargs="*", default=BLOCKS, choices=sorted(PAIRS))
    parser.add_argument("--new-blocks", nargs="*", default=NEW_BLOCKS, choices=NEW_BLOCKS,
                        help="blocks without a timm counterpart, timed against our SE")
    parser.add_argument("--shapes", nargs="+", type=parse_shape, default=None, help="NxCxHxW")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--min-sample", type=float, default=0.25, help="seconds of steps per sample (at least 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall time")
    parser.add_argument("--malloc", choices=["steady", "system"], default="steady",
                        help="steady: re-run with malloc keeping freed memory (glibc); system: as configured")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test (no re-run)")
    args = parser.parse_args()
    use_steady_malloc(args.malloc == "steady" and not args.quick)
    shapes = args.shapes or [parse_shape(s) for s in (QUICK_SHAPES if args.quick else SHAPES)]
    rounds = 2 if args.quick else args.rounds
    configure_threads(args.threads or None)
    set_clock(args.clock)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)

    print(machine_line())
    print(allocator_line())
    print(f"forward + backward (train mode), {rounds} rounds alternating, medians in ms")
    if args.blocks:
        print("ratio = median of per-round ours/timm [p25, p75]; rel diff = max |ours - timm| / max |timm| (eval, same "
              "weights); goal mark 'noise': median above the goal, 25th percentile not")
    header = (f"{'block':<9} {'shape':>14} {'ours ms':>9} {'timm ms':>9} {'ours/timm':>24} {'goal<=1':>8} "
              f"{'rel diff':>10}")
    if args.blocks:
        print(header)
        print("-" * len(header))
    for shape in shapes:
        for name in args.blocks:
            print(compare(name, shape, rounds, 0.0 if args.quick else args.min_sample), flush=True)
    if args.blocks:
        print("aligned options: " + "; ".join(f"{name}: {PAIRS[name].note}" for name in args.blocks))
    if not args.new_blocks:
        return
    print()
    print("blocks timm does not have, against our SE at the same shape (init=paper); ratio = median of per-round "
          "ours/se [p25, p75]")
    header = f"{'block':<9} {'shape':>14} {'ours ms':>9} {'se ms':>9} {'ours/se':>24} options"
    print(header)
    print("-" * len(header))
    for shape in shapes:
        for name in args.new_blocks:
            print(against_se(name, shape, rounds, 0.0 if args.quick else args.min_sample), flush=True)


if __name__ == "__main__":
    main()
