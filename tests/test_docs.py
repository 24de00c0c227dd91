"""The documentation's shape: a short README, a page per command, every page in the nav, examples that parse.

``mkdocs build --strict`` (run by ``.ci/run``) checks links, anchors and the generated parts; these tests check what
it cannot see: that a new command gets a page, that the README stays a five-minute read, and that the command lines
shown on the pages still name real options.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from surgeon.cli import cli
from tests._util import REPO

DOCS = REPO / "docs"
README_MAX_LINES = 200
COMMANDS = sorted(cli.commands)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _nav_pages(entries: list) -> list[str]:
    """The page paths of a ``nav`` tree (``- Title: page.md`` and sections of them)."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))


def _pages() -> list[Path]:
    """Every Markdown page of the site (the hooks' folder holds code, not pages)."""
    return sorted(path for path in DOCS.rglob("*.md") if "_hooks" not in path.relative_to(DOCS).parts)


def _command_lines(path: Path) -> list[str]:
    """``attn-surgeon ...`` lines of a file's code blocks."""
    lines = []
    for block in FENCE.findall(path.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():  # a command continued with a backslash is one line
            if line.startswith("attn-surgeon "):
                lines.append(line)
    return lines


def test_readme_is_a_five_minute_read() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_setup_commands_are_the_ones_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    setup = [line for block in FENCE.findall(readme) for line in block.splitlines()
             if line.startswith("pip install -e \".[test]\" && ")]
    assert len(setup) == 2 and all(line in ci for line in setup), setup


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_page_with_its_help(command: str) -> None:
    page = DOCS / "cli" / f"{command}.md"
    assert page.is_file(), f"`attn-surgeon {command}` has no page: write docs/cli/{command}.md and add it to the nav"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# attn-surgeon {command}\n")
    assert f"<!-- generated: help {command} -->" in text  # docs/_hooks/cli_help.py puts its --help there


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = _config()
    assert config["docs_dir"] == "docs"
    nav = _nav_pages(config["nav"])
    pages = [path.relative_to(DOCS).as_posix() for path in _pages()]
    assert sorted(set(pages) - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - set(pages)) == [], "nav entries without a page"
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert {f"cli/{command}.md" for command in COMMANDS} <= set(nav)


def test_every_hook_is_configured() -> None:
    hooks = sorted((DOCS / "_hooks").glob("*.py"))
    assert hooks and sorted(_config()["hooks"]) == [path.relative_to(REPO).as_posix() for path in hooks]


@pytest.mark.parametrize("path", [REPO / "README.md", *_pages()], ids=lambda path: path.relative_to(REPO).as_posix())
def test_command_lines_parse(path: Path) -> None:
    """Every ``attn-surgeon`` line shown names a command and options it has, with values of the right kind.

    The lines are parsed, not run: ``tests/cli/test_cli.py`` runs every ``--help`` example (which the command pages
    show through their generated reference), and the rest need models and files a reader has.
    """
    for line in _command_lines(path):
        args = shlex.split(line, comments=True)[1:]
        command = cli.commands.get(args[0])
        assert command is not None, f"{path.name}: no command {args[0]!r} in {line!r}"
        try:
            with click.Context(cli, info_name="attn-surgeon") as parent:
                command.make_context(args[0], args[1:], parent=parent)
        except click.UsageError as exc:
            pytest.fail(f"{path.relative_to(REPO)}: {line!r}: {exc.format_message()}")
