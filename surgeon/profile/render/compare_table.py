"""A :class:`~surgeon.profile.comparison.Comparison` as the table every format shows, rendered for the terminal
(rich) and as Markdown; :mod:`.compare_page` makes the page and :mod:`.output` picks the format."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..comparison import SORT_KEYS, CompareRow, Comparison
from .format import TableData, count, load_line, nbytes, percent, ratio_text, shape, si, signed_si, threads

__all__ = ["EXPORT_LABELS", "compare_table", "export_footnotes", "render_compare", "render_compare_markdown",
           "setting_line"]

EXPORT_LABELS = {"onnx": "onnx", "torchscript": "ts", "torch.export": "export", "torch.compile": "compile"}
"""Short names of the export checks in table cells; the footnotes give each failure in full."""


def _ratio(row: CompareRow, mode: str, batch_size: int) -> str:
    timing = row.timing(mode, batch_size)  # type: ignore[arg-type]
    if timing is None:
        return "-"
    return ratio_text(timing.ratio, timing.ratio_low, timing.ratio_high) + (" unstable" if timing.unstable else "")


def _relative(delta: int | None, reference: int) -> str:
    if delta is None:
        return "-"
    return f"{signed_si(delta)} ({'+' if delta >= 0 else ''}{percent(delta / reference) if reference else '-'})"


def _memory(row: CompareRow, mode: str, batch_size: int) -> str:
    peak = next((m for m in row.peak_memory if m.mode == mode and m.batch_size == batch_size), None)
    if peak is None or peak.delta is None:
        return "-"
    return ("+" if peak.delta >= 0 else "-") + nbytes(abs(peak.delta))


def _deviation(row: CompareRow) -> str:
    if row.deviation is None:
        return "-"
    value = row.deviation["max_abs"]
    return "-" if value is None else f"{value:.3g}"


def export_footnotes(comparison: Comparison) -> dict[tuple[str, str], int]:
    """A number for each failed export check, by (row name, check), in the order the rows are shown."""
    notes: dict[tuple[str, str], int] = {}
    for row in comparison.sorted_rows():
        for check, outcome in (row.exports.results.items() if row.exports else ()):
            if outcome != "ok":
                notes[(row.name, check)] = len(notes) + 1
    return notes


def _exports(row: CompareRow, notes: dict[tuple[str, str], int]) -> str:
    if row.exports is None or not row.exports.results:
        return "-"
    failed = [check for check, outcome in row.exports.results.items() if outcome != "ok"]
    if not failed:
        return "ok"
    return "fails: " + ", ".join(f"{EXPORT_LABELS.get(check, check)} [{notes[(row.name, check)]}]"
                                 for check in failed)


def _note(row: CompareRow) -> str:
    if row.status != "ok":
        return f"not compared: {row.reason}"
    return "; ".join(row.notes)


def compare_table(comparison: Comparison) -> TableData:
    """One row per candidate and baseline, sorted; the reference's own figures in the total row."""
    sizes = comparison.batch_sizes
    first = sizes[0] if sizes else None
    reference = comparison.reference
    header = ["candidate", "kind", "sites", "parameters", "FLOPs"]
    header += [f"eval latency b{b}\nratio (95% CI)" for b in sizes]
    header += [f"train step b{b}\nratio (95% CI)" for b in sizes]
    header += [f"peak memory b{first}\neval", "train"] if first is not None else []
    header += ["deviation", "exports", "note"]
    notes = export_footnotes(comparison)
    rows = []
    for row in comparison.sorted_rows():
        cells = [row.name, row.kind, str(row.sites) if row.kind != "baseline" and row.status == "ok" else "-",
                 _relative(row.parameters_delta, reference.parameters), _relative(row.flops_delta, reference.flops)]
        cells += [_ratio(row, "eval", b) for b in sizes] + [_ratio(row, "train", b) for b in sizes]
        cells += [_memory(row, "eval", first), _memory(row, "train", first)] if first is not None else []
        cells += [_deviation(row), _exports(row, notes), _note(row)]
        rows.append(cells)
    total = [f"{comparison.model} (reference)", "", "", count(reference.parameters), si(reference.flops)]
    total += [""] * (len(header) - len(total))
    if first is not None:
        peaks = {m.mode: m.bytes for m in reference.peak_memory if m.batch_size == first}
        index = header.index(f"peak memory b{first}\neval")
        total[index], total[index + 1] = nbytes(peaks.get("eval")), nbytes(peaks.get("train"))
    train_columns = [5 + len(sizes) + i for i in range(len(sizes))]
    return TableData(header, rows, total, left=2, drop_order=[1, *train_columns[::-1], len(header) - 4])


