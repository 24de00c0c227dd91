"""Surgery over the model zoos people use: which share of real models attn-surgeon patches, and how well.

Each model gets the default surgery through the library (``surgeon.run_surgery``): ECA, identity init, at every
residual unit (``--after bottleneck``); a model without residual units gets it after every 3x3 conv unit
(``--after conv3x3``); a model with neither is *answered* with the library's one-line reason. YOLOv8n gets CBAM,
and separately CA, after its C2f blocks (``--after C2f --position after``). Recorded per model: sites found,
matched and patched; forward ok; output deviation (for detection and segmentation models also the deviation of the
backbone's features, since random-init detectors detect nothing); original keys preserved; the original
state_dict loading back with only the new keys missing; surgery time; or the error, one line. Batch-norm statistics
are randomized first: a fresh norm layer is nearly the identity, and an identity check should not pass by luck.
Each model runs in a forked worker with a time limit, so a crash or a hang costs one record, not the run.

Sources: ``torchvision``, ``detection``, ``timm``, ``yolo`` and ``transformers``; which models each runs is in
``benchmarks/_zoo_catalogue.py``.

    python benchmarks/zoo.py --source torchvision --limit 10
    python benchmarks/zoo.py --source timm --family 'resnet/*' --family 'efficientnet/*'
    python benchmarks/zoo.py --summary

Records merge into ``--output`` model by model (a rerun replaces that model's record), so chunks can run apart.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import surgeon
from surgeon.errors import NoMatchError, SurgeonError
from surgeon.match import parse_site_spec
from surgeon.tensors import output_deviation, probe_input

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the catalogue beside this file, also when loaded by path
from _zoo_catalogue import (  # noqa: E402, F401  (the catalogue's functions stay reachable as zoo.*)
    DETECTION,
    SOURCES,
    Entry,
    catalogue,
    detection_entries,
    timm_entries,
    timm_families,
    timm_param_counts,
    torchvision_entries,
    transformers_entries,
    yolo_entries,
)

SCHEMA = "attn-surgeon.zoo/1"
RESULTS = Path(__file__).resolve().parent / "results" / "zoo.json"
TOLERANCE = 1e-5  # the output deviation an identity-initialised patch may show


def one_line(exc: BaseException) -> str:
    """The library's message for a user error; for anything else the type, message and innermost user frame."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, SurgeonError):
        return text
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {text[:300]}{where}"


def _number(value: float | None) -> float | str | None:
    return value if value is None or math.isfinite(value) else str(value)


def _eval_outputs(model: nn.Module, fn: Callable[[nn.Module, torch.Tensor], Any], x: torch.Tensor) -> list:
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            leaves, _ = torch.utils._pytree.tree_flatten(fn(model, x))
    finally:
        for m, training in saved:
            m.training = training
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def randomize_norm_stats(model: nn.Module, seed: int = 1) -> None:
    """Give every batch norm (frozen ones too) non-trivial statistics and affine weights, so that an identity check
    cannot pass by accident: at fresh init a norm layer is nearly the identity, and losing one would go unseen."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
            if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
                continue
            mean.copy_(torch.randn(mean.shape, generator=generator) * 0.1)
            var.copy_(torch.rand(var.shape, generator=generator) + 0.5)
            for name, scale, shift in (("weight", 1.0, 0.5), ("bias", 0.2, -0.1)):
                tensor = getattr(module, name, None)
                if isinstance(tensor, torch.Tensor) and tensor.shape == mean.shape:
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * scale + shift)


def choose_size(model: nn.Module, sizes: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The first probe shape that the unpatched model runs at (many ViTs accept only their training size)."""
    error: BaseException | None = None
    for size in sizes:
        shape = (1, 3, size, size)
        try:
            _eval_outputs(model, lambda m, x: m(x), probe_input(shape, model))
            return shape
        except Exception as exc:  # noqa: BLE001 - the model's own limitation: try the next size
            error = exc
    raise RuntimeError(f"the unpatched model fails at {', '.join(map(str, sizes))}px: {one_line(error)}")


def _surgery(entry: Entry, model: nn.Module, shape: tuple[int, ...], record: dict[str, Any]):
    """Run the first site spec that matches; ``None`` (each spec's reason in the record) if none does."""
    tried: dict[str, str] = {}
    for spec in entry.sites:
        rule = surgeon.Rule(parse_site_spec(spec), entry.block, position=entry.position,
                            name=f"--block {entry.block} --after {spec}")
        try:
            start = time.perf_counter()
            result = surgeon.run_surgery(model, [rule], input_shape=shape)
            record.update(selector=spec, surgery_s=round(time.perf_counter() - start, 3))
            return result
        except NoMatchError as exc:
            tried[spec] = one_line(exc)
    record.update(status="answered", error=next(iter(tried.values())), tried=tried)
    return None


