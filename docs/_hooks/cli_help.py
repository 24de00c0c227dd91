"""MkDocs hook: each command page's option reference is the command's own ``--help``, rendered at build time.

A page under ``docs/cli/`` writes ``<!-- generated: help COMMAND -->`` where the reference goes; the hook puts the
text that ``attn-surgeon COMMAND --help`` prints there, so an option added, renamed or given a new default shows on
the next build, and the examples shown are the ones ``tests/test_cli.py`` runs as written.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"<!-- generated: help ([a-z-]+) -->")
WIDTH = 100  # wide enough that the option table keeps its two columns, narrow enough for the theme's text column


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace every help marker on a page with that command's help text in a code block."""
    return MARKER.sub(lambda found: _help(found.group(1), page.file.src_uri), markdown)


def _help(command: str, page: str) -> str:
    from click.testing import CliRunner

    from surgeon.cli import cli

    if command not in cli.commands:
        raise PluginError(f"docs/{page}: no command {command!r}; the commands are {', '.join(sorted(cli.commands))}")
    result = CliRunner().invoke(cli, [command, "--help"], prog_name="attn-surgeon", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise PluginError(f"`attn-surgeon {command} --help` failed: {result.output}")
    return f"```text\n{result.output.rstrip()}\n```"
