"""The shared scatter chart: deterministic inline SVG, round ticks, labels that never overlap or get cut."""

from __future__ import annotations

import itertools
import re

import matplotlib
import pytest

from surgeon.profile.charts import Point, label_boxes, scatter_svg


def _view_box(svg: str) -> tuple[float, float]:
    width, height = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups()
    return float(width), float(height)


def _texts(svg: str) -> list[str]:
    """Every text matplotlib drew (it writes each one as a comment above its glyphs)."""
    return re.findall(r"<!-- (.*?) -->", svg)


def _assert_labels_apart(svg: str, expected: int) -> None:
    boxes = label_boxes(svg)
    assert len(boxes) == expected
    width, height = _view_box(svg)
    for label, (x0, y0, x1, y1) in boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, f"{label!r} is cut"
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        apart = box_a[2] <= box_b[0] or box_b[2] <= box_a[0] or box_a[3] <= box_b[1] or box_b[3] <= box_a[1]
        assert apart, f"{a!r} overlaps {b!r}"


CROWDED = [Point("se", 1.02, 1.03, y_err=(1.0, 1.06)), Point("eca", 1.0, 1.01, y_err=(0.99, 1.02)),
           Point("cbam", 1.01, 1.02, y_err=(0.98, 1.05)), Point("ca", 1.0, 1.01, y_err=(0.97, 1.04)),
           Point("ema", 1.01, 1.0), Point("torchvision:resnet34", 1.9, 1.95, y_err=(1.9, 2.0), kind="baseline"),
           Point("identity", 1.0, 1.0, kind="control"), Point("resnet18", 1.0, 1.0, kind="reference")]


def test_same_points_same_bytes_and_no_metadata():
    first = scatter_svg(CROWDED, x_label="FLOPs (×)", y_label="latency (×)", reference_y=1.0)
    again = scatter_svg(CROWDED, x_label="FLOPs (×)", y_label="latency (×)", reference_y=1.0)
    assert first == again
    assert first.startswith("<svg ") and first.rstrip().endswith("</svg>")
    assert "<metadata" not in first and "<?xml" not in first and "<text" not in first  # glyphs as paths: no fonts


def test_crowded_labels_are_apart_inside_the_chart():
    svg = scatter_svg(CROWDED, x_label="FLOPs (×)", y_label="latency (×)", title="t", reference_y=1.0)
    _assert_labels_apart(svg, len(CROWDED))
    assert {label for label, _ in label_boxes(svg)} == {p.label for p in CROWDED}


def test_many_points_on_one_spot_still_fit():
    points = [Point(f"block {i}", 5.0, 1.0) for i in range(24)]
    _assert_labels_apart(scatter_svg(points, x_label="x", y_label="y"), len(points))


@pytest.mark.parametrize("xs", [[110.1, 110.2, 110.5], [1e-4, 2e-4, 3e-4], [0.366, 0.846, 1.2]])
def test_ticks_are_round_and_written_in_full(xs):
    points = [Point(str(i), x, x) for i, x in enumerate(xs)]
    texts = _texts(scatter_svg(points, x_label="x", y_label="y"))
    ticks = [t for t in texts if re.fullmatch(r"[−\d.,]+", t)]
    assert ticks, texts
    assert not [t for t in texts if "e+" in t or "e-" in t or "×10" in t or t.startswith("+")]
    digits = {len(t.split(".")[1]) if "." in t else 0 for t in ticks}
    assert max(digits) <= 5  # as many decimals as the step needs, e.g. 0.0001 steps print 4
    assert "0.366" not in ticks and "0.846" not in ticks


def test_log_axis_ticks_are_round():
    points = [Point(f"p{i}", 10.0 ** i, 1.0 + i / 100) for i in range(1, 7)]
    texts = _texts(scatter_svg(points, x_label="parameters", y_label="y", log_x=True))
    assert {"100", "1k", "10k", "100k"} <= set(texts)
    with pytest.raises(ValueError, match="positive"):
        scatter_svg([Point("zero", 0.0, 1.0)], x_label="x", y_label="y", log_x=True)


def test_kinds_reference_line_and_error_bars_are_drawn():
    svg = scatter_svg(CROWDED, x_label="x", y_label="y", reference_y=1.0)
    assert {"candidate", "baseline", "control", "reference", "reference (y = 1)"} <= set(_texts(svg))
    assert svg.count('id="' + svg.split('id="')[1].split("-")[0]) > 10  # every id carries the chart's prefix
    without = scatter_svg([Point(p.label, p.x, p.y, kind=p.kind) for p in CROWDED], x_label="x", y_label="y",
                          reference_y=1.0)
    assert svg.count("<path") > without.count("<path")  # the error bars


def test_two_charts_share_no_ids():
    ids = [set(re.findall(r'\bid="([^"]+)"', scatter_svg([Point("a", x, 1.0)], x_label="x", y_label="y")))
           for x in (1.0, 2.0)]
    assert ids[0] and not ids[0] & ids[1]


def test_labels_are_text_not_markup():
    svg = scatter_svg([Point('a<b & "c" $x$', 1.0, 1.0)], x_label="$cost$", y_label="y")
    assert label_boxes(svg)[0][0] == 'a<b & "c" $x$'
    assert "$cost$" in _texts(svg)


def test_unknown_kind_and_empty_charts_are_refused():
    with pytest.raises(ValueError, match="candidate, baseline, control, reference"):
        Point("x", 1.0, 1.0, kind="winner")
    with pytest.raises(ValueError, match="at least one point"):
        scatter_svg([], x_label="x", y_label="y")


def test_global_settings_are_left_alone():
    before = dict(matplotlib.rcParams)
    scatter_svg(CROWDED, x_label="x", y_label="y")
    assert dict(matplotlib.rcParams) == before


def test_every_point_says_what_it_is():
    svg = scatter_svg(CROWDED, x_label="x", y_label="y")
    points = re.findall(r'class="chart-point" data-label="([^"]*)" data-kind="(\w+)" data-x="([^"]*)" '
                        r'data-y="([^"]*)"', svg)
    assert [(label, kind, float(x), float(y)) for label, kind, x, y in points] == \
        [(p.label, p.kind, p.x, p.y) for p in CROWDED]


@pytest.mark.parametrize(("span", "expected"), [((0.0, 100.0), {"0", "25", "50", "75", "100"}),
                                               ((0.0, 10.0), {"0.0", "2.5", "5.0", "7.5", "10.0"})])
def test_tick_decimals_follow_the_step(span, expected):
    points = [Point("low", span[0], 1.0), Point("high", span[1], 1.0)]
    texts = set(_texts(scatter_svg(points, x_label="x", y_label="y")))
    assert expected <= texts, texts
