"""Insert an attention block into a trained model with the CLI, check nothing changed, then fine-tune it.

Run from the repository root (about half a minute on one CPU core)::

    python -m examples.digits.run                 # ECA; --block se for squeeze-and-excitation

1. evaluate the shipped checkpoint ``digits_resnet.pt`` (written by ``train_base.py``);
2. ``attn-surgeon insert`` ECA into every residual unit of that file (identity init);
3. rebuild the patched model with ``surgeon.load`` and show its test accuracy and logits unchanged;
4. fine-tune it for a few epochs and report the accuracy before and after, beside a control: the base model
   fine-tuned with the same recipe and no block, so that the gain of the block is not confused with the gain
   of more training;
5. save the fine-tuned model with ``surgeon.save`` and check that the file rebuilds to the same model.

Everything goes to ``--output-dir`` (default ``out/digits/``), the figures also to ``summary.json`` there.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import surgeon

from .data import load_split
from .engine import evaluate, seed_everything, train
from .model import INPUT_SIZE, build

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CHECKPOINT = HERE / "digits_resnet.pt"
ARCH = "examples.digits.model:build"


@dataclass
class Result:
    """The figures one run measured (returned by :func:`main`, printed as a table)."""

    name: str
    accuracy: float
    loss: float


def _shown(path: Path) -> str:
    """``path`` relative to the repository root (the CLI's working directory) when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _cli_command(checkpoint: Path, output: Path, block: str) -> list[str]:
    return ["attn-surgeon", "insert", _shown(checkpoint), "--arch", ARCH, "--block", block, "--after", "bottleneck",
            "--input-shape", f"1,1,{INPUT_SIZE},{INPUT_SIZE}", "-o", _shown(output), "--force"]


def _gate_openings(model: torch.nn.Module) -> str:
    """The learnt blend of each identity-initialised block (0 at insertion: the block passes its input through)."""
    values = [f"{name.rsplit('.', 2)[0]}={param.item():+.3f}" for name, param in model.named_parameters()
              if name.endswith("identity_gate.gamma")]
    return ", ".join(values) or "none (not an identity-gated block)"


def run_cli(command: list[str]) -> None:
    """Run the ``attn-surgeon`` command from the repository root, as a user would type it."""
    executable = shutil.which("attn-surgeon") or str(Path(sys.executable).with_name("attn-surgeon"))
    print(f"$ {shlex.join(command)}")
    done = subprocess.run([executable, *command[1:]], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False)
    print("\n".join(f"  {line}" for line in done.stdout.strip().splitlines()))
    if done.returncode != 0:
        raise SystemExit(f"attn-surgeon failed (exit {done.returncode}): {done.stderr.strip()}")


def _measure(name: str, model: torch.nn.Module, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[Result, torch.Tensor]:
    accuracy, logits = evaluate(model, images, labels)
    return Result(name, accuracy, F.cross_entropy(logits, labels).item()), logits


def _print_table(results: list[Result], test_size: int) -> None:
    width = max(len(r.name) for r in results)
    print(f"\n{'model':<{width}}  test accuracy ({test_size} images)  test loss")
    for r in results:
        print(f"{r.name:<{width}}  {r.accuracy:>29.2%}  {r.loss:>9.4f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", default="eca", help="attention block to insert (eca, se, cbam, ca, ...)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=0.01, help="peak learning rate of the fine-tuning")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "out" / "digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    seed_everything(args.seed)
    data = load_split()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    base = build()
    base.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    base_result, base_logits = _measure("base (digits_resnet.pt)", base, data.test_images, data.test_labels)
    print(f"Base model: test accuracy {base_result.accuracy:.2%}\n")

    patched_path = args.output_dir / f"digits_resnet_{args.block}.pt"
    run_cli(_cli_command(CHECKPOINT, patched_path, args.block))
    # The recipe's base is this repository's factory, so rebuilding imports it: trust_code says we allow that.
    patched = surgeon.load(patched_path, trust_code=True)
    inserted, inserted_logits = _measure(f"+ {args.block}, at insertion", patched, data.test_images,
                                         data.test_labels)
    deviation = (inserted_logits - base_logits).abs().max().item()
    added = sum(p.numel() for p in patched.parameters()) - sum(p.numel() for p in base.parameters())
    print(f"\nPatched model (+{added} parameters): test accuracy {inserted.accuracy:.2%}, "
          f"max |logit difference| vs base {deviation:.3g}")

    print(f"\nFine-tuning the patched model for {args.epochs} epochs (peak lr {args.lr})")
    train(patched, data.train_images, data.train_labels, epochs=args.epochs, lr=args.lr, seed=args.seed)
    tuned, _ = _measure(f"+ {args.block}, fine-tuned {args.epochs} epochs", patched, data.test_images,
                        data.test_labels)
    print(f"Identity gates after fine-tuning (gamma, 0 at insertion): {_gate_openings(patched)}")
    print(f"Control: fine-tuning the base model the same way, without {args.block}")
    control_model = copy.deepcopy(base)
    train(control_model, data.train_images, data.train_labels, epochs=args.epochs, lr=args.lr, seed=args.seed)
    control, _ = _measure(f"base, fine-tuned {args.epochs} epochs", control_model, data.test_images, data.test_labels)

    tuned_path = args.output_dir / f"digits_resnet_{args.block}_finetuned.pt"
    surgeon.save(patched, tuned_path, force=True)
    reloaded, _ = _measure("reloaded", surgeon.load(tuned_path, trust_code=True), data.test_images, data.test_labels)
    if reloaded.accuracy != tuned.accuracy:
        raise SystemExit(f"{tuned_path} rebuilt to another model ({reloaded.accuracy:.2%} != {tuned.accuracy:.2%})")

    _print_table([base_result, inserted, tuned, control], len(data.test_images))
    elapsed = time.perf_counter() - started
    print(f"\nSaved {_shown(tuned_path)} (surgeon.load rebuilds it: {reloaded.accuracy:.2%}); {elapsed:.1f} s in all")
    summary = {"block": args.block, "epochs": args.epochs, "added_params": added, "max_logit_deviation": deviation,
               "seconds": elapsed, "patched_checkpoint": str(patched_path), "finetuned_checkpoint": str(tuned_path),
               **{key: asdict(result) for key, result in (("base", base_result), ("inserted", inserted),
                                                          ("finetuned", tuned), ("control", control),
                                                          ("reloaded", reloaded))}}
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
