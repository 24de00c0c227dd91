"""Number formatting and wording shared by the terminal, Markdown and HTML renderings of a profile report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..jsonsafe import json_safe

__all__ = [
    "TableData",
    "count",
    "deviation_line",
    "json_safe",
    "latency_rows",
    "latency_table",
    "load_line",
    "model_labels",
    "ms",
    "nbytes",
    "operator_table",
    "percent",
    "ratio_text",
    "shape",
    "short_name",
    "si",
    "signed_count",
    "signed_si",
    "site_summary",
    "site_table",
    "size_table",
    "threads",
    "timing_setting",
    "uncounted_ops",
    "where",
]


def si(value: float | None, unit: str = "", digits: int = 4) -> str:
    """``4.089 G`` style: at most ``digits`` significant digits, a k/M/G/T prefix, no trailing zeros."""
    if value is None:
        return "-"
    magnitude = abs(value)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= factor * (1 - 5 * 10 ** -(digits + 1)):  # what would round up to 1000 takes the next prefix
            return f"{_significant(value / factor, digits)} {prefix}{unit}".rstrip()
    return f"{_significant(value, digits)} {unit}".rstrip()


def _significant(value: float, digits: int) -> str:
    integer_digits = len(str(int(abs(value)))) if abs(value) >= 1 else 1
    text = f"{value:.{max(0, digits - integer_digits)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def signed_si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + si(value, unit)


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def signed_count(value: int | None) -> str:
    return "-" if value is None else f"{value:+,}"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


def percent(value: float | None) -> str:
    """``12.34%``; below 0.1 % two significant digits (``0.00034%``), so a tiny share does not read as zero."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 0.001:
        return f"{value:.2%}"
    return f"{value * 100:.2g}%"


def threads(number: int) -> str:
    return f"{number} thread" + ("" if number == 1 else "s")


def nbytes(value: int | None) -> str:
    if value is None:
        return "-"
    for factor, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} B"


def short_name(name: str | None) -> str:
    """A checkpoint path shortened to its file name; a spec as it is."""
    if not name:
        return "model"
    return PurePath(name).name if ("/" in name or "\\" in name) else name


def model_labels(report: dict[str, Any]) -> list[str]:
    """Display names of the models, made distinct if they shorten to the same text."""
    labels = [short_name(row["name"]) for row in report["models"]]
    if len(labels) == 2 and labels[0] == labels[1]:
        labels = [f"{labels[0]} (model)", f"{labels[1]} (compare)"]
    return labels


def where(row: dict[str, Any]) -> str:
    """Where an inserted block went: ``residual``, ``after`` or ``before``; ``swap`` where it replaced a conv unit."""
    return "swap" if row["op"] == "replace" else str(row["position"])


def shape(values: list[int] | None) -> str:
    return "-" if not values else "x".join(str(v) for v in values)


def latency_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per batch size: each model's latency entry (or ``None``), the ratio of the second to the first with its 95%
    interval, and why that ratio is unstable (or ``None``)."""
    rows = []
    for index, batch_size in enumerate(report["input"]["batch_sizes"]):
        entries = [model["latency"][index] if index < len(model["latency"]) else None for model in report["models"]]
        delta = report.get("delta", {}).get("latency", [])
        ratio = delta[index] if index < len(delta) else {}
        rows.append({"batch_size": batch_size, "entries": entries, "ratio": ratio.get("ratio"),
                     "ratio_low": ratio.get("ratio_low"), "ratio_high": ratio.get("ratio_high"),
                     "unstable": ratio.get("unstable"),
                     "memory": [model["peak_memory"][index]["bytes"] if index < len(model["peak_memory"]) else None
                                for model in report["models"]]})
    return rows


def site_summary(report: dict[str, Any]) -> str | None:
    """One sentence comparing the inserted blocks' own time with the measured latency difference."""
    timing = report.get("site_timing")
    if not timing:
        return None
    sentence = (f"{len(report['sites'])} inserted blocks, timed alone at batch size {timing['batch_size']}: "
                f"{ms(timing['blocks_ms'])} ms together, {percent(timing['blocks_share'])} of the patched model's "
                f"{ms(timing['model_ms'])} ms")
    if timing.get("measured_delta_ms") is not None:
        sentence += f"; measured latency difference of the two models: {ms(timing['measured_delta_ms'])} ms"
    if timing["untimed"]:
        sentence += f"; not timed (no positional tensor input): {', '.join(timing['untimed'])}"
    return sentence + "."


def deviation_line(report: dict[str, Any]) -> str | None:
    deviation = report.get("deviation")
    if not deviation:
        return None
    if deviation["max_abs"] is None:
        return f"Output deviation on a {shape(deviation['probe_shape'])} probe batch: not comparable — " \
               f"{deviation['note']}."
    return (f"Output deviation on a {shape(deviation['probe_shape'])} probe batch: max abs "
            f"{deviation['max_abs']:.4g}, relative {deviation['relative']:.4g} — {deviation['note']}.")


def uncounted_ops(report: dict[str, Any]) -> dict[str, int]:
    """Operators without a formula, over all models (the larger call count of the two)."""
    merged: dict[str, int] = {}
    for row in report["models"]:
        for name, calls in row["uncounted_ops"].items():
            merged[name] = max(merged.get(name, 0), calls)
    return dict(sorted(merged.items()))


# --- the tables every rendering shows, as text cells --------------------------------------------------------------


@dataclass
class TableData:
    """A table as text: ``left`` leading columns are left-aligned, the others (numbers) right-aligned.

    ``drop_order`` lists the columns a narrow terminal may hide, least important first.
    """

    header: list[str]
    rows: list[list[str]]
    total: list[str] | None = None
    left: int = 1
    drop_order: list[int] = field(default_factory=list)


