"""Latency of a ResNet-50 patched by attn-surgeon against timm's natively built attention ResNet-50.

For each block, timm builds the attention network natively (``timm.create_model('resnet50',
block_args=dict(attn_layer=...))``; ``skresnet50`` / ``skresnext50_32x4d`` for SK) and its weights are randomised;
ours is timm's plain ``resnet50`` given the same weights and patched by ``surgeon.insert(..., init="paper")`` (or
``surgeon.swap`` for SK), and timm's block weights are copied into our blocks. Both must give the same output
before anything is timed. The plain ``resnet50`` with the same weights is timed alongside, so each row also shows
what the block costs: our latency over the plain network's, next to our FLOPs over its FLOPs (``count_ops``).

Forward passes (eval, no grad) alternate between ours, timm's and the plain network, round by round, in one process;
ratios are medians of per-round ratios with their 25th-75th percentiles. ``torch.compile`` runs compile each model
once per batch size (minutes on two cores; ``--no-compile`` skips them).

    python benchmarks/runtime_overhead.py
    python benchmarks/runtime_overhead.py --blocks se eca --batches 1 --no-compile --rounds 11
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from _timing import alternate, configure_threads, goal_mark, machine_line, paired_ratio, set_clock
from _timm_pairs import PAIRS, max_relative_diff, randomize_
from torch import nn

import surgeon
from surgeon.profile import count_ops

GOAL = 1.02
# timm's SK bottleneck wraps conv+norm(+act) in ConvNormAct; ours keeps torchvision-style names
_SK_RENAMES = ((".conv1.conv.", ".conv1."), (".conv1.bn.", ".bn1."), (".conv3.conv.", ".conv3."),
               (".conv3.bn.", ".bn3."))


@dataclass(frozen=True)
class ModelPair:
    """How to build timm's native network and ours for one block.

    Attributes:
        pair: the block pair in ``_timm_pairs.PAIRS``.
        base: timm name of the plain network we patch.
        native: timm name of the natively built attention network.
        native_kwargs: options of ``timm.create_model`` for the native network.
        our_args: options of our block beyond the pair's.
    """

    pair: str
    base: str = "resnet50"
    native: str = "resnet50"
    native_kwargs: dict[str, Any] = field(default_factory=dict)
    our_args: dict[str, Any] = field(default_factory=dict)

    def native_options(self) -> dict[str, Any]:
        if PAIRS[self.pair].swap:
            return self.native_kwargs
        return {"block_args": {"attn_layer": PAIRS[self.pair].timm_block}, **self.native_kwargs}


MODEL_PAIRS = {
    "se": ModelPair("se"),
    "eca": ModelPair("eca"),
    "cbam": ModelPair("cbam"),
    "gc": ModelPair("gc"),
    "gc_mul": ModelPair("gc_mul"),
    # skresnet50 splits the input between the paths by default (not the paper's SK); aligned to ours here
    "sk": ModelPair("sk", native="skresnet50", our_args={"groups": 1},
                    native_kwargs={"block_args": {"sk_kwargs": {"split_input": False, "rd_channels": 32}}}),
    # SKNet-50 as in the paper: ResNeXt-50 32x4d with SK convs; timm's defaults and ours agree
    "sk_resnext": ModelPair("sk", base="resnext50_32x4d", native="skresnext50_32x4d"),
}


def _base_state(native: nn.Module, swap: bool) -> dict[str, torch.Tensor]:
    """The native network's weights under the plain network's keys, its attention blocks left out."""
    state = {}
    for key, value in native.state_dict().items():
        if swap:
            if ".conv2." in key:  # timm's SK conv, copied block by block
                continue
            for old, new in _SK_RENAMES:
                key = key.replace(old, new)
        elif ".se." in key:
            continue
        state[key] = value
    return state


def build(name: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(ours, timm's, plain)`` in eval mode, sharing every weight they have in common."""
    spec = MODEL_PAIRS[name]
    pair = PAIRS[spec.pair]
    native = randomize_(timm.create_model(spec.native, **spec.native_options())).eval()
    ours = timm.create_model(spec.base)
    missing, unexpected = ours.load_state_dict(_base_state(native, pair.swap), strict=False)
    allowed_missing = (".conv2.", ".bn2.") if pair.swap else ()
    if unexpected or any(not any(part in key for part in allowed_missing) for key in missing):
        raise RuntimeError(f"{name}: {spec.base} and {spec.native} differ beyond the block: {missing} {unexpected}")
    plain = copy.deepcopy(ours).eval()
    args = {**pair.our_args, **spec.our_args}
    if pair.swap:
        surgeon.swap(ours, pair.block, conv="conv3x3", **args)
    else:
        surgeon.insert(ours, pair.block, after="bottleneck", init="paper", **args)
    block_class = surgeon.get_block(pair.block).factory
    copied = 0
    for module_name, block in ours.named_modules():
        if isinstance(block, block_class):
            host = module_name if pair.swap else module_name.rpartition(".")[0]
            pair.copy(block, native.get_submodule(host if pair.swap else f"{host}.se"))
            copied += 1
    if copied == 0:
        raise RuntimeError(f"{name}: no {pair.block} block found in the patched network")
    return ours.eval(), native, plain


