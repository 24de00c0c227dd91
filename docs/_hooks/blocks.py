"""MkDocs hook: the block catalogue of ``docs/blocks.md``, generated from the block registry at build time.

Every row and section is read from the registry entries (``surgeon.blocks.list_blocks``), the constructors'
options and each block module's docstring (its ``Official code:`` line), so a block registered, renamed or given new
defaults appears here on the next build without anyone editing the page.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from mkdocs.exceptions import PluginError

PAGE = "blocks.md"
MARKER = "<!-- generated: blocks -->"
CHANNELS = 256  # the width `attn-surgeon blocks` counts parameters at, so the page and the command agree

_CODE_LINE = re.compile(r"^(?:Official|Reference) code:\s*(.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
_URL = re.compile(r"https?://[^\s()`,;]+")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the marker of ``blocks.md`` with the catalogue; leave every other page alone."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}")
    return markdown.replace(MARKER, render())


def render() -> str:
    """The summary table of every registered block, then one section per block."""
    from surgeon.blocks import list_blocks

    infos = list_blocks()
    intro = (f"{len(infos)} blocks are registered. Parameters are at `init=\"paper\"` with default options, as a "
             f"formula in C (the channels; swaps: C in = C out) and counted at C = {CHANNELS}.")
    lines = [intro, "",
             "| block | kind | paper | year | parameters | at 256 | placement in the paper | ONNX export |",
             "|---|---|---|--:|---|--:|---|---|"]
    for info in infos:
        count = _parameters_at(info)
        lines.append("| " + " | ".join([
            f"[`{info.name}`](#{info.name})", info.kind, _cell(info.paper), str(info.year or "-"),
            _cell(info.params or "-"), "-" if count is None else f"{count:,}", _cell(info.placement or "-"),
            info.export]) + " |")
    for info in infos:
        lines += ["", *_section(info)]
    return "\n".join(lines) + "\n"


def _section(info: Any) -> list[str]:
    from surgeon.blocks import block_arguments

    lines = [f"### {info.name}", "", _cell(info.summary) or info.paper, ""]
    facts = [("paper", f"{info.paper}" + (f", {info.year}" if info.year and str(info.year) not in info.paper else "")),
             *_official_code(info),
             ("aliases", ", ".join(f"`{alias}`" for alias in info.aliases)),
             ("class", f"`{info.factory.__module__}.{info.factory.__qualname__}`"),
             ("init", "`identity` (the surgery's default) or `paper`" if info.supports_init else
              "none (a swap inherits what fits of the replaced conv's weights)" if info.kind == "swap" else
              "none"),
             ("options from the site", ", ".join(f"`{arg}`" for arg in info.site_args)),
             ("parameters", info.params), ("placement in the paper", info.placement),
             ("ONNX export", info.export + (f": {info.export_note}" if info.export_note else ""))]
    lines += [f"- **{label}**: {value}" for label, value in facts if value]
    options = {name: param for name, param in block_arguments(info).items() if name != "init"}
    if options:
        lines += ["", "| option | default |", "|---|---|"]
        for name, param in options.items():
            default = info.defaults.get(name, param.default)
            lines.append(f"| `{name}` | {_default(default)} |")
    return lines


def _parameters_at(info: Any) -> int | None:
    from surgeon.blocks import create_block

    args = (CHANNELS,) if info.kind == "insert" else (CHANNELS, CHANNELS, 1)
    try:
        with torch.device("meta"):  # counted without allocating: only the shapes matter
            block = create_block(info, *args, init="paper")
    except Exception:  # noqa: BLE001  a block that cannot be built at this width shows no count, as the CLI does
        return None
    return sum(parameter.numel() for parameter in block.parameters())


def _official_code(info: Any) -> list[tuple[str, str]]:
    """``(label, text)`` of the block module's ``Official code:`` (or ``Reference code:``) line: its first link, or
    what it says instead (``none published``); nothing for a module without one (a user's block)."""
    doc = inspect.getdoc(inspect.getmodule(info.factory)) or ""
    found = _CODE_LINE.search(doc)
    if not found:
        return []
    label = found.group(0).split(":", 1)[0].lower()
    text = " ".join(found.group(1).split())
    url = _URL.search(text)
    if url:
        address = url.group(0).rstrip(".:")
        return [(label, f"[{address.split('://', 1)[1]}]({address})")]
    return [(label, re.split(r"[;.]", text, maxsplit=1)[0])]


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, type) or inspect.isfunction(value):
        return f"`{value.__qualname__}`"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