def size_table(report: dict[str, Any]) -> TableData:
    rows = [[label, count(row["parameters"]), count(row["trainable"]), si(row["macs"]), si(row["flops"]),
             str(sum(row["uncounted_ops"].values()))] for label, row in zip(model_labels(report), report["models"],
                                                                            strict=True)]
    delta = report.get("delta")
    total = None
    if delta:
        total = ["difference", signed_count(delta["parameters"]), signed_count(delta["trainable"]),
                 signed_si(delta["macs"]), signed_si(delta["flops"]), ""]
    return TableData(["model", "parameters", "trainable", "MACs", "FLOPs", "uncounted ops"], rows, total,
                     drop_order=[2, 5])


def latency_table(report: dict[str, Any]) -> TableData:
    """Per batch size: median (p10–p90) and images/s of each model, their ratio, and each model's peak memory.

    Header cells hold a line break between the model's name and the quantity (renderers without line breaks in
    headers replace it by a space).
    """
    labels = model_labels(report)
    compare = len(labels) == 2
    header = ["batch"]
    for label in labels:
        header += [f"{label}\nmedian (p10–p90) ms", "img/s"]
    header += ["ratio (95% CI)"] if compare else []
    header += [f"peak memory\n{label}" for label in labels] if compare else ["peak memory"]
    rows = []
    for row in latency_rows(report):
        cells = [str(row["batch_size"])]
        for entry in row["entries"]:
            cells += ["-", "-"] if entry is None else [
                f"{ms(entry['median_ms'])} ({ms(entry['p10_ms'])}–{ms(entry['p90_ms'])})",
                f"{entry['images_per_s']:.1f}"]
        if compare:
            cells.append("-" if row["ratio"] is None else ratio_text(row["ratio"], row["ratio_low"], row["ratio_high"])
                         + (" unstable" if row["unstable"] else ""))
        cells += [nbytes(memory) for memory in row["memory"]]
        rows.append(cells)
    memory_columns = list(range(len(header) - len(labels), len(header)))
    return TableData(header, rows, drop_order=[*memory_columns, *range(2, 2 * len(labels) + 1, 2)])


def site_table(report: dict[str, Any]) -> TableData:
    """One row per inserted block; a FLOPs figure marked ``*`` is a lower bound (the block ran an uncounted op)."""
    sites = report["sites"]
    timed = any(row["latency_ms"] is not None for row in sites)
    header = ["site", "position", "block", "input", "parameters", "MACs", "FLOPs", "FLOPs share"]
    header += ["time alone ms", "latency share"] if timed else []
    rows = []
    for row in sites:
        cells = [row["site"], where(row), row["block"], shape(row["input_shape"]), count(row["parameters"]),
                 si(row["macs"]), si(row["flops"]) + ("*" if row["uncounted_calls"] else ""),
                 percent(row["flops_share"])]
        cells += [ms(row["latency_ms"]), percent(row["latency_share"])] if timed else []
        rows.append(cells)

    def total_of(key: str) -> float:
        return sum(row[key] or 0 for row in sites)

    total = [f"{len(sites)} blocks", "", "", "", count(int(total_of("parameters"))), si(total_of("macs")),
             si(total_of("flops")), percent(total_of("flops_share"))]
    total += [ms(total_of("latency_ms")), percent(total_of("latency_share"))] if timed else []
    return TableData(header, rows, total, left=4, drop_order=[3, 1, 5, 7])


def operator_table(report: dict[str, Any], limit: int = 20) -> tuple[TableData, str]:
    """FLOPs by aten operator: the ``limit`` largest, and every operator whose FLOPs differ between the models."""
    models, labels = report["models"], model_labels(report)
    names = {name for row in models for name in row["operators"]}
    flops = {name: [row["operators"].get(name, {}).get("flops", 0) for row in models] for name in names}
    changed = {name for name, values in flops.items() if len(values) == 2 and values[0] != values[1]}
    largest = sorted(names, key=lambda name: (-max(flops[name]), name))[:limit]
    shown = sorted(set(largest) | changed, key=lambda name: (-max(flops[name]), name))
    compare = len(models) == 2
    header = ["operator", *(f"{label} FLOPs" for label in labels), *(["difference"] if compare else [])]
    rows = [[name, *(si(value) for value in flops[name]),
             *([signed_si(flops[name][1] - flops[name][0])] if compare else [])] for name in shown]
    note = f"All {len(names)} counted operators." if len(names) <= limit else (
        f"The {limit} largest of {len(names)} counted operators"
        + (", and every operator whose FLOPs differ between the models." if compare else "."))
    return TableData(header, rows), note


def ratio_text(ratio: float | None, low: float | None, high: float | None) -> str:
    """``×1.012 (1.004–1.020)``: a ratio with its 95% interval, to three decimals (``-`` when not measured)."""
    if ratio is None or not math.isfinite(ratio):
        return "-"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"×{ratio:.3f}"
    return f"×{ratio:.3f} ({low:.3f}–{high:.3f})"


def load_line(load: dict[str, list[float] | None] | None, cores: int | None) -> str | None:
    """``load 1.9 → 2.4 on 2 cores``: the 1-minute load average before and after timing, or ``None`` if unknown."""
    if not load or not load.get("before") or not load.get("after"):
        return None
    return f"load {load['before'][0]:g} → {load['after'][0]:g}" + (f" on {cores} cores" if cores else "")


def timing_setting(environment: dict[str, Any]) -> list[str]:
    """The timing conditions for a report's header: the threads, and the load average before and after."""
    load = load_line(environment.get("load_average"), environment.get("cpu_count"))
    return [threads(environment["threads"]), *([load] if load else [])]
