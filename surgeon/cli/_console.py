"""The one place terminal output goes through: results on stdout, messages and progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = ["out", "err", "print_json", "progress", "warn"]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


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
