"""What ``insert``, ``swap`` and ``apply`` share: their output options, and the rendering of what
:func:`surgeon.pipeline.patch` did.

Beside the checkpoint ``X.pt`` go ``X.report.json`` (the surgery summary, with the profile report of original
against patched under ``profile``) and ``X.report.html`` (that profile as a self-contained page). ``--profile``
chooses how much is measured: ``counts`` (default; sizes, MACs/FLOPs and per-block counts on the meta device, so
surgery stays fast), ``full`` (also latency, peak memory and the time of each block: a few seconds to minutes), or
``off`` (the JSON summary only, no HTML).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ..io import CHECKPOINT_FORMATS, LoadOptions, default_output, writes_directory
from ..match import Rule
from ..pipeline import PatchOptions, PatchResult, patch
from ..recipe import Recipe
from ..report import FULL_PROFILE_RUNS, PROFILE_MODES
from ._console import out, print_json, progress, table, warn
from ._options import model_errors, note_detection

__all__ = ["run_rules_command", "render_plan", "profile_option", "format_option", "output_options"]


def profile_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--profile counts|full|off``: how much the report beside the checkpoint measures."""
    return click.option(
        "--profile", "profile", type=click.Choice(PROFILE_MODES), default="counts", show_default=True,
        help="Report written beside the checkpoint (.report.json and .report.html): counts (parameters, MACs, "
             f"FLOPs per block; milliseconds), full (also latency, peak memory and block times; {FULL_PROFILE_RUNS} "
             "timed runs) or off (no profile, no HTML).")(func)


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--format pt|safetensors`` for the patched checkpoint, passed to the command as ``fmt``."""
    return click.option(
        "--format", "fmt", type=click.Choice(CHECKPOINT_FORMATS), default=None,
        help="Checkpoint format: pt (torch.save, the input's layout) or safetensors (tensors only, the recipe in "
             "the header) [default: the input's; safetensors for a .safetensors output].",
    )(func)


def render_plan(summary: dict, title: str) -> None:
    view = table(title, ("site", "class", "stage", "index", "channels", "action", "block", "params"),
                 right=("stage", "index", "channels", "params"))
    for row in summary["plan"]:
        action = row["position"] if row["op"] == "insert" else "replace"
        params = row.get("parameters")
        view.add_row(row["site"], row["class"], str(row["stage"] or "-"), str(row["index"] if row["index"] is not None
                      else "-"), str(row["channels"]), action, row["block"], "?" if params is None else f"{params:,}")
    known = [row["parameters"] for row in summary["plan"] if row.get("parameters") is not None]
    view.caption = f"{len(summary['plan'])} actions, {sum(known):,} parameters in new blocks"
    out.print(view)


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every surgery command shares: what to write, where, and how to report it."""
    for option in reversed((
        format_option,
        click.option("-o", "--output", type=click.Path(path_type=Path),
                     help="Patched checkpoint to write [default: MODELNAME_BLOCK.pt; a directory MODELNAME_BLOCK for a "
                          "transformers model]; its report (.report.json, .report.html) goes beside it."),
        click.option("--dry-run", is_flag=True, help="Print the plan; change and write nothing."),
        click.option("--force", is_flag=True, help="Overwrite existing output files."),
        profile_option,
        click.option("--json", "as_json", is_flag=True, help="Print the plan or report as JSON on stdout."),
    )):
        func = option(func)
    return func


def run_rules_command(source: str, rules: Sequence[Rule] | Recipe | str, *, load: LoadOptions,
                      input_shape: tuple[int, ...] | None, output: Path | None, dry_run: bool, force: bool,
                      as_json: bool, profile: str = "counts", fmt: str | None = None, init: str | None = None,
                      suffix: str | None = None) -> PatchResult:
    """Run :func:`surgeon.pipeline.patch` as the command line asks, and render what it did.

    ``suffix`` names the default output (``MODEL_SUFFIX.pt``) instead of the pipeline's choice.
    """
    if output is None and suffix:
        output = default_output(source, suffix, fmt)
    elif output is not None and output.is_dir() and not writes_directory(source):
        raise click.BadParameter(f"{output} is a directory; give a file path", param_hint="'-o' / '--output'")
    options = PatchOptions(load, input_shape, init, profile, fmt, dry_run, force)
    with model_errors(source):
        result = patch(source, rules, output, options, step=progress)
    note_detection(source, result.loaded)
    summary = result.summary
    shown = ",".join(map(str, summary["input_shape"]))
    if dry_run:
        title = f"Plan for {source} at input {shown} (dry run, nothing written)"
        print_json(summary) if as_json else render_plan(summary, title)
        return result
    if result.dropped:
        warn(f"dropped {', '.join(result.dropped)} from the container: optimizer state cannot match the new "
             "parameters")
    for message in result.notes:
        warn(message)
    for message in summary.get("precision_warnings", ()):
        warn(message)
    if as_json:
        print_json(summary)
        return result
    params, check = summary["parameters"], summary["verification"]
    what = sorted({f"{row['block']} ({row['position'] or row['op']})" for row in summary["plan"]})
    out.print(f"Patched [bold]{summary['sites_patched']}[/bold] sites of {source} with {', '.join(what)}.")
    out.print(f"Parameters: {params['before']:,} → {params['after']:,} ({params['added']:+,})")
    if result.loaded.path is not None:  # the user's own weights: say that every one of them came along
        out.print(f"Weights: transferred {check['transferred_tensors']:,}/{check['original_tensors']:,} original "
                  f"tensors, {check['added_keys']:,} new")
    out.print(f"Output deviation on a probe batch of {shown}: max abs {check['max_abs_diff']:.3g} "
              f"(relative {check['rel_diff']:.3g}); original keys preserved: {check['keys_preserved']}")
    if summary.get("precision"):
        out.print("Reduced precision (relative deviation from float32, original → patched): " + ", ".join(
            f"{row['precision']} {_deviation(row['original'])} → {_deviation(row['patched'])}"
            for row in summary["precision"]), highlight=False)
    if check["removed_keys"]:
        removed = check["removed_keys"]
        out.print(f"Removed {len(removed)} original keys with the replaced units and modules (e.g. {removed[0]}); "
                  "the recipe lists them under each step's removed_keys", highlight=False)
    written = f" and {result.html}" if result.html else ""
    out.print(f"Wrote {result.output}, {result.report}{written}", highlight=False)
    return result


def _deviation(value: float | None) -> str:
    """A relative deviation as the summary line shows it; ``None`` is a non-finite output."""
    return "not finite" if value is None else f"{value:.3g}"
