"""How long ``attn-surgeon compare`` takes with its default settings: 8 blocks on ResNet-50 at batch 1, goal 180 s.

Runs the command as a user would, in a fresh process (the import of torch, building the model, every candidate's
surgery, counts, alternating eval and training-step timing, peak memory, and the export checks of each distinct
inserted block), and prints its wall-clock time against the goal, with the machine and its load average before
and after (the cores may be shared with other jobs: a load above the core count stretches every figure), and the
CPU time the command used. On shared cores both grow: torch's intra-op threads spin while one of them waits for a
core, so the wall time only speaks for the goal when the load average stays below the number of cores.

    python benchmarks/compare_time.py
    python benchmarks/compare_time.py --blocks se,eca --model torchvision:resnet18 -- --runs 3
    python benchmarks/compare_time.py --quick       # resnet18 at 64x64, two blocks, one round: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import goal_mark, machine_line

GOAL_S = 180.0
BLOCKS = "se,eca,cbam,gc,ca,simam,triplet,bam"
"""The eight blocks timed: the channel and spatial gates users reach for first, all in the registry."""
ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet50")
    parser.add_argument("--blocks", default=BLOCKS)
    parser.add_argument("--quick", action="store_true", help="resnet18 at 64x64, se and eca, 1 round, exports off")
    parser.add_argument("extra", nargs="*", help="further options for attn-surgeon compare (after --)")
    args = parser.parse_args()
    options = list(args.extra)
    if args.quick:
        args.model, args.blocks = "torchvision:resnet18", "se,eca"
        options += ["--input-shape", "1,3,64,64", "--runs", "1", "--warmup", "0", "--max-time", "0", "--exports", "off"]
    print(machine_line(timing=False))
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "compare.json"
        command = [sys.executable, "-c", "from surgeon.cli import main; main()", "compare", args.model, "--blocks",
                   args.blocks, *options, "-o", str(output)]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                os.environ.get("PYTHONPATH")]))}
        load_before = _load()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        document = json.loads(output.read_text())
    measured = [row["name"] for row in document["rows"] if row["status"] == "ok"]
    settings = document["settings"]
    print(f"attn-surgeon compare {args.model} --blocks {args.blocks} {' '.join(options)}".rstrip())
    print(f"  {len(measured)} of {len(document['rows'])} candidates measured; input {document['input_shape']}, "
          f"{settings['warmup']} + {settings['runs']} rounds, {settings['threads']} thread(s), exports "
          f"{settings['exports']}")
    print(f"  load average before: {load_before}; after: {_load()}")
    print(f"  CPU time of the command {cpu:.1f} s (user + system, all its threads; on shared cores it includes "
          f"threads spinning while their partner waits for a core); ÷ {os.cpu_count()} cores: "
          f"{cpu / (os.cpu_count() or 1):.1f} s")
    print(f"  wall time {elapsed:.1f} s (goal < {GOAL_S:.0f} s): {goal_mark(elapsed, GOAL_S)}")


if __name__ == "__main__":
    main()
