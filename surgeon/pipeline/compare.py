"""``surgeon.compare``: every candidate block (or rules file) on one model, and reference models beside them.

Each candidate is patched from a deep copy of the one model passed in (nothing is reloaded), measured against that
model in the same process on the same input, and freed before the next, so at most two models are alive at once:
the reference and one candidate (or one baseline). A candidate that cannot go at the chosen sites becomes a row
with the reason; only an error of the reference itself (a model that refuses the probe, a placement that selects
no site at all) stops the comparison.
"""

from __future__ import annotations

import copy
import gc
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .. import precision
from ..blocks import check_init, list_blocks
from ..errors import ModelForwardError, SurgeonError
from ..exportable import CHECKS, OK, check_exports
from ..io import LoadOptions
from ..match import Rule, make_plan, parse_site_spec
from ..profile import (
    CONVENTIONS,
    LatencyOptions,
    ModelFacts,
    compare_latency,
    machine_name,
    model_facts,
    peak_memory,
    quiet_profiler_logs,
)
from ..profile.comparison import (
    COMPARE_CONVENTIONS,
    SORT_KEYS,
    CompareRow,
    Comparison,
    ExportSummary,
    MemoryPeak,
    RatioTiming,
    Reference,
    ratio_timing,
    unstable_note,
)
from ..profile.measure.intervals import busy_warning, load_average
from ..recipe import recipe_of, versions
from ..rewrite import Inserted
from ..sites import find_sites
from ..tensors import default_input_shape, device_of, probe_input
from .checkpoints import load_model
from .surgery import insert_rule, resolve, run_surgery

__all__ = ["EXPORT_SCOPES", "CompareOptions", "Progress", "compare"]

EXPORT_SCOPES = ("blocks", "model", "off")
Progress = Callable[[int, int, str], None]
"""Told ``(candidates done, candidates in all, what runs now)`` as the comparison goes (the CLI draws a bar)."""
Observer = Callable[[nn.Module], None]


def _placement(after: str, position: str | None, stage: str | int | None, stride: int | None) -> str:
    parts = [f"--after {after}"]
    parts += [f"--position {position}"] if position else []
    parts += [f"--stage {stage}"] if stage is not None else []
    parts += [f"--stride {stride}"] if stride is not None else []
    return " ".join(parts)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


@dataclass(frozen=True)
class CompareOptions:
    """What :func:`compare` measures and how; built once by ``attn-surgeon compare`` or by Python.

    Attributes:
        blocks: insert blocks by registry name [default: every registered insert block, unless ``rules`` are
            given]; one that cannot go at these sites (a swap block, options it refuses, a failed rewrite) becomes
            a row with the reason.
        after, position, stage, stride: the placement of ``blocks``, as :func:`surgeon.insert` takes it.
        init: ``identity`` (the deviation measures that the blocks start as the identity) or ``paper``, for
            ``blocks``; a rules file keeps the init it states (``identity`` when it states none).
        rules: rules files or preset names (anything :func:`surgeon.apply` takes as rules), one candidate each.
        baselines: reference models to measure beside the candidates: specs or paths (loaded one at a time) or
            modules.
        input_shape: probe batch N, C, H, W [default: the size the model declares, else 1, 3, 224, 224].
        batch_sizes: batch sizes to time and measure memory at [default: N].
        latency: rounds (a floor; 0 skips latency and memory), warm-up, threads, the precision to reach and the
            time each candidate may take for it.
        exports: ``blocks`` (each distinct inserted block alone), ``model`` (the whole patched model) or ``off``.
        sort: the default order of :meth:`Comparison.sorted_rows` (see :data:`~surgeon.profile.comparison.SORT_KEYS`).
        name: how the reference is named [default: its class name].
        trust_code: allow rules that import blocks as ``package.module:Class``.
    """

    blocks: Sequence[str] | None = None
    after: str = "bottleneck"
    position: str | None = None
    stage: str | int | None = None
    stride: int | None = None
    init: str = "identity"
    rules: Sequence[Any] = ()
    baselines: Sequence[str | nn.Module] = ()
    input_shape: Sequence[int] | None = None
    batch_sizes: Sequence[int] | None = None
    latency: LatencyOptions = field(default_factory=LatencyOptions)
    exports: Literal["blocks", "model", "off"] = "blocks"
    sort: str = "latency"
    name: str | None = None
    trust_code: bool = False