def forward(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def _compiled(model: nn.Module, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], Any], float]:
    compiled = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    forward(compiled, x)  # compiles
    return compiled, time.perf_counter() - start


def time_row(models: dict[str, nn.Module], x: torch.Tensor, rounds: int, compile_: bool,
             plain_cache: dict[tuple[int, int], Callable[[torch.Tensor], Any]]) -> tuple[dict[str, list[float]], float]:
    """Alternate ours, timm's and the plain network on ``x``; with ``compile_`` their compiled versions."""
    runners: dict[str, Callable[[torch.Tensor], Any]] = dict(models)
    compile_s = 0.0
    if compile_:
        for key in ("ours", "timm"):
            runners[key], seconds = _compiled(models[key], x)
            compile_s += seconds
        cache_key = (id(models["plain"]), x.shape[0])
        if cache_key not in plain_cache:
            plain_cache[cache_key], seconds = _compiled(models["plain"], x)
            compile_s += seconds
        runners["plain"] = plain_cache[cache_key]
    samples = alternate({key: (lambda run=run: forward(run, x)) for key, run in runners.items()}, rounds)
    return samples, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", nargs="+", default=list(MODEL_PAIRS), choices=list(MODEL_PAIRS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compile-rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--no-eager", action="store_true", help="torch.compile only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="process CPU time or wall time")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.blocks = args.blocks if args.blocks != list(MODEL_PAIRS) else ["se", "eca"]
        args.batches, args.size, args.rounds, args.no_compile = [1], 64, 2, True
    configure_threads(args.threads or None)
    set_clock(args.clock)
    warnings.filterwarnings("ignore")
    torch._dynamo.config.recompile_limit = 64  # many networks share ResNet.forward's code object

    print(machine_line())
    print(f"forward (eval, no grad) at {args.size}x{args.size}; {args.rounds} rounds eager, {args.compile_rounds} "
          "compiled, alternating ours / timm / plain; medians in ms; ratios = median of per-round ratios [p25, p75]; "
          "goal mark 'noise': median above the goal, 25th percentile not")
    header = (f"{'block':<11} {'mode':<8} {'batch':>5} {'ours ms':>9} {'timm ms':>9} {'ours/timm':>24} "
              f"{'goal<=' + str(GOAL):>10} {'ours/plain':>11} {'FLOPs ours/plain':>17} {'rel diff':>9}")
    print(header)
    print("-" * len(header))
    plain_cache: dict[tuple[int, int], Callable[[torch.Tensor], Any]] = {}
    plains: dict[str, nn.Module] = {}
    modes = ([] if args.no_eager else ["eager"]) + ([] if args.no_compile else ["compile"])
    for name in args.blocks:
        ours, theirs, plain = build(name)
        plain = plains.setdefault(MODEL_PAIRS[name].base, plain)
        probe = torch.randn(2, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            deviation = max_relative_diff(ours(probe), theirs(probe))
        one = probe[:1]
        flops = count_ops(ours, one).flops / count_ops(plain, one).flops
        models = {"ours": ours, "timm": theirs, "plain": plain}
        for mode in modes:
            for batch in args.batches:
                x = torch.randn(batch, 3, args.size, args.size)
                rounds = args.rounds if mode == "eager" else args.compile_rounds
                samples, compile_s = time_row(models, x, rounds, mode == "compile", plain_cache)
                versus_timm = paired_ratio(samples["ours"], samples["timm"])
                versus_plain = paired_ratio(samples["ours"], samples["plain"])
                print(f"{name:<11} {mode:<8} {batch:>5} {statistics.median(samples['ours']) * 1e3:>9.1f} "
                      f"{statistics.median(samples['timm']) * 1e3:>9.1f} {versus_timm!s:>24} "
                      f"{goal_mark(versus_timm, GOAL):>10} {versus_plain.value:>11.3f} {flops:>17.3f} "
                      f"{deviation:>9.1e}" + (f"  (compiled in {compile_s:.0f} s)" if compile_s else ""), flush=True)
    print("native networks: " + "; ".join(
        f"{name}: {MODEL_PAIRS[name].native} {MODEL_PAIRS[name].native_options() or ''}".replace("functools.", "")
        for name in args.blocks))


if __name__ == "__main__":
    main()
