"""The HTML profile page: self-contained, escaped, and its charts drawn by a real browser (headless Chromium)."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import surgeon
from surgeon.profile import profile_models
from surgeon.profile.html import render_html
from surgeon.profile.svg import COLORS, MIN_BAR
from tests._util import render_in_chromium

BATCH_SIZES = (1, 2, 4)


@pytest.fixture(scope="module")
def report() -> dict:
    torch.manual_seed(0)
    base = torchvision.models.resnet18().eval()
    patched = surgeon.insert(copy.deepcopy(base), "eca", init="paper", input_shape=(1, 3, 32, 32))
    return profile_models(base, patched, input_shape=(1, 3, 32, 32), batch_sizes=BATCH_SIZES, runs=2, warmup=1,
                          threads=1, names=("torchvision:resnet18", "runs/r18_eca.pt"))


@pytest.fixture(scope="module")
def page(report: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


class _Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))


def _elements(markup: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(markup)
    return parser.elements


def _bars(elements: list[tuple[str, dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """The bars of each chart (``data-chart``), from the elements in document order."""
    bars: dict[str, list[dict[str, str]]] = {}
    chart = None
    for tag, attrs in elements:
        if tag == "svg":
            chart = attrs.get("data-chart")
            bars[chart] = []
        elif tag == "rect" and "bar" in attrs.get("class", "").split():
            bars[chart].append(attrs)
    return bars


# --- self-contained -----------------------------------------------------------------------------------------------


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert not re.search(r"https?:|//[\w.-]+/|\bsrc\s*=|@import|url\(", html, re.IGNORECASE)
    tags = {tag for tag, _ in _elements(html)}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source", "base"}
    assert all(not key.startswith("on") for _, attrs in _elements(html) for key in attrs)  # no inline handlers
    csp = [attrs["content"] for tag, attrs in _elements(html) if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_report_strings_are_escaped(report: dict) -> None:
    hostile = copy.deepcopy(report)
    hostile["models"][1]["name"] = '<img src=x onerror="fetch(1)">'
    hostile["sites"][0]["site"] = "<script>alert(1)</script>"
    html = render_html(hostile)
    assert "<img" not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html


def test_charts_have_one_bar_per_figure(report: dict, page: Path) -> None:
    bars = _bars(_elements(page.read_text()))
    assert sorted(bars) == ["latency", "sites"]
    assert len(bars["latency"]) == 2 * len(BATCH_SIZES)
    assert [bar["data-series"] for bar in bars["latency"]] == ["model", "compare"] * len(BATCH_SIZES)
    medians = [entry["median_ms"] for batch in zip(*(m["latency"] for m in report["models"]), strict=True)
               for entry in batch]
    assert [float(bar["data-value"]) for bar in bars["latency"]] == pytest.approx(medians, rel=1e-5)
    assert len(bars["sites"]) == 3 * len(report["sites"])  # parameters, FLOPs and time of every block
    assert all(float(bar["width"]) >= MIN_BAR and float(bar["height"]) > 0 for chart in bars.values()
               for bar in chart)


# --- drawn by a browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(page: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DOM Chromium built from the page, its log, and a screenshot of it."""
    return render_in_chromium(page, tmp_path_factory.mktemp("chromium"))


@pytest.mark.browser
def test_browser_builds_every_bar_and_blocks_nothing(chromium: dict, report: dict) -> None:
    bars = _bars(_elements(chromium["dom"]))
    assert len(bars["latency"]) == 2 * len(BATCH_SIZES) and len(bars["sites"]) == 3 * len(report["sites"])
    assert "Content Security Policy" not in chromium["log"]  # the page asked for nothing the policy refuses


def _runs(values: list[bool]) -> int:
    """Number of maximal runs of True."""
    return sum(1 for i, value in enumerate(values) if value and (i == 0 or not values[i - 1]))


@pytest.mark.browser
def test_screenshot_shows_the_bars(chromium: dict, report: dict) -> None:
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.asarray(image_module.open(chromium["screenshot"]).convert("RGB"))

    def mask(series: str) -> np.ndarray:
        color = COLORS[series]
        return np.all(pixels == [int(color[i:i + 2], 16) for i in (1, 3, 5)], axis=-1)

    # latency: the bars stand on one baseline; a row just above it crosses one bar of each model per batch size
    for series in ("model", "compare"):
        drawn = mask(series)
        assert drawn.any(), f"no {series} bar was drawn"
        bottom = int(np.nonzero(drawn.any(axis=1))[0].max())
        assert _runs(drawn[bottom - 1].tolist()) == len(BATCH_SIZES), series
    # per block: a column at the left edge of each panel crosses one bar per inserted block
    for series in ("parameters", "flops", "time"):
        drawn = mask(series)
        assert drawn.any(), f"no {series} bar was drawn"
        left = int(np.nonzero(drawn.any(axis=0))[0].min())
        assert _runs(drawn[:, left + 1].tolist()) == len(report["sites"]), series
