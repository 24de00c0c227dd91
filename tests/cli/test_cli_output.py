"""Output that survives a pipe: names, paths and numbers are never cut, whatever the output is written to."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from surgeon.cli import sites as sites_command
from surgeon.cli._console import _Console
from tests._util import REPO, run_cli
from tests.fixtures.sized_models import LONG_NAMES

MODEL = "tests.fixtures.sized_models:long_names"
SITES = ("sites", MODEL, "--kind", "all", "--input-shape", "1,3,16,16")


def test_a_pipe_gets_every_name_whole() -> None:
    """A real pipe, not a terminal, with the narrow COLUMNS a CI runner may set: one table row per site."""
    env = {**os.environ, "COLUMNS": "60", "OMP_NUM_THREADS": "1"}
    for forces_a_terminal in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        env.pop(forces_a_terminal, None)
    result = subprocess.run([sys.executable, "-c", "from surgeon.cli import main; main()", *SITES], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 9 and "…" not in result.stdout
    for name in LONG_NAMES:
        assert any(row.split("│")[1].strip() == name for row in rows), name


def test_click_runner_output_has_every_name_whole() -> None:
    result = run_cli(*SITES)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert all(f"│ {name} " in result.stdout for name in LONG_NAMES)


@pytest.mark.parametrize("width", [60, 100])
def test_a_terminal_gets_a_table_that_fits_with_names_folded(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    console = _Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
    monkeypatch.setattr(sites_command, "out", console)
    result = run_cli(*SITES)
    assert result.exit_code == 0, result.output
    text = console.file.getvalue()
    assert max(map(len, text.splitlines())) <= width and "…" not in text
    for name in LONG_NAMES:  # the pieces of the folded name column, read down the rows, spell every name
        column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
        assert name in column


def test_messages_are_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """A warning or error that holds brackets (an extra, a regex, a list) is printed as it is."""
    from surgeon.cli._console import warn

    warn("install 'attn-surgeon[onnx]' for re:layer[34]\\..*")
    assert capsys.readouterr().err == "warning: install 'attn-surgeon[onnx]' for re:layer[34]\\..*\n"
