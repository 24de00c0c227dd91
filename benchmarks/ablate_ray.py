"""``attn-surgeon ablate --executor ray`` on 2 cores against the local executor: 4 single-thread trials; goal: at
least 1.7x the throughput.

The plan is the digits CNN of ``examples/digits`` (``_ablate_plan.py``): the baseline and SE, two seeds, each trial
trained by the example's trainer for ``--epochs`` epochs with one torch thread (``--cpus-per-trial 1``). Three
sides run the same plan, each into a new directory:

- ``local``: the default executor, one trial at a time, each in its own process;
- ``ray``: ``--executor ray --ray-cpus 2``, a local Ray started for the run and stopped after it, as a user
  without a cluster runs it (Ray's start-up and shutdown are part of its time);
- ``ray cluster``: ``--executor ray --ray-address ADDRESS`` on a 2-CPU Ray this script starts once, before the
  rounds (and stops at the end), as on an existing cluster.

Throughput ratio = local wall time ÷ ray wall time for the same trials (``_timing.paired_ratio``: median over rounds,
25th-75th percentile); each round rotates which side goes first. Every side pays the same fixed costs once per
command (the driver's imports, planning the arms and their costs, the results), and ``ray`` also pays a local
Ray's start and stop, which this script measures on its own Ray and prints. Those are seconds, not throughput: the
default trials (64 epochs, about 45 s each) are long enough for the trials to weigh more than them, as any real
training does; with ``--epochs 4`` (the digits example's default, trials of about 5 s) the ratio mostly measures
the fixed costs. Run it on a machine with 2 free cores.

    python benchmarks/ablate_ray.py                 # 4 trials of 64 epochs, 3 rounds (about 25 minutes)
    python benchmarks/ablate_ray.py --epochs 4      # trials of about 5 s: the fixed costs' share
    python benchmarks/ablate_ray.py --quick         # 4 trials of 1 epoch, 1 round: a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _ablate_plan import environment, run_ablate, trials
from _timing import Ratio, machine_line, paired_ratio, set_clock

GOAL = 1.7
CPUS = 2
BLOCKS = ["se"]
SEEDS = 2


def at_least(value: Ratio, goal: float) -> str:
    """``ok`` when the median ratio reaches ``goal``; ``noise`` when only its 75th percentile does; else ``MISSED``."""
    if value.value >= goal:
        return "ok"
    return "noise" if value.high >= goal else "MISSED"


def _start_cluster(epochs: int) -> tuple[str, float]:
    """A 2-CPU Ray owned by this process (its workers see the plan's environment): its address, and the seconds
    ``ray.init`` took (as ``ablate`` starts a local Ray)."""
    import ray

    os.environ.update(environment(epochs))  # the workers inherit it: the trainer must be importable there
    start = time.perf_counter()
    context = ray.init(num_cpus=CPUS, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    return context.address_info["gcs_address"], time.perf_counter() - start


def _trial_seconds(root: Path) -> list[float]:
    """Each trial's own time (building its model and training it) in the experiments under ``root``."""
    return [trial["seconds"] for path in root.glob("round-*/*/results.json")
            for arm in json.loads(path.read_text(encoding="utf-8"))["arms"] for trial in arm["trials"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=64, help="epochs of each trial (about 0.7 s each on a 2-core Xeon)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cluster", action="store_true", help="skip the side on a Ray started beforehand")
    parser.add_argument("--quick", action="store_true", help="1 epoch per trial, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.rounds = 1, 1
    if importlib.util.find_spec("ray") is None:
        raise SystemExit('this benchmark needs Ray: pip install "attn-surgeon[ray]"')
    set_clock("wall")
    print(machine_line(timing=False))
    print(f"plan: digits CNN, baseline + {', '.join(BLOCKS)}, {SEEDS} seeds: {trials(BLOCKS, SEEDS)} trials of "
          f"{args.epochs} epoch(s), 1 thread each; ray on {CPUS} CPUs; {args.rounds} round(s), wall clock")
    address, started = (None, None) if args.no_cluster else _start_cluster(args.epochs)
    times: dict[str, list[float]] = {"local": [], "ray": [], **({} if address is None else {"ray cluster": []})}
    stopped = None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for index in range(args.rounds):
                sides = _sides(Path(scratch) / f"round-{index}", args.epochs, address)
                order = list(sides)[index % len(sides):] + list(sides)[:index % len(sides)]
                for name in order:
                    times[name].append(sides[name]())
            trial_seconds = _trial_seconds(Path(scratch))
    finally:
        if address is not None:
            import ray

            start = time.perf_counter()
            ray.shutdown()
            stopped = time.perf_counter() - start
    print(f"trials: {statistics.median(trial_seconds):.1f} s each (median of {len(trial_seconds)}: building the "
          "model and training it, in the trial's process)")
    if started is not None and stopped is not None:
        print(f"a local 2-CPU Ray (this script's): {started:.1f} s to start, {stopped:.1f} s to stop")
    print(f"{'':<14}{'wall s':>8}{'local s':>9}  throughput ratio [p25, p75]  goal")
    for name, seconds in times.items():
        if name == "local":
            continue
        ratio = paired_ratio(times["local"], seconds)
        print(f"{name:<14}{ratio.denominator_s:>8.1f}{ratio.numerator_s:>9.1f}  {ratio!s:<27}  ≥ {GOAL:.1f}  "
              f"{at_least(ratio, GOAL)}")


def _sides(root: Path, epochs: int, address: str | None) -> dict[str, Callable[[], float]]:
    common = ("--cpus-per-trial", "1")

    def side(name: str, *extra: str) -> Callable[[], float]:
        return lambda: run_ablate(BLOCKS, SEEDS, root / name.replace(" ", "-"), epochs, *common, *extra)

    sides = {"local": side("local"), "ray": side("ray", "--executor", "ray", "--ray-cpus", str(CPUS))}
    if address is not None:
        sides["ray cluster"] = side("ray cluster", "--executor", "ray", "--ray-address", address)
    return sides


if __name__ == "__main__":
    main()