def compare(model: nn.Module, options: CompareOptions | None = None, *, progress: Progress | None = None,
            observe: Observer | None = None) -> Comparison:
    """Measure each candidate against ``model``: sizes, counts, latency ratios, memory, deviation, exportability.

    ``model`` is not changed (each candidate patches a deep copy; train/eval flags, BatchNorm statistics and the
    thread count are restored). Candidates are ``options.blocks`` at one placement, then each of ``options.rules``;
    then each of ``options.baselines`` is measured the same way, as a whole model. Each latency ratio comes with its
    95% interval; one that is too wide, or an add-only candidate measured faster than the reference beyond noise,
    is flagged ``unstable`` with the reason.

    Args:
        model: the reference model, on the device to measure on.
        options: what to compare and how [default: :class:`CompareOptions`'s defaults].
        progress: told ``(done, total, message)`` as candidates are measured.
        observe: called with every model the comparison creates (each candidate copy, each loaded baseline), as
            soon as it exists: a hook to count or inspect them.

    Raises:
        ModelForwardError: ``model`` refuses the probe batch.
        NoMatchError: the placement selects no site of ``model``.
        SurgeonError: a bad option (unknown sort key, export scope, init mode; a rules file that cannot be read).
    """
    options = options or CompareOptions()
    if options.exports not in EXPORT_SCOPES:
        raise SurgeonError(f"unknown export scope {options.exports!r}; valid: {', '.join(EXPORT_SCOPES)}")
    if options.sort not in SORT_KEYS:
        raise SurgeonError(f"unknown sort key {options.sort!r}; valid: {', '.join(SORT_KEYS)}")
    check_init(options.init)
    timing = options.latency
    name = options.name or type(model).__name__
    shape = tuple(int(v) for v in (options.input_shape or default_input_shape(model)))
    sizes = tuple(dict.fromkeys(int(b) for b in options.batch_sizes)) if options.batch_sizes else (shape[0],)
    default_blocks = [] if options.rules else [info.name for info in list_blocks("insert")]
    blocks = default_blocks if options.blocks is None else options.blocks
    rule_sets = [(_rules_name(source), resolve(source, trust_code=options.trust_code)) for source in options.rules]
    placement = _placement(options.after, options.position, options.stage, options.stride)
    quiet_profiler_logs()
    device = device_of(model)
    context = _Context(model, name, shape, sizes if timing.runs > 0 else (), timing, options.exports, observe)
    if blocks:  # a placement that selects nothing is the caller's error, not every block's misfit
        selector = parse_site_spec(options.after, stage=options.stage, stride=options.stride)
        make_plan(find_sites(model, shape).sites,
                  [Rule(selector, "placement", position=options.position, name=placement)])
    context.count_reference()  # a model that refuses the probe fails here, before anything is shown
    total = len(blocks) + len(rule_sets) + len(options.baselines)
    tell = progress or (lambda done, total, message: None)
    load_before = load_average()
    tell(0, total, f"Measuring {name}")
    reference = context.reference()
    rows: list[CompareRow] = []
    for index, block in enumerate(blocks):
        tell(index, total, f"{block}: patching and measuring")
        rows.append(context.candidate(block, "block", lambda b=block: [insert_rule(
            b, options.after, options.position, init=options.init, stage=options.stage, stride=options.stride,
            name=f"--blocks {b}")]))
    for index, (label, rule_set) in enumerate(rule_sets, start=len(blocks)):
        tell(index, total, f"{label}: patching and measuring")
        rows.append(context.candidate(label, "rules", lambda r=rule_set: r))
    for index, baseline in enumerate(options.baselines, start=len(blocks) + len(rule_sets)):
        label = baseline if isinstance(baseline, str) else type(baseline).__name__
        tell(index, total, f"{label}: loading and measuring")
        rows.append(context.baseline(label, baseline, device, options.trust_code))
    tell(total, total, "done")
    return _comparison(options, context, reference, rows, placement if blocks else "",
                       {"before": load_before, "after": load_average()})


