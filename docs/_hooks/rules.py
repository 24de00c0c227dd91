"""MkDocs hook: the rules page shows ``rules/README.md`` (the language) and every preset file of ``rules/``.

``rules/README.md`` stays the one description of the language (``tests/test_rules.py`` checks its example and its
preset table), and the presets are read from the YAML files themselves, so neither is copied into ``docs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

PAGE = "rules.md"
LANGUAGE = "<!-- generated: rules/README.md -->"
PRESETS = "<!-- generated: presets -->"
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Fill the two markers of ``rules.md``; leave every other page alone."""
    if page.file.src_uri != PAGE:
        return markdown
    for marker in (LANGUAGE, PRESETS):
        if marker not in markdown:
            raise PluginError(f"docs/{PAGE} lost its marker {marker}")
    return markdown.replace(LANGUAGE, _language()).replace(PRESETS, _presets())


def _language() -> str:
    """``rules/README.md`` one heading level down, under the page's own title, without its own title."""
    lines = (RULES_DIR / "README.md").read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            lines[number] = "#" + line
    return "\n".join(lines).strip() + "\n"


def _presets() -> str:
    """A table of the presets (name and description), then each file as it is."""
    files = sorted(RULES_DIR.glob("*.yaml"))
    rows = ["| preset | what it does |", "|---|---|"]
    sections = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        description = (yaml.safe_load(text) or {}).get("description", "")
        rows.append(f"| [`{path.stem}`](#{path.stem}) | {description} |")
        sections += [f"### {path.stem}", "", f"`rules/{path.name}`:", "", "```yaml", text.rstrip(), "```", ""]
    return "\n".join([*rows, "", *sections])