def setting_line(comparison: Comparison) -> str:
    env, settings = comparison.environment, comparison.settings
    parts = [f"input {shape(comparison.input_shape)}", env["machine"], settings["device"]]
    if comparison.batch_sizes:
        parts += [threads(settings["threads"]), f"{settings['warmup']} + at least {settings['runs']} rounds, up to "
                  f"{settings['max_time']:g} s per candidate for ±{100 * settings['target']:g}%"]
        load = load_line(env.get("load_average"), env.get("cpu_count"))
        parts += [load] if load else []
    parts += [f"exports: {settings['exports']}", f"init {settings['init']}", f"torch {env['torch']}",
              f"attn-surgeon {env['attn_surgeon']}"]
    return " · ".join(parts)


def _title(comparison: Comparison) -> str:
    where = f" at {comparison.placement}" if comparison.placement else ""
    return f"Candidates on {comparison.model}{where}"


def _footer_lines(comparison: Comparison) -> list[str]:
    notes = export_footnotes(comparison)
    rows = {row.name: row for row in comparison.rows}
    lines = [f"[{number}] {name}, {check}: {rows[name].exports.results[check]}" for (name, check), number in
             notes.items()]
    lines += comparison.notes
    lines.append(f"Sorted by {SORT_KEYS[comparison.settings['sort']]}. Parameters and FLOPs: added to the reference "
                 "(per image). Ratios: candidate ÷ reference, median of alternating rounds (95% interval); "
                 "unstable: the interval is wider than ±5%, or an add-only candidate measured faster beyond noise. "
                 "Memory: peak bytes added per pass. Deviation: max abs output difference at insertion.")
    lines.append("Exports: " + comparison.conventions["exports"])
    return lines


def render_compare(comparison: Comparison) -> Group:
    """The terminal rendering: title, setting, the table, footnotes and conventions."""
    data = compare_table(comparison)
    table = Table(title=_title(comparison), title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for index, column in enumerate(data.header):
        table.add_column(column, justify="left" if index < data.left or column in ("exports", "note") else "right",
                         overflow="fold")
    for cells in data.rows:
        table.add_row(*cells)
    table.add_section()
    table.add_row(*data.total, style="bold")
    parts: list[RenderableType] = [table, Text(setting_line(comparison), style="dim")]
    parts += [Text(line, style="dim") for line in _footer_lines(comparison)]
    return Group(*parts)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def render_compare_markdown(comparison: Comparison) -> str:
    """GitHub-flavoured Markdown: a heading, the setting, the table, then footnotes and conventions."""
    data = compare_table(comparison)
    align = ["---" if i < data.left or h in ("exports", "note") else "--:" for i, h in enumerate(data.header)]
    lines = [f"# {_title(comparison)}", "", setting_line(comparison), "",
             f"| {' | '.join(_md_cell(h) for h in data.header)} |", f"| {' | '.join(align)} |"]
    lines += [f"| {' | '.join(_md_cell(c) for c in row)} |" for row in data.rows]
    lines += [f"| {' | '.join(_md_cell(f'**{c}**' if c else '') for c in data.total)} |", ""]
    lines += [f"{line}  " for line in _footer_lines(comparison)]
    return "\n".join(lines) + "\n"