def run_entry(entry: Entry) -> dict[str, Any]:
    """Build the model, run the surgery and check it; never raises: errors become the record's ``error``."""
    record: dict[str, Any] = {"key": entry.key, "source": entry.source, "family": entry.family, "name": entry.name,
                              "block": entry.block, "status": "failed", "error": None}
    try:
        start = time.perf_counter()
        model = entry.build()
        record["build_s"] = round(time.perf_counter() - start, 3)
        record["params"] = sum(p.numel() for p in model.parameters())
        randomize_norm_stats(model)
        try:
            shape = choose_size(model, entry.sizes)
        except RuntimeError as exc:
            return {**record, "status": "skipped", "error": str(exc)}
        record["input_shape"] = list(shape)
        probe = probe_input(shape, model)
        original = model.state_dict()  # keeps _metadata, which some models (MNASNet) need to load
        routing = [[getattr(layer, a, None) for a in entry.routing] for layer in getattr(model, "model", [])]
        features = _eval_outputs(model, entry.features, probe) if entry.features else None
        result = _surgery(entry, model, shape, record)
        if result is not None:
            _check(entry, model, result, record, original, routing, features, probe)
    except Exception as exc:  # noqa: BLE001 - one record per model, whatever went wrong
        record["error"] = one_line(exc)
    if "input_shape" in record and "sites" not in record:
        record["sites"] = _site_counts(model, tuple(record["input_shape"]))
    return record


def _site_counts(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int] | None:
    """Site counts of a model that was not patched, so failures can be told apart by whether it has residual units."""
    try:
        table = surgeon.sites(model, shape)
    except Exception:  # noqa: BLE001 - the surgery's own error is already recorded
        return None
    return {kind: len(table.of_kind(kind)) for kind in ("block", "conv", "module")}


def _check(entry: Entry, model: nn.Module, result: Any, record: dict[str, Any], original: dict[str, torch.Tensor],
           routing: list[list[Any]], features: list | None, probe: torch.Tensor) -> None:
    table, check = result.sites, result.verification
    inserted = result.rewrite.inserted
    missing, unexpected = model.load_state_dict(original, strict=False)
    new_keys = {key for key in model.state_dict() if key not in original}
    # BatchNorm fills a missing num_batches_tracked itself on load, so load_state_dict does not list it.
    required = {key for key in new_keys if not key.endswith("num_batches_tracked")}
    record.update(
        sites={kind: len(table.of_kind(kind)) for kind in ("block", "conv", "module")},
        untraceable=len(table.untraceable), matched=len(result.plan.actions), patched=len(inserted),
        modes=dict(Counter(item.mode for item in inserted)),
        inserted_under=sorted({item.key.split(".", 1)[0] for item in inserted}),
        added_params=sum(item.params for item in inserted),
        forward_ok=check.forward_ok, max_abs_diff=_number(check.max_abs_diff), rel_diff=_number(check.rel_diff),
        keys_preserved=check.keys_preserved, loads_original=not unexpected and required <= set(missing) <= new_keys,
    )
    if features is not None:
        record["feature_abs_diff"] = _number(output_deviation(features,
                                                              _eval_outputs(model, entry.features, probe))[0])
    if entry.routing:
        after = [[getattr(layer, a, None) for a in entry.routing] for layer in model.model]
        record["routing_kept"] = after == routing
    ok = record["forward_ok"] and record["keys_preserved"] and record["loads_original"]
    ok = ok and record.get("routing_kept", True) and record["patched"] == record["matched"] > 0
    record["status"] = "patched" if ok else "failed"
    if not ok:
        record["error"] = "a check failed: " + ", ".join(k for k in ("forward_ok", "keys_preserved", "loads_original",
                                                                      "routing_kept") if record.get(k) is False)


