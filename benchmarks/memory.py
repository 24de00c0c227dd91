"""Peak memory (RSS) while patching a model, over the memory of the model merely built.

Each measurement runs in a fresh Python process: it imports torch, timm and attn-surgeon, builds the model with
``timm.create_model(name)``, reads its resident set size (``VmRSS``), resets the kernel's peak counter (writing 5
to ``/proc/self/clear_refs``), runs the work and reads the peak (``VmHWM``). The work is either the surgery
(``run_surgery`` inserting a block after every residual unit: sites, rewrite, verify) or, as a control, one
eval-mode forward pass on the same probe batch, which surgery cannot do without. ``extra/weights`` is the peak's
increase over the model's parameter and buffer bytes: a full copy of the weights would add 1.0.

Where the peak counter cannot be reset, ``ru_maxrss`` (the peak over the whole process, model construction
included) is used instead, and the output says so.

    python benchmarks/memory.py
    python benchmarks/memory.py --models resnet50 --block cbam
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _timing import goal_mark, machine_line

MODELS = ["resnet152", "convnext_base"]
QUICK_MODELS = ["resnet18"]
GOAL = 1.3


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024


def child(name: str, block: str, size: int, work: str, threads: int) -> dict[str, object]:
    """Measure in this process (run by the parent in a fresh interpreter): kiB built, peak, after."""
    import gc
    import resource

    import timm
    import torch

    import surgeon
    from surgeon.match import Rule, parse_site_spec

    torch.set_num_threads(threads)
    model = timm.create_model(name)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    gc.collect()
    built = _status_kib("VmRSS")
    reset = _reset_peak()
    if work == "surgery":
        rule = Rule(parse_site_spec("bottleneck"), block, "insert", None, {}, "identity")
        surgeon.run_surgery(model, [rule], input_shape=(1, 3, size, size))
    else:
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, 3, size, size))
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"built": built, "peak": peak, "after": _status_kib("VmRSS"), "weights": weight_bytes // 1024,
            "reset": reset}


def measure(name: str, block: str, size: int, work: str, threads: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", name, "--block", block, "--size", str(size), "--work", work,
               "--threads", str(threads)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="timm model names")
    parser.add_argument("--block", default="eca")
    parser.add_argument("--size", type=int, default=224, help="probe resolution")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-control", action="store_true", help="skip the forward-only control measurement")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    parser.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--work", choices=["surgery", "forward"], default="surgery", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.block, args.size, args.work, args.threads)))
        return
    if args.quick:
        args.models, args.size, args.no_control = args.models or QUICK_MODELS, 64, True
    print(machine_line(timing=False) + f", {args.threads} thread(s) in each measurement")
    print(f"insert {args.block} after every residual unit, probe 1x3x{args.size}x{args.size}; one fresh process per "
          "measurement; MiB")
    header = (f"{'model':<14} {'weights':>8} {'built':>8} {'peak':>8} {'peak/built':>11} {'goal<=' + str(GOAL):>9} "
              f"{'extra/weights':>14} {'fwd peak/built':>15} {'after':>8}")
    print(header)
    print("-" * len(header))
    for name in args.models or MODELS:
        surgery = measure(name, args.block, args.size, "surgery", args.threads)
        control = None if args.no_control else measure(name, args.block, args.size, "forward", args.threads)
        control_ratio = f"{int(control['peak']) / int(control['built']):>15.3f}" if control else f"{'n/a':>15}"
        built, peak, weights = (int(surgery[key]) for key in ("built", "peak", "weights"))
        ratio = peak / built
        note = "" if surgery["reset"] else "  (peak counter not resettable: ru_maxrss, construction included)"
        print(f"{name:<14} {weights / 1024:>8.0f} {built / 1024:>8.0f} {peak / 1024:>8.0f} {ratio:>11.3f} "
              f"{goal_mark(ratio, GOAL):>9} {(peak - built) / weights:>14.3f} "
              f"{control_ratio} {int(surgery['after']) / 1024:>8.0f}{note}",
              flush=True)


if __name__ == "__main__":
    main()