def _comparison(options: CompareOptions, context: _Context, reference: Reference, rows: list[CompareRow],
                placement: str, load: dict[str, list[float] | None]) -> Comparison:
    """The result: the rows with the setting, the environment (load average included) and the conventions."""
    timing, device = options.latency, device_of(context.model)
    first = reference.peak_memory[0] if reference.peak_memory else None
    environment = {**versions(), "python": platform.python_version(), "platform": platform.platform(),
                   "machine": machine_name(device), "device": str(device),
                   "threads": timing.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "load_average": load}
    conventions = {key: value for key, value in COMPARE_CONVENTIONS.items() if key != "exports"}
    conventions["latency"] = conventions["latency"].format(
        warmup=timing.warmup, runs=timing.runs, target=f"{100 * timing.target:g}", max_time=f"{timing.max_time:g}",
        threads=f"{environment['threads']} intra-op CPU threads")
    conventions["deviation"] = conventions["deviation"].format(init=options.init)
    conventions["exports"] = COMPARE_CONVENTIONS["exports"][options.exports]
    conventions["flops"] = CONVENTIONS
    notes = [] if first is not None or timing.runs == 0 else ["Peak memory was not measured."]
    if timing.runs == 0:
        notes.append("Latency and peak memory were not measured (runs=0).")
    else:
        busy = busy_warning(load["before"], load["after"], os.cpu_count())
        notes += [busy] if busy else []
        flagged = unstable_note(rows)
        notes += [flagged] if flagged else []
    shape = context.shape
    return Comparison(model=context.name, placement=placement, input_shape=list(shape),
                      batch_sizes=list(context.sizes),
                      settings={"runs": timing.runs, "warmup": timing.warmup, "threads": environment["threads"],
                                "target": timing.target, "max_time": timing.max_time, "device": str(device),
                                "exports": options.exports, "init": options.init, "sort": options.sort},
                      environment=environment, conventions=conventions, reference=reference, rows=rows, notes=notes)


def _rules_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)) and "\n" not in os.fspath(source):
        return os.path.basename(os.fspath(source))
    return "rules"


