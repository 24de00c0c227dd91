"""A benchmark of the measurement itself: the same ``compare`` twice must agree within its own stated precision.

Runs ``surgeon.compare`` on ResNet-18 with SE, ECA and CBAM (all add-only: each only inserts blocks) twice, one run
after the other in this process, and checks what the latency figures promise:

- **agreement**: for every candidate and timing, the two runs' 95% intervals of the ratio overlap;
- **honesty**: no add-only candidate is reported faster than its reference (whole interval below 1) without the
  ``unstable`` flag.

It prints the machine and its load average, each run's ratios with their intervals and flags, and one line per
check with ``ok`` or ``MISSED``; it exits 1 when a check is missed. It asserts nothing about speed. Run it on quiet
cores for figures worth keeping (the checks themselves must hold on a busy machine too: that is the point of the
flag).

    python benchmarks/measurement.py                  # 224x224, batch 1, the default --max-time of 10 s
    python benchmarks/measurement.py --max-time 30    # more time per candidate: tighter intervals
    python benchmarks/measurement.py --quick          # 64x64, 2 s per candidate, exports off: a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torchvision
from _timing import machine_line

from surgeon import CompareOptions, LatencyOptions, compare

BLOCKS = ("se", "eca", "cbam")


def _run(model: torch.nn.Module, options: CompareOptions) -> dict[tuple[str, str, int], object]:
    result = compare(model, options)
    timings = {}
    for row in result.rows:
        for timing in row.latency:
            timings[(row.name, timing.mode, timing.batch_size)] = (row, timing)
    print(f"  load average {result.environment['load_average']}; notes: {' | '.join(result.notes) or 'none'}")
    for (name, mode, batch), (row, timing) in timings.items():
        flag = f"  unstable: {timing.unstable}" if timing.unstable else ""
        print(f"  {name:6s} {mode:5s} b{batch}  ×{timing.ratio:.3f} [{timing.ratio_low:.3f}, {timing.ratio_high:.3f}]"
              f"  {timing.rounds} rounds, stopped: {timing.stopped}, add-only: {row.add_only}{flag}")
    return timings


def _overlap(first: object, second: object) -> bool:
    a, b = first[1], second[1]
    if not all(math.isfinite(v) for v in (a.ratio_low, a.ratio_high, b.ratio_low, b.ratio_high)):
        return False
    return a.ratio_low <= b.ratio_high and b.ratio_low <= a.ratio_high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=10.0, help="seconds of timing per candidate")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [default: torch's current]")
    parser.add_argument("--quick", action="store_true", help="64x64 input, 2 s per candidate, exports off")
    args = parser.parse_args()
    size = 64 if args.quick else 224
    latency = LatencyOptions(runs=5, warmup=1, threads=args.threads, max_time=2.0 if args.quick else args.max_time)
    options = CompareOptions(blocks=BLOCKS, input_shape=(1, 3, size, size), latency=latency, exports="off",
                             name="torchvision:resnet18")
    print(machine_line(timing=False))
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    runs = []
    for index in (1, 2):
        print(f"run {index}: compare torchvision:resnet18 --blocks {','.join(BLOCKS)} --input-shape 1,3,{size},{size} "
              f"--max-time {latency.max_time:g}")
        runs.append(_run(model, options))
    missed = 0
    for key in sorted(runs[0].keys() & runs[1].keys()):
        agree = _overlap(runs[0][key], runs[1][key])
        missed += not agree
        print(f"{key[0]} {key[1]} b{key[2]}: the two runs' intervals overlap: {'ok' if agree else 'MISSED'}")
    for index, timings in enumerate(runs, start=1):
        for (name, mode, batch), (row, timing) in timings.items():
            hidden = row.add_only and timing.ratio_high < 1.0 and not timing.unstable
            missed += hidden
            print(f"run {index} {name} {mode} b{batch}: add-only and faster only with the unstable flag: "
                  f"{'MISSED' if hidden else 'ok'}")
    print(f"{'all checks hold' if not missed else f'{missed} check(s) MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
