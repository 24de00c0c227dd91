"""Helpers shared by the tests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parents[1]
"""The repository root (README, benchmarks/, docs/, examples/)."""

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def run_cli(*args: object) -> Result:
    """``attn-surgeon ARGS...`` in-process (arguments converted with ``str``); the result keeps stdout and stderr."""
    from surgeon.cli import cli

    return CliRunner().invoke(cli, [str(arg) for arg in args])


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(spec: str) -> torch.nn.Module:
    from surgeon.io import build_arch

    torch.manual_seed(0)
    return build_arch(spec).eval()


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics and affine weights so identity checks cannot pass by accident."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.affine:
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)


def render_in_chromium(page: Path, work: Path, height: int = 3600) -> dict:
    """The DOM headless Chromium builds from ``page``, its log, and a screenshot (``work``: a scratch directory).

    Skips the calling test when Chromium is not installed.
    """
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")

    def call(*args: str) -> subprocess.CompletedProcess:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}", "--enable-logging=stderr", "--v=0"]
        return subprocess.run([binary, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=120,
                              check=True)

    dom = call("--dump-dom")
    shot = work / "page.png"
    log = call(f"--window-size=1280,{height}", f"--screenshot={shot}")
    return {"dom": dom.stdout, "log": dom.stderr + log.stderr, "screenshot": shot}


class _StartTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))


def html_elements(markup: str) -> list[tuple[str, dict[str, str]]]:
    """Every start tag of ``markup`` with its attributes, in document order."""
    parser = _StartTags()
    parser.feed(markup)
    return parser.elements