class _Context:
    """What every candidate is measured against, and how."""

    def __init__(self, model: nn.Module, name: str, shape: tuple[int, ...], sizes: tuple[int, ...],
                 timing: LatencyOptions, exports: str, observe: Observer | None) -> None:
        self.model, self.name, self.shape, self.sizes = model, name, shape, sizes
        self.timing, self.exports = timing, exports
        self.observe = observe or (lambda module: None)
        self.facts: ModelFacts | None = None  # set by count_reference, before anything else
        self.reduced: dict[str, float] = {}  # the reference's float16/bfloat16 deviations, likewise
        self.memory: dict[tuple[int, str], int | None] = {}

    def count_reference(self) -> None:
        """Sizes and counts of the reference; raises :class:`ModelForwardError` if it refuses the probe."""
        self.facts = model_facts(self.model, self.name, self.shape[1:])
        self.reduced = precision.measure(self.model, probe_input(self.shape, self.model))

    def reference(self) -> Reference:
        """The reference's figures, with its peak memory per batch size and mode (what candidates are held to)."""
        peaks = []
        for batch_size in self.sizes:
            probe = probe_input((batch_size, *self.shape[1:]), self.model)
            for mode in ("eval", "train"):
                value = self._peak(self.model, probe, mode)
                self.memory[(batch_size, mode)] = value
                if value is not None:
                    peaks.append(MemoryPeak(batch_size, mode, value))
        return Reference(self.name, self.facts.parameters, self.facts.counts.macs, self.facts.counts.flops, peaks)

    def candidate(self, label: str, kind: str, make_rules: Callable[[], Sequence[Rule]]) -> CompareRow:
        """A copy of the reference patched by ``make_rules()`` and measured; a misfit row if it cannot be built."""
        try:
            row = self._patched_row(label, kind, make_rules)
        except SurgeonError as exc:
            row = CompareRow(label, kind, status="misfit", reason=_one_line(exc))
        gc.collect()  # the copy is unreachable now; fx graphs and patched classes hold cycles: free it before the next
        return row

    def baseline(self, label: str, source: str | nn.Module, device: torch.device, trust_code: bool) -> CompareRow:
        """A reference model of another architecture, loaded now and measured like a candidate."""
        try:
            row = self._baseline_row(label, source, device, trust_code)
        except SurgeonError as exc:
            row = CompareRow(label, "baseline", status="misfit", reason=_one_line(exc))
        gc.collect()
        return row

    def _patched_row(self, label: str, kind: str, make_rules: Callable[[], Sequence[Rule]]) -> CompareRow:
        rules = make_rules()
        patched = copy.deepcopy(self.model)
        self.observe(patched)
        try:
            result = run_surgery(patched, rules, input_shape=self.shape)
        except ModelForwardError as exc:  # the reference ran on this probe, so the blocks broke it
            raise SurgeonError(f"the patched model fails on the probe: {exc.reason}") from None
        row = self._measure(label, kind, patched, add_only=_add_only(patched))
        row.sites = len(result.rewrite.inserted)
        verification = result.verification
        row.deviation = {"max_abs": verification.max_abs_diff, "relative": verification.rel_diff}
        checked = precision.check(patched, probe_input(self.shape, self.model), self.reduced, result.recipe)
        row.notes += precision.warnings_of(checked)  # a block that overflows in float16/bfloat16, named
        if self.exports == "blocks":
            row.exports = _block_exports(patched, result.rewrite.inserted)
        elif self.exports == "model":
            row.exports = ExportSummary("model", 1, check_exports(patched, (1, *self.shape[1:])))
        return row

    def _baseline_row(self, label: str, source: str | nn.Module, device: torch.device,
                      trust_code: bool) -> CompareRow:
        other = source if isinstance(source, nn.Module) else \
            load_model(source, LoadOptions(trust_code=trust_code)).module
        other.to(device)
        self.observe(other)
        row = self._measure(label, "baseline", other)
        if self.exports == "model":
            row.exports = ExportSummary("model", 1, check_exports(other, (1, *self.shape[1:])))
        return row

    def _measure(self, label: str, kind: str, other: nn.Module, add_only: bool = False) -> CompareRow:
        facts = model_facts(other, label, self.shape[1:])
        base = self.facts
        row = CompareRow(label, kind, add_only=add_only, parameters=facts.parameters,
                         parameters_delta=facts.parameters - base.parameters, macs=facts.counts.macs,
                         macs_delta=facts.counts.macs - base.counts.macs, flops=facts.counts.flops,
                         flops_delta=facts.counts.flops - base.counts.flops, uncounted_ops=dict(facts.counts.uncounted))
        budget = self.timing.max_time / max(1, 2 * len(self.sizes))  # the candidate's time, shared by its timings
        for batch_size in self.sizes:
            probe = probe_input((batch_size, *self.shape[1:]), self.model)
            for mode in ("eval", "train"):
                timing = self._timing(other, probe, mode, row, budget)
                if timing is not None:
                    row.latency.append(timing)
                    value = self._peak(other, probe, mode)
                    reference = self.memory.get((batch_size, mode))
                    if value is not None:
                        row.peak_memory.append(MemoryPeak(batch_size, mode, value,
                                                          None if reference is None else value - reference))
        return row

    def _timing(self, other: nn.Module, probe: torch.Tensor, mode: str, row: CompareRow,
                budget: float) -> RatioTiming | None:
        training, timing = mode == "train", self.timing
        try:
            reference, candidate = compare_latency(self.model, other, (probe,), runs=timing.runs,
                                                   warmup=timing.warmup, threads=timing.threads, training=training,
                                                   target=timing.target, max_time=budget)
        except Exception as exc:
            if not training:
                raise
            row.notes.append(f"training step at batch size {probe.shape[0]} failed: {_one_line(exc)}")
            return None
        return ratio_timing(reference, candidate, mode, add_only=row.add_only)

    def _peak(self, module: nn.Module, probe: torch.Tensor, mode: str) -> int | None:
        try:
            return peak_memory(module, (probe,), training=mode == "train")
        except Exception:
            if mode == "train":
                return None
            raise


def _add_only(patched: nn.Module) -> bool:
    """Whether the surgery only added work: its recipe inserts blocks and swaps or replaces nothing."""
    recipe = recipe_of(patched)
    return recipe is not None and bool(recipe.steps) and all(step.op == "insert" for step in recipe.steps)


def _block_exports(model: nn.Module, inserted: Sequence[Inserted]) -> ExportSummary:
    """Each distinct inserted block (block, options, init, input shape) checked alone; the first failure per check,
    with where it sat."""
    results: dict[str, str] = {check: OK for check in CHECKS}
    seen: set[tuple] = set()
    for item in inserted:
        action, site = item.action, item.action.site
        if action.op == "replace":
            channels, size = site.in_channels, site.in_size
        else:
            channels, size = site.channels_at(action.position), site.size_at(action.position)
        key = (action.block, repr(sorted(action.args.items())), action.init, action.op, channels, tuple(size))
        if key in seen:
            continue
        seen.add(key)
        checked = check_exports(model.get_submodule(item.key), (1, channels, *size),
                                [check for check in CHECKS if results[check] == OK])
        for check, outcome in checked.items():
            if outcome != OK:
                results[check] = f"{item.key} ({channels}x{size[0]}x{size[1]}): {outcome}"
    return ExportSummary("blocks", len(seen), results)
