"""What ``insert`` and ``swap`` share: run one rule on a model source, save, report."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from ..checkpoint import atomic_write, save_model
from ..errors import OutputExistsError
from ..match import Rule
from ..pipeline import run_surgery
from ..report import surgery_summary
from ._console import out, print_json, progress, warn
from ._options import default_output, load_source

__all__ = ["run_rules_command", "report_path", "render_plan"]


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.json")


def _check_outputs(paths: list[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise OutputExistsError(f"{path}: exists; pass --force to overwrite it")


def render_plan(summary: dict, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("site", "class", "stage", "index", "channels", "action", "block"):
        table.add_column(column, justify="right" if column in ("stage", "index", "channels") else "left")
    for row in summary["plan"]:
        action = row["position"] if row["op"] == "insert" else "replace"
        table.add_row(row["site"], row["class"], str(row["stage"] or "-"), str(row["index"] if row["index"] is not None
                      else "-"), str(row["channels"]), action, row["block"])
    out.print(table)


def run_rules_command(source: str, rules: list[Rule], *, arch: str | None, arch_args: tuple[str, ...],
                     input_shape: tuple[int, ...], output: Path | None, suffix: str, dry_run: bool, force: bool,
                     as_json: bool) -> None:
    output = output or default_output(source, suffix)
    report = report_path(output)
    if not dry_run:
        _check_outputs([output, report], force)
    loaded = load_source(source, arch, arch_args)
    with progress("Finding sites and rewriting"):
        result = run_surgery(loaded.module, rules, input_shape=input_shape, base=loaded.spec,
                             arch_args=loaded.arch_args, dry_run=dry_run)
    summary = surgery_summary(result, source, None if dry_run else str(output))
    if dry_run:
        print_json(summary) if as_json else render_plan(summary, f"Plan for {source} (dry run, nothing written)")
        return
    with progress(f"Saving {output}"):
        dropped = save_model(result.model, output, result.recipe, loaded.layout, force=force,
                             protect=(loaded.path,) if loaded.path else ())
        atomic_write(report, lambda f: f.write(json.dumps(summary, indent=2, default=str).encode()), force=force)
    if dropped:
        warn(f"dropped {', '.join(dropped)} from the container: optimizer state cannot match the new parameters")
    if as_json:
        print_json(summary)
        return
    params, check = summary["parameters"], summary["verification"]
    what = sorted({f"{row['block']} ({row['position'] or row['op']})" for row in summary["plan"]})
    out.print(f"Patched [bold]{summary['sites_patched']}[/bold] sites of {source} with {', '.join(what)}.")
    out.print(f"Parameters: {params['before']:,} → {params['after']:,} ({params['added']:+,})")
    out.print(f"Output deviation on the probe batch: max abs {check['max_abs_diff']:.3g} "
              f"(relative {check['rel_diff']:.3g}); original keys preserved: {check['keys_preserved']}")
    out.print(f"Wrote {output} and {report}")
