"""How long surgery takes, net of its two verification forward passes, next to timm's construction time.

Each round builds the model with ``timm.create_model(name)`` (random initialisation, nothing downloaded) and times
it, times one eval-mode ``no_grad`` forward pass of that fresh model on the probe batch (``fwd``), times
``surgeon.run_surgery`` inserting a block after every residual unit of it (what ``attn-surgeon insert MODEL --block
eca --after bottleneck`` runs: sites, match, rewrite, verify; construction excluded), then times one forward pass of
the patched model the same way (``patched fwd``).

Surgery runs the model twice on the probe batch, on purpose: the original, to measure the sites and record the
reference outputs, and the patched model, to verify it. Those two passes cost what the user's model (and its new
blocks) cost at the user's input size, which no work on the surgery itself can change, so the reported figure is
surgery time *net* of the two passes as timed in the same round, over build time: ``net/build = (surgery - fwd -
patched fwd) / build``, paired within each round (median over rounds, 25th-75th percentile beside it), with its goal
mark. The gross ratio ``surgery/build`` is printed beside it. Both passes subtracted run without the probe's hooks,
each on an already warm model, so they are, if anything, cheaper than their counterparts inside surgery: the net
figure errs high.

Every timed step starts after a full ``gc.collect()`` outside its timing (``--no-collect`` turns this off), so that
no step pays for collecting what an earlier step or round left behind (see ``_timed``).

Each probe size gets its own table (default 224² and 64²: at 64² the forwards are cheap and nearly all of the
surgery is the per-site work). Under each, lines are fitted through the median net and gross surgery times against
the number of sites over all models: the slope is the cost of one more site.

    python benchmarks/surgery_time.py
    python benchmarks/surgery_time.py --models resnet50 resnet152 --rounds 7 --probe 224
    python benchmarks/surgery_time.py --profile resnet152 --probe 64     # where the time goes (cProfile)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import warnings
from collections.abc import Callable
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
    patched_forward: list[float]
    surgery: list[float]

    @property
    def net(self) -> list[float]:
        """Per round: surgery time minus the two forward passes it runs (as timed in the same round)."""
        return [s - f - p for s, f, p in zip(self.surgery, self.forward, self.patched_forward)]

    @property
    def forwards(self) -> list[float]:
        """Per round: the original model's forward plus the patched model's."""
        return [f + p for f, p in zip(self.forward, self.patched_forward)]


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


def _timed(fn: Callable[[], object], collect: bool) -> float:
    """Seconds of ``fn()``, after a full garbage collection outside the timing if ``collect``.

    Each step then pays for the collections its own allocations trigger, not for what the steps before it left to
    the collector: a surgery leaves its discarded fx graphs (reference cycles) behind, and the full collection they
    eventually trigger walks every object timm's import created (about 200 ms for resnetrs350's rounds on one core),
    in whichever step happens to cross the collector's threshold, most often the next round's surgery.
    """
    if collect:
        gc.collect()
    return seconds(fn)


def measure(name: str, block: str, rounds: int, input_shape: tuple[int, ...], collect: bool = True) -> Row:
    """Alternate build, one forward, surgery of the model just built and one forward of the patched model (each
    timed), ``rounds`` times after a warm-up round."""
    row = Row(name, 0, [], [], [], [])
    probe = torch.randn(input_shape)
    for r in range(rounds + 1):  # round 0 warms up imports, tracer caches and oneDNN primitives
        models: list[torch.nn.Module] = []
        built = _timed(partial(_build, models, name), collect)
        ran = _timed(partial(forward, models[0], probe), collect)
        counts: list[int] = []
        took = _timed(partial(_patch, counts, models[0], block, input_shape), collect)
        ran_patched = _timed(partial(forward, models[0], probe), collect)
        if r:
            row.build.append(built)
            row.forward.append(ran)
            row.patched_forward.append(ran_patched)
            row.surgery.append(took)
        row.sites = counts[0]
    return row


def profile(name: str, block: str, input_shape: tuple[int, ...], lines: int) -> None:
    model = timm.create_model(name)
    surgery(timm.create_model("resnet18"), block, input_shape)  # one-off costs out of the picture
    gc.collect()
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
    parser.add_argument("--probe", type=int, nargs="+", default=None, metavar="SIZE",
                        help="probe resolutions, one table each (default: 224 64; --quick: 64 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall time")
    parser.add_argument("--no-collect", dest="collect", action="store_false",
                        help="no full garbage collection before each timed step (a step may then pay for the "
                             "collection of an earlier round's model)")
    parser.add_argument("--profile", metavar="MODEL", help="print a cProfile of one surgery of MODEL and exit")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.models, args.rounds = args.models or QUICK_MODELS, 1
    sizes = args.probe or ([64, 32] if args.quick else [224, 64])
    configure_threads(args.threads or None)
    set_clock(args.clock)
    warnings.filterwarnings("ignore")
    print(machine_line())
    if args.profile:
        for size in sizes:
            print(f"probe 1x3x{size}x{size}:")
            profile(args.profile, args.block, (1, 3, size, size), 40)
        return

    print(f"surgery = run_surgery(insert {args.block} after every residual unit); fwd / patched fwd = one eval-mode "
          f"no_grad forward of the fresh / patched model; build = timm.create_model(name); {args.rounds} rounds, "
          f"medians in ms; {'gc.collect() before each step; ' if args.collect else ''}net = surgery - fwd - patched "
          f"fwd; ratios = median of per-round ratios [p25, p75]; goal mark 'noise': median above the goal, 25th "
          f"percentile not")
    for size in sizes:
        report(args.models or MODELS, args.block, args.rounds, (1, 3, size, size), args.collect)


def report(models: list[str], block: str, rounds: int, input_shape: tuple[int, ...], collect: bool) -> None:
    """Measure every model at one probe shape and print its table and fitted lines."""
    print(f"\nprobe {'x'.join(map(str, input_shape))}")
    header = (f"{'model':<14} {'sites':>5} {'build ms':>9} {'fwd ms':>8} {'patched fwd':>11} {'surgery ms':>11} "
              f"{'net ms':>8} {'net ms/site':>11} {'net/build':>24} {'goal<=' + str(GOAL):>9} {'surgery/build':>24} "
              f"{'fwds/build':>11}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in models:
        row = measure(name, block, rounds, input_shape, collect)
        rows.append(row)
        net = paired_ratio(row.net, row.build)
        gross = paired_ratio(row.surgery, row.build)
        forwards = paired_ratio(row.forwards, row.build)
        forward_ms, patched_ms = (statistics.median(t) * 1e3 for t in (row.forward, row.patched_forward))
        print(f"{name:<14} {row.sites:>5} {gross.denominator_s * 1e3:>9.1f} {forward_ms:>8.1f} {patched_ms:>11.1f} "
              f"{gross.numerator_s * 1e3:>11.1f} {net.numerator_s * 1e3:>8.1f} "
              f"{net.numerator_s * 1e3 / max(row.sites, 1):>11.2f} {net!s:>24} {goal_mark(net, GOAL):>9} "
              f"{gross!s:>24} {forwards.value:>11.3f}", flush=True)
    sites = [row.sites for row in rows]
    # the two forwards scale with the model's FLOPs and the probe's pixels, not with its sites
    slope, intercept, r2 = linear_fit(sites, [statistics.median(row.net) * 1e3 for row in rows])
    print(f"fit net of two forwards: ms = {intercept:.1f} + {slope:.2f} ms/site x sites, R^2 = {r2:.3f} "
          f"over {len(rows)} models")
    slope, intercept, r2 = linear_fit(sites, [statistics.median(row.surgery) * 1e3 for row in rows])
    print(f"fit gross: surgery ms = {intercept:.1f} + {slope:.2f} ms/site x sites, R^2 = {r2:.3f}")


if __name__ == "__main__":
    main()
