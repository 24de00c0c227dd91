"""The result of ``attn-surgeon compare``: typed rows, their sort keys, and the versioned JSON they become.

:func:`surgeon.compare` fills a :class:`Comparison`; the terminal, Markdown and HTML renderings and ``--format json``
(:meth:`Comparison.to_dict`, schema in ``docs/compare.md``) all read it. These are plain data: nothing here runs a
model, so every layer that renders may import it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .jsonsafe import json_safe
from .measure.intervals import MIN_PRECISE_ROUNDS, instability, median_interval, relative_half_width
from .measure.latency import LatencyResult, _percentile

__all__ = [
    "COMPARE_CONVENTIONS",
    "COMPARE_SCHEMA",
    "COMPARE_SCHEMA_VERSION",
    "SORT_KEYS",
    "CompareRow",
    "Comparison",
    "ExportSummary",
    "MemoryPeak",
    "RatioTiming",
    "Reference",
    "ratio_timing",
    "unstable_note",
]

COMPARE_SCHEMA = "attn-surgeon/compare"
COMPARE_SCHEMA_VERSION = 2  # 2: the ratio's 95% interval, why timing stopped, the unstable flag

Mode = Literal["eval", "train"]
RowKind = Literal["block", "rules", "baseline"]

SORT_KEYS: dict[str, str] = {
    "latency": "eval latency ratio at the first batch size",
    "train": "training-step latency ratio at the first batch size",
    "params": "parameters added",
    "flops": "FLOPs added",
    "macs": "MACs added",
    "memory": "peak eval memory added at the first batch size",
    "deviation": "output deviation at insertion (relative)",
    "name": "candidate name",
}
"""``--sort`` keys and what each sorts by (ascending: cheapest first; rows that could not be measured go last)."""


COMPARE_CONVENTIONS: dict[str, Any] = {
    "counts": "per image: one forward pass at batch size 1 in eval mode, counted at dispatch level, exactly as "
              "`attn-surgeon profile` counts (element-wise, pooling and normalisation work included).",
    "latency": "per batch size, {warmup} untimed then at least {runs} timed rounds; a round is one pass of the "
               "reference model and one of the candidate, back to back (reference, candidate, reference, "
               "candidate, ...), so machine noise hits both alike. Ratio: median over rounds of candidate ÷ "
               "reference in the same round, with its 95% interval (bootstrap over rounds, scipy.stats); rounds go "
               "on until that interval is within ±{target}% or the candidate's {max_time} s are spent. A ratio "
               "whose interval is wider than ±5%, or an add-only candidate (blocks inserted, nothing swapped) "
               "measured faster than the reference beyond noise, is flagged unstable. Spread: 10th-90th percentile "
               "of the per-round ratios. eval: a forward in eval mode under "
               "torch.inference_mode; train: one training step (train-mode forward, the outputs' sum as loss, "
               "backward, no optimizer step; BatchNorm statistics and gradients restored afterwards). {threads}; "
               "CPU timed with time.perf_counter, CUDA with CUDA events.",
    "memory": "the most bytes one pass (eval forward, or training step) allocates beyond what was allocated before "
              "it: activations, workspaces, outputs (and gradients for a training step); not weights or inputs. CPU: "
              "the torch profiler's record of PyTorch's allocator; CUDA: torch.cuda.max_memory_allocated.",
    "deviation": "largest absolute difference of the patched model's outputs from the reference's on the probe "
                 "batch, right after insertion (init {init}: 0 means the blocks start as the identity); relative: "
                 "divided by the reference output's largest magnitude.",
    "exports": {"blocks": "each distinct inserted block (same block, options and input shape) is checked alone, on "
                          "a batch of its site's input shape, not the whole patched model: onnx (exported with "
                          "torch.onnx's dynamo exporter and run in onnxruntime), torchscript (torch.jit.trace, "
                          "saved and reloaded), torch.export (exported, saved and reloaded), torch.compile "
                          "(graph breaks found by torch._dynamo.explain). A block that fails names where it sat.",
                "model": "the whole patched model is checked: onnx (exported with torch.onnx's dynamo exporter and "
                         "run in onnxruntime), torchscript (torch.jit.trace, saved and reloaded), torch.export "
                         "(exported, saved and reloaded), torch.compile (graph breaks by torch._dynamo.explain).",
                "off": "not checked (--exports off)."},
}
"""How each figure of a comparison is obtained, as its JSON's ``conventions`` states it (``{...}`` filled in by
:func:`surgeon.compare` with the setting; ``exports`` by export scope)."""


@dataclass
class RatioTiming:
    """One batch size and mode, timed in alternating rounds (reference, candidate, reference, candidate, ...).

    Attributes:
        ratio: median over rounds of candidate time ÷ reference time in the same round.
        ratio_p10, ratio_p90: the spread of those per-round ratios (linear interpolation).
        reference_ms, median_ms: median pass of the reference and of the candidate, in milliseconds.
        ratio_low, ratio_high: the 95% interval of ``ratio`` (bootstrap over the rounds).
        stopped: why timing stopped: ``target`` (the interval reached the target), ``time`` (the budget was
            spent), ``rounds`` (the round limit) or ``floor`` (no budget: exactly the rounds asked for).
        seconds: wall time spent timing these rounds.
        unstable: why the ratio is not to be trusted and what to do, or ``None`` (see
            :func:`surgeon.profile.measure.intervals.instability`).
    """

    batch_size: int
    mode: Mode
    reference_ms: float
    median_ms: float
    ratio: float
    ratio_p10: float
    ratio_p90: float
    rounds: int
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    stopped: str = "floor"
    seconds: float = 0.0
    unstable: str | None = None


@dataclass
class MemoryPeak:
    """Peak bytes one pass allocates (see :func:`surgeon.profile.peak_memory`); ``delta`` against the reference."""

    batch_size: int
    mode: Mode
    bytes: int
    delta: int | None = None


@dataclass
class ExportSummary:
    """Exportability of a candidate.

    Attributes:
        scope: ``blocks`` (each distinct inserted block alone, at its site's input shape), ``model`` (the whole
            patched model) or ``off``.
        checked: how many modules were checked (distinct blocks, or 1 for the model).
        results: per check of :data:`surgeon.exportable.CHECKS`: ``"ok"`` or a one-line reason (for ``blocks``,
            prefixed with the first block that failed).
    """

    scope: str
    checked: int
    results: dict[str, str] = field(default_factory=dict)


@dataclass
class Reference:
    """The unpatched model everything is measured against."""

    name: str
    parameters: int
    macs: int
    flops: int
    peak_memory: list[MemoryPeak] = field(default_factory=list)


@dataclass
class CompareRow:
    """One candidate (a block at the chosen sites, a rules file) or a baseline model, against the reference.

    ``status`` is ``ok``, or ``misfit`` when the candidate could not be built at these sites (``reason`` says why,
    in one line, and the figures are ``None``). ``notes`` holds what failed in an otherwise measured row (a training
    step the model refuses at this batch size, say) and why a ratio is flagged unstable. ``add_only`` says whether
    the candidate's recipe only inserts blocks (no swap, no replace): such a candidate only adds work, so it cannot
    truly be faster than the reference.
    """

    name: str
    kind: RowKind
    status: Literal["ok", "misfit"] = "ok"
    reason: str | None = None
    sites: int = 0
    add_only: bool = False
    parameters: int | None = None
    parameters_delta: int | None = None
    macs: int | None = None
    macs_delta: int | None = None
    flops: int | None = None
    flops_delta: int | None = None
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    latency: list[RatioTiming] = field(default_factory=list)
    peak_memory: list[MemoryPeak] = field(default_factory=list)
    deviation: dict[str, float] | None = None
    exports: ExportSummary | None = None
    notes: list[str] = field(default_factory=list)

    def timing(self, mode: Mode, batch_size: int | None = None) -> RatioTiming | None:
        """The timing of ``mode`` at ``batch_size`` (the first batch size timed when ``None``)."""
        return next((t for t in self.latency if t.mode == mode and batch_size in (None, t.batch_size)), None)

    def sort_value(self, key: str) -> tuple[int, Any]:
        """What ``--sort key`` orders by; a row without that figure sorts after every row with it."""
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; valid: {', '.join(SORT_KEYS)}")
        if key == "name":
            return (0, self.name)
        value: float | None
        if key in ("latency", "train"):
            timing = self.timing("eval" if key == "latency" else "train")
            value = timing.ratio if timing else None
        elif key == "memory":
            value = next((m.delta for m in self.peak_memory if m.mode == "eval"), None)
        elif key == "deviation":
            value = self.deviation["relative"] if self.deviation else None
        else:
            value = getattr(self, f"{'parameters' if key == 'params' else key}_delta")
        missing = value is None or (isinstance(value, float) and not math.isfinite(value))
        return (1, 0.0) if missing else (0, value)


@dataclass
class Comparison:
    """Every candidate measured against one model, in one process, on the same input.

    Attributes:
        model: the reference model's name (its spec or path).
        placement: the sites the blocks went to, as the command line would say it.
        input_shape: the probe batch (N, C, H, W): sites, counts (per image) and the deviation use it.
        batch_sizes: the batch sizes timed (empty when ``runs`` is 0).
        settings: runs, warm-up, threads, device, export scope, init mode and sort key.
        rows: candidates then baselines, in the order measured (see :meth:`sorted_rows`).
    """

    model: str
    placement: str
    input_shape: list[int]
    batch_sizes: list[int]
    settings: dict[str, Any]
    environment: dict[str, Any]
    conventions: dict[str, str]
    reference: Reference
    rows: list[CompareRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def sorted_rows(self, key: str | None = None) -> list[CompareRow]:
        """The rows by ``key`` (:data:`SORT_KEYS`; default the comparison's own ``settings["sort"]``); misfit rows
        last, by name."""
        key = key or self.settings.get("sort", "latency")
        measured = sorted((r for r in self.rows if r.status == "ok"), key=lambda r: (r.sort_value(key), r.name))
        return measured + sorted((r for r in self.rows if r.status != "ok"), key=lambda r: r.name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``schema``, ``schema_version``; layout in ``docs/compare.md``), rows in sort order."""
        data = asdict(self)
        data["rows"] = [asdict(row) for row in self.sorted_rows()]
        return {"schema": COMPARE_SCHEMA, "schema_version": COMPARE_SCHEMA_VERSION, **json_safe(data)}


def ratio_timing(reference: LatencyResult, candidate: LatencyResult, mode: Mode, *,
                 add_only: bool = False) -> RatioTiming:
    """Per-round ratios of two interleaved measurements (:func:`~surgeon.profile.compare_latency`), summarised.

    ``add_only``: the candidate only adds work to the reference, so a ratio wholly below 1 is flagged unstable.
    """
    ratios = sorted(c / r for r, c in zip(reference.samples_ms, candidate.samples_ms, strict=True) if r > 0)
    if not ratios:
        ratios = [math.inf]
    ratio = statistics.median(ratios)
    low, high = median_interval(ratios)
    return RatioTiming(batch_size=candidate.batch_size, mode=mode, reference_ms=reference.median_ms,
                       median_ms=candidate.median_ms, ratio=ratio, ratio_p10=_percentile(ratios, 0.10),
                       ratio_p90=_percentile(ratios, 0.90), rounds=len(ratios), ratio_low=low, ratio_high=high,
                       stopped=candidate.stopped, seconds=candidate.seconds,
                       unstable=instability(ratio, low, high, add_only=add_only, rounds=len(ratios)))


def unstable_note(rows: list[CompareRow]) -> str | None:
    """One line naming every unstable ratio, why in a few words, and what to do; ``None`` when there is none.

    Each timing's ``unstable`` holds the full reason (the JSON has it); this is the summary a report shows once.
    """
    flagged = []
    for row in rows:
        for timing in row.latency:
            if timing.unstable:
                width = relative_half_width(timing.ratio, timing.ratio_low, timing.ratio_high)
                why = (f"{timing.rounds} rounds" if timing.rounds < MIN_PRECISE_ROUNDS
                       else "add-only, measured faster" if row.add_only and timing.ratio_high < 1.0
                       else "interval unknown" if math.isinf(width) else f"±{100 * width:.1f}%")
                flagged.append(f"{row.name} {timing.mode} b{timing.batch_size} ({why})")
    if not flagged:
        return None
    return (f"Unstable ratios: {', '.join(flagged)}. An interval wider than ±5% is noise, and a block that only adds "
            "work cannot be faster than its reference: give them more time (--max-time), use fewer threads "
            "(--threads 1) or a quieter machine.")
