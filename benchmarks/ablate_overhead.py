"""The runner's overhead: ``attn-surgeon ablate``'s wall time for a plan ÷ the same trainings run by hand; goal ≤ 1.05.

The plan is the digits CNN of ``examples/digits`` (``_ablate_plan.py``): the baseline and each block of
``--blocks``, ``--seeds`` seeds, each trial trained by the example's trainer for ``--epochs`` epochs on one thread.
"By hand" is what a user does without ``ablate``: their training script run once per variant and seed, each in its
own process (``python benchmarks/_ablate_plan.py ARM SEED DIR``: seed, build, insert, train, save the weights and
the metrics). ``ablate`` runs the same trials with the local executor (one at a time, each in its own process) and
adds what the runner does: the plan, counting each arm's parameters and FLOPs, the store, the trained models and
curves, the statistics and ``results.json``.

Each round times one ``ablate`` run (into a new directory) and one by-hand run, alternating which goes first; the
ratio is the median over rounds of ablate ÷ by hand in the same round, with its 25th-75th percentile, as
``_timing.paired_ratio`` computes it. Wall-clock time, since both sides are whole processes; on shared cores run it
when the load average is below the number of cores.

The runner's costs are mostly once per command (importing torch in the driver, counting each arm's FLOPs, the
statistics), a few seconds in all; the default trials (32 epochs, about 28 s each) are long enough for the
trainings to weigh more than them, as real trainings do. With ``--epochs 4`` (the digits example's default, trials
of about 8 s by hand) the ratio mostly measures those fixed seconds.

    python benchmarks/ablate_overhead.py                    # se, eca; 2 seeds; 32 epochs; 3 rounds (about 18 min)
    python benchmarks/ablate_overhead.py --epochs 4         # short trials: the fixed costs' share
    python benchmarks/ablate_overhead.py --quick            # se; 1 seed; 1 epoch; 1 round: a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _ablate_plan import run_ablate, run_by_hand, trials
from _timing import goal_mark, machine_line, paired_ratio, set_clock

GOAL = 1.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="se,eca", help="the candidate arms besides the baseline")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=32, help="epochs of each trial (about 0.7 s each on a 2-core Xeon)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="se, 1 seed, 1 epoch, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.seeds, args.epochs, args.rounds = "se", 1, 1, 1
    blocks = [name for name in args.blocks.split(",") if name]
    set_clock("wall")
    print(machine_line(timing=False))
    print(f"plan: digits CNN, baseline + {', '.join(blocks) or 'nothing'}, {args.seeds} seed(s): "
          f"{trials(blocks, args.seeds)} trials of {args.epochs} epoch(s), 1 thread each; {args.rounds} round(s), "
          "wall clock")
    ablate_s: list[float] = []
    by_hand_s: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            round_dir = Path(scratch) / f"round-{index}"
            for side in ("ablate", "by hand")[index % 2:] + ("ablate", "by hand")[:index % 2]:
                if side == "ablate":
                    ablate_s.append(run_ablate(blocks, args.seeds, round_dir / "ablate", args.epochs))
                else:
                    by_hand_s.append(run_by_hand(blocks, args.seeds, round_dir / "by-hand", args.epochs))
    ratio = paired_ratio(ablate_s, by_hand_s)
    print(f"{'':<24}{'ablate s':>10}{'by hand s':>11}  ratio [p25, p75]         goal")
    print(f"{'ablate --executor local':<24}{ratio.numerator_s:>10.1f}{ratio.denominator_s:>11.1f}  {ratio}  "
          f"≤ {GOAL:.2f}  {goal_mark(ratio, GOAL)}")


if __name__ == "__main__":
    main()