def _worker(entry: Entry, conn: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    conn.send(run_entry(entry))
    conn.close()


def run_isolated(entry: Entry, timeout: float, threads: int) -> dict[str, Any]:
    """:func:`run_entry` in a forked process: a crash, an out-of-memory kill or a hang becomes one record."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(entry, sender, threads), daemon=True)
    process.start()
    sender.close()
    record, timed_out = None, False
    try:
        timed_out = not receiver.poll(timeout)
        record = None if timed_out else receiver.recv()
    except EOFError:  # the worker died before sending
        pass
    process.join(0 if timed_out else 5)
    if process.is_alive():
        process.kill()
        process.join()
    if record is None:
        why = f"timed out after {timeout:.0f}s" if timed_out else f"worker died with exit code {process.exitcode}"
        record = {"key": entry.key, "source": entry.source, "family": entry.family, "name": entry.name,
                  "block": entry.block, "status": "failed", "error": why}
    receiver.close()
    return record


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per source, and for timm the families that have residual units (the target's denominator) and how
    many of those were patched; computed from the records alone."""
    summary: dict[str, Any] = {}
    for source in SOURCES:
        rows = [r for r in records if r["source"] == source]
        if not rows:
            continue
        patched = [r for r in rows if r["status"] == "patched"]
        deviations = [r["max_abs_diff"] for r in patched if isinstance(r.get("max_abs_diff"), (int, float))]
        summary[source] = {
            "models": len(rows), **{s: sum(r["status"] == s for r in rows) for s in ("patched", "answered",
                                                                                     "failed", "skipped")},
            "patched_by": dict(Counter(r["selector"] for r in patched)),
            "within_tolerance": sum(d <= TOLERANCE for d in deviations) + sum(
                1 for r in patched if r.get("max_abs_diff") is None),
            "max_abs_diff": max(deviations, default=None),
            "median_surgery_s": statistics.median(r["surgery_s"] for r in patched) if patched else None,
        }
    timm_rows = [r for r in records if r["source"] == "timm"]
    residual = [r for r in timm_rows if (r.get("sites") or {}).get("block")]
    if residual:
        summary["timm"]["residual_families"] = len(residual)
        summary["timm"]["residual_patched"] = sum(r["status"] == "patched" for r in residual)
    return summary


def print_summary(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, shutil.get_terminal_size().columns))
    table = Table(title="attn-surgeon zoo: default surgery, identity init")
    for column in ("source", "models", "patched", "by bottleneck", "by conv3x3/other", "answered", "failed",
                   "skipped", f"dev ≤ {TOLERANCE:g}", "max |dev|", "median s"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for source, row in summarize(records).items():
        by = row["patched_by"]
        bottleneck = by.get("bottleneck", 0)
        table.add_row(source, str(row["models"]), str(row["patched"]), str(bottleneck),
                      str(row["patched"] - bottleneck), str(row["answered"]), str(row["failed"]),
                      str(row["skipped"]), f"{row['within_tolerance']}/{row['patched']}",
                      "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}",
                      "-" if row["median_surgery_s"] is None else f"{row['median_surgery_s']:.2f}")
    console.print(table)
    reasons: dict[tuple[str, str], list[str]] = {}  # one row per distinct reason: 44 models share the ViT answer
    for r in sorted(records, key=lambda r: r["key"]):
        if r["status"] != "patched":
            label = f"{r['source']}:{r['name']}" + (f" ({r['block']})" if r["block"] != "eca" else "")
            reasons.setdefault((r["status"], r["error"] or ""), []).append(label)
    if reasons:
        detail = Table(title="not patched", show_lines=True)
        for column in ("status", "reason", "models"):
            detail.add_column(column, overflow="fold")
        for (status, reason), labels in sorted(reasons.items()):
            detail.add_row(status, reason, ", ".join(labels))
        console.print(detail)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"schema": SCHEMA, "models": []}


def _write(path: Path, records: dict[str, dict[str, Any]]) -> None:
    import timm
    import torchvision

    try:
        import ultralytics
        ultra = ultralytics.__version__
    except ImportError:
        ultra = None
    try:
        import transformers
        hf = transformers.__version__
    except ImportError:
        hf = None
    ordered = sorted(records.values(), key=lambda r: (SOURCES.index(r["source"]), r["family"], r["name"], r["block"]))
    data = {"schema": SCHEMA, "versions": {"attn-surgeon": surgeon.__version__, "torch": torch.__version__,
                                           "torchvision": torchvision.__version__, "timm": timm.__version__,
                                           "ultralytics": ultra, "transformers": hf},
            "summary": summarize(ordered), "models": ordered}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", choices=SOURCES, help="repeatable; default: all")
    parser.add_argument("--family", action="append", default=[], help="family glob, repeatable")
    parser.add_argument("--model", action="append", default=[], help="model name glob, repeatable")
    parser.add_argument("--limit", type=int, default=None, help="at most this many models")
    parser.add_argument("--skip-done", action="store_true", help="leave out models already in --output")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file the records merge into")
    parser.add_argument("--summary", action="store_true", help="only print the table of --output")
    parser.add_argument("--list", action="store_true", help="only list the models that would run")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    records = {r["key"]: r for r in _load(args.output)["models"]}
    if args.summary:
        print_summary(list(records.values()))
        return
    entries = [e for e in catalogue(args.source or SOURCES, args.family)
               if not args.model or any(fnmatch.fnmatch(e.name, g) for g in args.model)]
    entries = [e for e in entries if not (args.skip_done and e.key in records)][:args.limit]
    if args.list:
        print("\n".join(f"{e.source:12} {e.family:36} {e.name} {e.block} {e.sizes}" for e in entries))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("zoo", total=len(entries))
        for entry in entries:
            bar.update(task, description=f"{entry.source}:{entry.name} ({entry.block})")
            records[entry.key] = run_isolated(entry, args.timeout, args.threads)
            _write(args.output, records)
            bar.advance(task)
    print_summary([records[e.key] for e in entries])


if __name__ == "__main__":
    main()
