"""``attn-surgeon ablate --executor ray`` on 2 cores against the local executor: 4 single-thread trials; goal: at
least 1.7x the throughput.

The plan is the digits CNN of ``examples/digits`` (``_ablate_plan.py``): the baseline and SE, two seeds, each trial
trained by the example's trainer for ``--epochs`` epochs with one torch thread (``--cpus-per-trial 1``). Three
sides run the same plan, each into a new directory:

- ``local``: the default executor, one trial at a time, each in its own process;
- ``ray``: ``--executor ray --ray-cpus 2``, a local Ray started for the run and stopped after it, as a user
  without a cluster runs it (Ray's start-up is part of its time);
- ``ray cluster``: ``--executor ray --ray-address ADDRESS`` on a 2-CPU Ray this script starts once, before the
  rounds (and stops at the end), as on an existing cluster.

Throughput ratio = local wall time ÷ ray wall time for the same trials (``_timing.paired_ratio``: median over rounds,
25th-75th percentile); each round rotates which side goes first. Run it on a machine with 2 free cores.

    python benchmarks/ablate_ray.py                 # 4 trials of 4 epochs, 3 rounds
    python benchmarks/ablate_ray.py --quick         # 4 trials of 1 epoch, 1 round: a smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
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


def _start_cluster(epochs: int) -> str:
    """A 2-CPU Ray owned by this process (its workers see the plan's environment); its address."""
    import ray

    os.environ.update(environment(epochs))  # the workers inherit it: the trainer must be importable there
    context = ray.init(num_cpus=CPUS, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    return context.address_info["gcs_address"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each trial (the digits example's default)")
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
    address = None if args.no_cluster else _start_cluster(args.epochs)
    times: dict[str, list[float]] = {"local": [], "ray": [], **({} if address is None else {"ray cluster": []})}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for index in range(args.rounds):
                sides = _sides(Path(scratch) / f"round-{index}", args.epochs, address)
                order = list(sides)[index % len(sides):] + list(sides)[:index % len(sides)]
                for name in order:
                    times[name].append(sides[name]())
    finally:
        if address is not None:
            import ray

            ray.shutdown()
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
