"""``attn-surgeon ablate``: train the baseline and every candidate with several seeds, and say which differences are
real; ``--report EXPDIR`` renders an experiment without running anything."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.markup import escape

from ..experiments import (
    REPORT_FORMATS,
    AblateOptions,
    AblateResult,
    Execution,
    Loading,
    Placement,
    TrialProgress,
    parse_seeds,
    parse_train_args,
    plan_ablation,
    render_report,
)
from ..experiments import (
    ablate as run_ablation,
)
from ..io import LoadOptions
from ..profile.render.format import si
from ._console import err, out, table
from ._options import input_shape_option, model_errors, model_options, placement_options

EXAMPLES = (  # one command per line, as the help shows and a test runs them
    "\b\nExamples:\n"
    "  attn-surgeon ablate examples.digits.model:build --input-shape 1,1,16,16 --blocks se,eca --seeds 5 "
    "--trainer examples.digits.train:train -o out/digits-ablate\n"
    "  attn-surgeon ablate examples.digits.model:build --input-shape 1,1,16,16 --blocks se,eca,cbam --seeds 0,7,42 "
    "--trainer examples.digits.train:train --dry-run\n"
    "  attn-surgeon ablate --report out/digits-ablate --format md\n"
    "  attn-surgeon ablate ultralytics:yolov8n.yaml --blocks cbam,eca --after C2f --control ultralytics:yolov8s.yaml "
    "--train-args \"data=coco8.yaml epochs=100 imgsz=640 batch=16\" --executor ray --gpus-per-trial 1 -o runs/ablate\n"
)


def _blocks(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    return tuple(dict.fromkeys(names))


@click.command("ablate", epilog=EXAMPLES)
@click.argument("model", required=False)
@click.option("--blocks", callback=_blocks, metavar="B1,B2,...",
              help="One candidate arm per block, inserted at the placement below (see `attn-surgeon blocks`).")
@placement_options
@click.option("--rules", "rules", multiple=True, metavar="FILE|PRESET",
              help="A rules file, preset or patched checkpoint as one candidate arm (repeatable).")
@click.option("--control", "controls", multiple=True, metavar="SPEC",
              help="A model trained the same way as a reference (repeatable), e.g. ultralytics:yolov8s.yaml next to "
                   "a YOLOv8n base.")
@click.option("--seeds", default="3", show_default=True, metavar="N|S1,S2,...",
              help="3 means seeds 0,1,2; 0,7,42 means those seeds. Every arm is trained with every seed.")
@click.option("--trainer", metavar="MODULE:FUNCTION|ultralytics",
              help="function(model, *, seed, workdir) returning {metric: value}, or ultralytics (Ultralytics' own "
                   "trainer) [default: the framework's trainer for an Ultralytics model, else required].")
@click.option("--train-args", "train_args", multiple=True, metavar='"KEY=VALUE ..."',
              help='Arguments of the Ultralytics trainer in `yolo train`\'s form (repeatable), e.g. '
                   '"data=coco8.yaml epochs=100 imgsz=640 batch=16".')
@click.option("--metric", help="The metric compared [default: the first one the trainer returns].")
@click.option("--mode", type=click.Choice(["max", "min"]),
              help="Whether a higher (max) or lower (min) metric is better [default: max, or the plan's with "
                   "--report].")
@input_shape_option
@model_options
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="EXPDIR",
              help="The experiment directory: the plan, one directory per trial, results.json. Running the same "
                   "command again resumes it.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one trial at a time, each in its own process; ray: Ray tasks (pip install "
                   '"attn-surgeon[ray]").')
@click.option("--ray-address", metavar="ADDRESS", help="An existing Ray cluster [default: a local Ray for the run].")
@click.option("--ray-cpus", type=click.IntRange(1), help="CPUs of the local Ray [default: all of this machine's].")
@click.option("--cpus-per-trial", type=click.IntRange(1), default=1, show_default=True,
              help="CPUs per trial, and its torch thread count on either executor (so both give the same numbers).")
@click.option("--gpus-per-trial", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs per Ray trial (a fraction shares a GPU).")
@click.option("--max-retries", type=click.IntRange(0), default=1, show_default=True,
              help="Times Ray retries a trial whose worker died (a trial that raised is recorded as failed).")
@click.option("--dry-run", is_flag=True, help="Print the arms, seeds, trials, parameters and FLOPs; run nothing.")
@click.option("--report", "report", type=click.Path(file_okay=False, path_type=Path), metavar="EXPDIR",
              help="Render the experiment in EXPDIR (finished or not) and run nothing.")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="md", show_default=True,
              help="The format of --report, on stdout.")
def ablate(model: str | None, blocks: tuple[str, ...], site: str, position: str | None, init: str,
           stage: str | None, stride: int | None, rules: tuple[str, ...], controls: tuple[str, ...], seeds: str,
           trainer: str | None, train_args: tuple[str, ...], metric: str | None, mode: str | None,
           input_shape: tuple[int, ...] | None, load: LoadOptions, output: Path | None, executor: str,
           ray_address: str | None, ray_cpus: int | None, cpus_per_trial: int, gpus_per_trial: float,
           max_retries: int, dry_run: bool, report: Path | None, fmt: str) -> None:
    """Train MODEL and each candidate with several seeds through your trainer, and say which differences are real.

    Arms: the unpatched MODEL (baseline), one per --blocks entry at one placement, one per --rules, and one per
    --control. Each arm is trained once per seed; the arms are paired by seed. Per arm: the mean and standard
    deviation of the metric; against the baseline: the mean difference with its 95% confidence interval (Student
    t), the paired t-test p-value and the p-value adjusted across arms (Holm). The verdict is better or worse only
    when every seed finished and the adjusted p < 0.05.

    Trials run one at a time, each in its own process (--executor ray: as Ray tasks). Finished trials are never run
    again: the same command resumes a stopped experiment and retries failed trials. Exit status 0 only when every
    trial finished.
    """
    if report is not None:
        click.echo(render_report(report, fmt, metric=metric, mode=mode), nl=False)
        return
    if model is None:
        raise click.UsageError("give MODEL (or --report EXPDIR)")
    if output is None and not dry_run:
        raise click.UsageError("give the experiment directory: -o EXPDIR")
    options = AblateOptions(
        output=output, blocks=blocks, placement=Placement(site, position, stage, stride, init), rules=rules,
        controls=controls, seeds=parse_seeds(seeds), trainer=trainer, train_args=parse_train_args(train_args),
        metric=metric, mode=mode or "max",
        loading=Loading(load.arch, load.arch_args, load.trust_code, load.trust_pickle, input_shape),
        execution=Execution(executor, ray_address, ray_cpus, cpus_per_trial, gpus_per_trial, max_retries))
    with model_errors(model, input_shape):
        if dry_run:
            _print_plan(plan_ablation(model, options))
            return
        with _progress() as tell:
            result = run_ablation(model, options, progress=tell)
    _print_results(result)
    if not result.complete:
        trials = result.results["trials"] if result.results else {}
        not_done = ", ".join(f"{trials[s]} {s}" for s in ("failed", "diverged", "missing") if trials.get(s))
        err.print(f"[red]error:[/red] not every trial finished ({escape(not_done)}); see the logs in "
                  f"{escape(str(result.output))}/trials/, then run the same command to retry the failed ones",
                  highlight=False)
        sys.exit(1)


def _print_plan(result: AblateResult) -> None:
    plan = result.plan
    base = result.costs[plan.arms[0].name]
    view = table("Ablation plan", ["arm", "kind", "params", "Δ params", "FLOPs", "Δ FLOPs", "GFLOPs (framework)"],
                 right=["params", "Δ params", "FLOPs", "Δ FLOPs", "GFLOPs (framework)"])
    for arm in plan.arms:
        cost = result.costs[arm.name]
        view.add_row(escape(arm.name), arm.kind, f"{cost.params:,}", f"{cost.params - base.params:+,}",
                     si(cost.flops), _signed(cost.flops - base.flops),
                     "-" if cost.gflops_framework is None else f"{cost.gflops_framework:.1f}")
    out.print(view)
    total = len(plan.arms) * len(plan.seeds)
    seeds = ",".join(map(str, plan.seeds))
    line = f"{len(plan.arms)} arms x {len(plan.seeds)} seeds ({seeds}) = {total} trials, trainer {plan.trainer['spec']}"
    if result.resumed:
        line += f"; {result.resumed} already finished in {result.output}, {total - result.resumed} to run"
    out.print(line + ". Nothing was run (--dry-run).", highlight=False)


def _signed(value: int) -> str:
    return ("-" if value < 0 else "+") + si(abs(value))


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _print_results(result: AblateResult) -> None:
    results = result.results or {}
    metric = results.get("metric") or "metric"
    view = table(f"{metric} ({results.get('mode')} is better), {len(results.get('seeds', []))} seeds",
                 ["arm", "kind", f"{metric} mean ± std", "Δ vs baseline [95% CI]", "p", "p (Holm)", "verdict",
                  "params", "FLOPs", "s / trial"],
                 right=[f"{metric} mean ± std", "p", "p (Holm)", "params", "FLOPs", "s / trial"])
    for arm in results.get("arms", []):
        spread = f"{_number(arm['mean'])} ± {_number(arm['std'], 2)}" if arm["mean"] is not None else "-"
        versus = arm["vs_baseline"]
        if versus is None:
            diff = p = p_holm = "-"
        else:
            ci = versus["ci95"]
            diff = f"{versus['mean_diff']:+.4g}" + (f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "")
            p, p_holm = _number(versus["p"], 3), _number(versus["p_holm"], 3)
        times = [trial["seconds"] for trial in arm["trials"] if trial["seconds"] is not None]
        view.add_row(escape(arm["name"]), arm["kind"], spread, diff, p, p_holm,
                     escape(arm["verdict"] or "-"), "-" if arm["params"] is None else f"{arm['params']:,}",
                     si(arm["flops"]), f"{sum(times) / len(times):.1f}" if times else "-")
    out.print(view)
    for arm in results.get("arms", [])[1:]:
        if arm["verdict"] not in ("better", "worse"):
            out.print(f"{escape(arm['name'])}: {escape(arm['verdict'] or 'no verdict')} — "
                      f"{escape(arm['verdict_reason'])}", highlight=False)
    ran = f"ran {result.ran} trials" + (f", {result.resumed} were already finished" if result.resumed else "")
    out.print(f"Wrote {result.output}/results.json ({ran}); `attn-surgeon ablate --report {result.output} --format "
              "md|latex|csv|json|html` renders it.", highlight=False)


@contextmanager
def _progress() -> Iterator[Callable[[TrialProgress], None]]:
    """Trials done, running and left, with the time left, on stderr: a live line on a terminal, else a line per
    event (a log, CI)."""
    def eta(state: TrialProgress) -> str:
        return "" if state.eta is None else f", about {state.eta / 60:.0f} min left" if state.eta >= 90 else \
            f", about {state.eta:.0f} s left"

    def words(state: TrialProgress) -> str:
        return f"{state.done}/{state.total} trials done, {state.running} running, {state.left} left{eta(state)}"

    if not err.is_terminal:
        def tell(state: TrialProgress) -> None:
            err.print(f"[{words(state)}] {state.message}", highlight=False, markup=False, soft_wrap=True)

        yield tell
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("Ablation", total=None)

        def tell(state: TrialProgress) -> None:
            if state.status is not None:  # a trial ended: its line stays above the bar
                err.print(escape(state.message), highlight=False)
            bar.update(task, completed=state.done, total=state.total, description=escape(words(state)))

        yield tell
