"""The HTML profile page: self-contained, escaped, and its charts drawn by a real browser (headless Chromium)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import surgeon
from surgeon.profile import LatencyOptions, profile_models
from surgeon.profile.charts import KINDS, label_boxes
from surgeon.profile.render.profile_page import render_html
from tests._util import html_elements, render_in_chromium

BATCH_SIZES = (1, 2, 4)


@pytest.fixture(scope="module")
def report() -> dict:
    torch.manual_seed(0)
    base = torchvision.models.resnet18().eval()
    patched = surgeon.insert(copy.deepcopy(base), "eca", init="paper", input_shape=(1, 3, 32, 32))
    return profile_models(base, patched, input_shape=(1, 3, 32, 32), batch_sizes=BATCH_SIZES,
                          latency=LatencyOptions(runs=2, warmup=1, threads=1, max_time=0),
                          names=("torchvision:resnet18", "runs/r18_eca.pt"))


@pytest.fixture(scope="module")
def page(report: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path



def _points(elements: list[tuple[str, dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """The points of each chart (``<figure data-chart>``), from the elements in document order."""
    points: dict[str, list[dict[str, str]]] = {}
    chart = None
    for tag, attrs in elements:
        if tag == "figure" and "data-chart" in attrs:
            chart = attrs["data-chart"]
            points[chart] = []
        elif tag == "g" and attrs.get("class") == "chart-point":
            points[chart].append(attrs)
    return points


def _assert_labels_apart(markup: str) -> None:
    """No two labels of one chart intersect (each chart has its own coordinates)."""
    charts = markup.split("<svg ")[1:]
    assert charts
    for chart in charts:
        boxes = label_boxes(chart)
        assert boxes
        for index, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[index + 1:]:
                apart = box_a[2] <= box_b[0] or box_b[2] <= box_a[0] or box_a[3] <= box_b[1] or box_b[3] <= box_a[1]
                assert apart, f"{a!r} overlaps {b!r}"


# --- self-contained -----------------------------------------------------------------------------------------------


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert not re.search(r"https?:|//[\w.-]+/|\bsrc\s*=|@import|url\((?!#)", html, re.IGNORECASE)
    tags = {tag for tag, _ in html_elements(html)}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "video", "audio", "source", "base"}
    assert all(not key.startswith("on") for _, attrs in html_elements(html) for key in attrs)  # no inline handlers
    csp = [attrs["content"] for _, attrs in html_elements(html)
           if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_report_strings_are_escaped(report: dict) -> None:
    hostile = copy.deepcopy(report)
    hostile["models"][1]["name"] = '<img src=x onerror="fetch(1)">'
    hostile["sites"][0]["site"] = "<script>alert(1)</script>"
    html = render_html(hostile)
    assert "<img" not in html and "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html


def test_charts_have_one_point_per_figure(report: dict, page: Path) -> None:
    points = _points(html_elements(page.read_text()))
    assert sorted(points) == ["latency", "sites"]
    assert len(points["latency"]) == 2 * len(BATCH_SIZES)
    assert [p["data-kind"] for p in points["latency"]] == ["reference", "candidate"] * len(BATCH_SIZES)
    medians = [entry["median_ms"] for batch in zip(*(m["latency"] for m in report["models"]), strict=True)
               for entry in batch]
    assert [float(p["data-y"]) for p in points["latency"]] == pytest.approx(medians, rel=1e-5)
    assert [float(p["data-x"]) for p in points["latency"]] == [b for b in BATCH_SIZES for _ in range(2)]
    assert len(points["sites"]) == len(report["sites"])  # every block: its FLOPs against its time alone
    assert [float(p["data-y"]) for p in points["sites"]] == pytest.approx([r["latency_ms"] for r in report["sites"]],
                                                                           rel=1e-5)
    _assert_labels_apart(page.read_text())


def test_latency_ratio_carries_its_interval(report: dict) -> None:
    for entry in report["delta"]["latency"]:
        assert entry["ratio_low"] <= entry["ratio"] <= entry["ratio_high"] or entry["unstable"]
    assert report["delta"]["add_only"] is True  # ECA inserted, nothing swapped
    for model in report["models"]:
        for entry in model["latency"]:
            assert entry["interval_ms"][0] <= entry["median_ms"] <= entry["interval_ms"][1]
            assert entry["stopped"] == "floor" and entry["runs"] == 2


# --- drawn by a browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(page: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DOM Chromium built from the page, its log, and a screenshot of it."""
    return render_in_chromium(page, tmp_path_factory.mktemp("chromium"))


@pytest.mark.browser
def test_browser_builds_every_point_and_blocks_nothing(chromium: dict, report: dict) -> None:
    points = _points(html_elements(chromium["dom"]))
    assert len(points["latency"]) == 2 * len(BATCH_SIZES) and len(points["sites"]) == len(report["sites"])
    _assert_labels_apart(chromium["dom"])  # the boxes the DOM Chromium built still carry no overlap
    assert "Content Security Policy" not in chromium["log"]  # the page asked for nothing the policy refuses


@pytest.mark.browser
def test_screenshot_shows_the_markers(chromium: dict) -> None:
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.asarray(image_module.open(chromium["screenshot"]).convert("RGB"))
    for kind in ("reference", "candidate"):
        color = KINDS[kind][1]
        drawn = np.all(pixels == [int(color[i:i + 2], 16) for i in (1, 3, 5)], axis=-1)
        assert drawn.sum() > 20 * len(BATCH_SIZES), f"the {kind} markers were not painted"
