"""Terminal rendering of a profile report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..cli._console import out

__all__ = ["render_profile", "human"]


def human(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "-"
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3f}{suffix}{unit}"
    return f"{value:g}{unit}"


def render_profile(report: dict[str, Any]) -> None:
    env = report["environment"]
    table = Table(title=f"Profile at input {','.join(map(str, report['input_shape']))} — {env['machine']}, "
                        f"{env['device']}, {env['threads']} threads, torch {env['torch']}", title_justify="left")
    for column in ("model", "params", "MACs", "FLOPs", "latency median", "p10–p90", "img/s", "peak mem"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report["models"]:
        latency = row["latency"]
        table.add_row(str(row["name"]), f"{row['parameters']:,}", human(row["macs"]), human(row["flops"]),
                      f"{latency['median_ms']:.2f} ms", f"{latency['p10_ms']:.2f}–{latency['p90_ms']:.2f}",
                      f"{latency['images_per_s']:.1f}", human(row["peak_memory_bytes"], "B"))
    out.print(table)
    delta = report.get("delta")
    if delta:
        out.print(f"Δ parameters {delta['parameters']:+,}   Δ MACs {human(delta['macs'])}   Δ FLOPs "
                  f"{human(delta['flops'])}   latency ×{delta['latency_ratio']:.3f}   output deviation max abs "
                  f"{delta['max_abs_diff']:.3g} (relative {delta['rel_diff']:.3g})")
    if report.get("sites"):
        sites = Table(title="Per inserted block", title_justify="left")
        for column in ("site", "block", "position", "params", "MACs", "FLOPs", "FLOPs share"):
            sites.add_column(column, justify="left" if column in ("site", "block", "position") else "right")
        for row in report["sites"]:
            share = row["flops_share"]
            sites.add_row(row["site"], row["block"], str(row["position"] or row["op"]), f"{row['parameters']:,}",
                          human(row["macs"]), human(row["flops"]), "-" if share is None else f"{share:.2%}")
        out.print(sites)
    uncounted = {k: v for row in report["models"] for k, v in row["uncounted_ops"].items()}
    if uncounted:
        out.print("Uncounted ops (no formula; not treated as free): "
                  + ", ".join(f"{k} ×{v}" for k, v in sorted(uncounted.items())))
    out.print("[dim]MACs: conv/linear/matmul multiply-accumulates. FLOPs: 2×MACs + element-wise, pooling, softmax "
              "and normalisation work (see --json 'conventions').[/dim]")
