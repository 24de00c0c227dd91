"""The one place terminal output goes through: results on stdout, messages and progress on stderr.

A pipe or a file has no right edge. rich gives one 80 columns (or the width of whatever terminal stdin is), and its
tables then cut long module names to ``model.…``, which makes ``attn-surgeon sites MODEL | grep C2f`` useless. So
off a terminal the consoles are unbounded and a table takes its natural width; on a terminal a table fits the
terminal, and :func:`table` makes every column fold what does not fit onto further lines instead of cutting it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

__all__ = ["out", "err", "print_json", "progress", "progress_bar", "warn", "table"]

UNBOUNDED = 100_000
"""The width of a console that writes to a pipe or a file: wider than any table it prints."""


class _Console(Console):
    """A rich console that is as wide as its output off a terminal (it decides at each print: click's test runner
    and redirections swap ``sys.stdout`` after import)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


out = _Console(soft_wrap=True)
err = _Console(stderr=True, soft_wrap=True)


def table(title: str, columns: Sequence[str], *, right: Sequence[str] = ()) -> Table:
    """A table whose cells are never cut: names, paths and numbers that do not fit fold onto further lines.

    Args:
        title: shown above the table, which is made at least as wide so that the title is not wrapped either.
        columns: the column headers.
        right: the headers of the columns to right-align (numbers).
    """
    view = Table(title=title, title_justify="left", min_width=cell_len(title))
    for column in columns:
        view.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return view


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while a step runs (only on a terminal, so logs and tests stay clean)."""
    if not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


@contextmanager
def progress_bar(title: str) -> Iterator[Callable[[int, int, str], None]]:
    """A progress bar on stderr for work in counted steps; yields ``advance(done, total, message)``.

    On a terminal it is a rich bar with the step running now; elsewhere (a log, CI, a test) each step is one plain
    line on stderr (``[3/8] cbam: ...``), since work that takes minutes should show it is alive. stdout is never
    touched, so ``--json`` output stays clean.
    """
    if not err.is_terminal:
        def advance(done: int, total: int, message: str) -> None:
            if done < total:
                err.print(f"[{done}/{total} done] {message}", highlight=False, markup=False, soft_wrap=True)

        yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(title, total=None)

        def advance(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{title}: {escape(message)}")

        yield advance
