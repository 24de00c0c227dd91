"""What ``insert``, ``swap`` and ``apply`` share: run rules on a model source, save, report.

Beside the checkpoint ``X.pt`` go ``X.report.json`` (the surgery summary, with the profile report of original
against patched under ``profile``) and ``X.report.html`` (that profile as a self-contained page). ``--profile``
chooses how much is measured: ``counts`` (default; sizes, MACs/FLOPs and per-block counts on the meta device, so
surgery stays fast), ``full`` (also latency, peak memory and the time of each block: a few seconds to minutes), or
``off`` (the JSON summary only, no HTML).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..checkpoint import FORMATS, atomic_write, save_model
from ..errors import OutputExistsError
from ..match import Rule
from ..pipeline import run_surgery
from ..probe import default_input_shape
from ..profile.latency import quiet_profiler_logs
from ..profile.output import render_text
from ..profile.report import model_facts
from ..report import FULL_PROFILE_RUNS, PROFILE_MODES, surgery_profile, surgery_summary
from ._console import out, print_json, progress, table, warn
from ..frameworks import writes_directory
from ._options import LoadOptions, default_output, load_source, model_errors

__all__ = ["run_rules_command", "report_path", "html_report_path", "render_plan", "profile_option", "format_option",
           "output_options"]


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.json")


def html_report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.html")


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
        "--format", "fmt", type=click.Choice(FORMATS), default=None,
        help="Checkpoint format: pt (torch.save, the input's layout) or safetensors (tensors only, the recipe in "
             "the header) [default: the input's; safetensors for a .safetensors output].",
    )(func)


def _check_outputs(paths: list[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")


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


def run_rules_command(source: str, rules: list[Rule], *, load: LoadOptions,
                     input_shape: tuple[int, ...] | None, output: Path | None, suffix: str, dry_run: bool, force: bool,
                     as_json: bool, profile: str = "counts", fmt: str | None = None) -> None:
    if output is None:
        output = default_output(source, suffix)
        output = output.with_suffix(".safetensors") if fmt == "safetensors" else output
    elif output.is_dir() and not writes_directory(source):
        raise click.BadParameter(f"{output} is a directory; give a file path", param_hint="'-o' / '--output'")
    report = report_path(output)
    html = html_report_path(output) if profile != "off" else None
    if not dry_run:
        _check_outputs([output, report, *([html] if html else [])], force)
    loaded = load_source(source, load)
    input_shape = input_shape or default_input_shape(loaded.module)
    shown = ",".join(map(str, input_shape))
    before = original = None
    with model_errors(source, input_shape):
        if not dry_run and profile == "counts":
            with progress("Counting the original model"):
                before = model_facts(loaded.module, source, input_shape[1:])
        elif not dry_run and profile == "full":
            original = copy.deepcopy(loaded.module)  # surgery is in place; the full profile times both models
        with progress("Finding sites and rewriting"):
            result = run_surgery(loaded.module, rules, input_shape=input_shape, base=loaded.spec,
                                 arch_args=loaded.arch_args, dry_run=dry_run)
        summary = surgery_summary(result, source, None if dry_run else str(output))
        if dry_run:
            title = f"Plan for {source} at input {shown} (dry run, nothing written)"
            print_json(summary) if as_json else render_plan(summary, title)
            return
        quiet_profiler_logs()
        summary["profile"] = surgery_profile(profile, result, before=before, original=original,
                                             names=(source, "patched"), input_shape=input_shape, step=progress)
    del original
    with progress(f"Saving {output}"):
        dropped = save_model(result.model, output, result.recipe, loaded.layout, force=force,
                             protect=(loaded.path,) if loaded.path else (), fmt=fmt)
        atomic_write(report, lambda f: f.write(json.dumps(summary, indent=2, default=str).encode()), force=force)
        if html is not None:
            page = render_text(summary["profile"], "html").encode("utf-8")
            atomic_write(html, lambda f: f.write(page), force=force)
    if dropped:
        warn(f"dropped {', '.join(dropped)} from the container: optimizer state cannot match the new parameters")
    for note in dropped.notes:
        warn(note)
    if as_json:
        print_json(summary)
        return
    params, check = summary["parameters"], summary["verification"]
    what = sorted({f"{row['block']} ({row['position'] or row['op']})" for row in summary["plan"]})
    out.print(f"Patched [bold]{summary['sites_patched']}[/bold] sites of {source} with {', '.join(what)}.")
    out.print(f"Parameters: {params['before']:,} → {params['after']:,} ({params['added']:+,})")
    out.print(f"Output deviation on a probe batch of {shown}: max abs {check['max_abs_diff']:.3g} "
              f"(relative {check['rel_diff']:.3g}); original keys preserved: {check['keys_preserved']}")
    out.print(f"Wrote {output}, {report}" + (f" and {html}" if html else ""), highlight=False)
