"""Reports of an ablation (``results.json``) as Markdown, LaTeX, CSV and HTML, on hand-made results: complete,
partial, with a failed arm, and with one seed (no verdict); hostile names in every format; the page in Chromium."""

from __future__ import annotations

import csv
import io
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from surgeon.experiments.render import FORMATS, latex_escape, render_results
from surgeon.experiments.summary import decimals, summary_table
from tests._util import html_elements, render_in_chromium
from tests.experiments._results import BASELINE_REASON, HOSTILE, METRIC, results


@pytest.fixture
def complete() -> dict[str, Any]:
    return results("complete")


@pytest.fixture
def partial() -> dict[str, Any]:
    return results("partial")


@pytest.fixture
def one_seed() -> dict[str, Any]:
    return results("one seed")


def _md_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


# ------------------------------------------------------------------------------------------------------ Markdown


def test_markdown_has_an_arm_per_row_with_its_figures(complete: dict[str, Any]) -> None:
    rows = _md_rows(render_results(complete, "md"))
    header, align, body = rows[0], rows[1], rows[2:]
    assert header == ["Arm", "Kind", "Verdict", "metrics/mAP50-95(B) ↑", "Δ vs baseline [95% CI]", "p (Holm)",
                      "Params", "FLOPs", "Time/trial", "Trials"]
    assert align[:3] == ["---"] * 3 and set(align[3:]) == {"--:"}
    assert [row[0] for row in body] == ["baseline", "cbam", "se", "ultralytics:yolov8s.yaml"]
    assert body[1] == ["cbam", "candidate", "better", "0.4303 ± 0.0031", "+0.0173 [+0.0090, +0.0256]", "0.016",
                       "3.2 M", "8.9 G", "61 s", "3/3"]
    assert body[0][4:6] == ["–", "–"] and body[2][4] == "−0.0010 [−0.0200, +0.0180]"
    assert body[3][5] == "0.003" and body[3][7] == "28.6 G"


def test_markdown_of_a_partial_experiment_says_so_and_why(partial: dict[str, Any], complete: dict[str, Any]) -> None:
    assert "Partial experiment" not in render_results(complete, "md")
    text = render_results(partial, "md")
    assert "- Partial experiment: 10 of 15 trials finished (3 failed, 1 diverged, 1 missing)." in text
    rows = {row[0]: row for row in _md_rows(text)[2:]}
    assert rows["cbam"][2:6] == ["incomplete", "0.4310", "–", "–"] and rows["cbam"][-1] == "1/3"
    assert rows["eca"][2:4] == ["incomplete", "–"] and rows["eca"][-2:] == ["–", "0/3"]
    assert "- cbam: seed 1 diverged; seed 2 missing" in text and "- eca: every trial failed" in text


def test_one_seed_gives_no_verdict_and_the_reason(one_seed: dict[str, Any]) -> None:
    text = render_results(one_seed, "md")
    row = _md_rows(text)[3]
    assert row[:6] == ["cbam", "candidate", "no verdict", "0.4300", "–", "–"]  # no spread, no comparison
    assert "- cbam: 1 seed: a paired test needs at least 2 (--seeds 3 or more)" in text
    assert BASELINE_REASON not in text  # the baseline's row says what it is


def test_an_experiment_before_any_finished_trial_renders(one_seed: dict[str, Any]) -> None:
    one_seed.update(metric=None, complete=False)
    for arm in one_seed["arms"]:
        arm.update(mean=None, std=None, vs_baseline=None)
        arm["trials"] = [{"seed": 0, "status": "missing", "metrics": {}, "seconds": None, "curves": {}}]
    for fmt in FORMATS:
        assert "Partial experiment: 0 of 2 trials finished (2 missing)" in render_results(one_seed, fmt) or fmt == "csv"
    assert render_results(one_seed, "csv").splitlines()[0].startswith("arm,kind,seed,status,seconds,error,params,")
    assert "| metric (none reported yet) ↑ |" in render_results(one_seed, "md")


def test_markdown_escapes_what_would_become_markup(complete: dict[str, Any]) -> None:
    complete["arms"][1]["name"] = "a|b *c* [x](javascript:1) <b>\nd"
    text = render_results(complete, "md")
    assert "| a\\|b \\*c\\* \\[x\\](javascript:1) \\<b\\> d |" in text
    assert len(_md_rows(text)[3]) == len(_md_rows(text)[0])


def test_decimals_follow_the_smallest_spread(complete: dict[str, Any]) -> None:
    assert decimals(complete) == 4  # smallest std 0.0030: two significant digits
    for arm in complete["arms"]:
        arm["std"], arm["vs_baseline"] = (arm["std"] * 100, None)
    assert decimals(complete) == 2
    for arm in complete["arms"]:
        arm["std"] = None
    assert decimals(complete) == 4  # nothing has spread


# --------------------------------------------------------------------------------------------------------- LaTeX


def test_latex_is_a_booktabs_table_with_a_cell_per_column(partial: dict[str, Any]) -> None:
    text = render_results(partial, "latex")
    lines = text.splitlines()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lllrrrrrrr}", r"\end{table}"):
        assert rule in lines
    body = lines[lines.index(r"\toprule") + 1: lines.index(r"\bottomrule")]
    rows = [line for line in body if line != r"\midrule"]
    assert len(rows) == 1 + len(partial["arms"])
    assert all(len(re.findall(r"(?<!\\)&", row)) == 9 and row.endswith(r" \\") for row in rows)
    assert r"cbam & candidate & better" not in text and "0.4310 & --" in text
    assert r"$-$0.0010 [$-$0.0200, +0.0180]" in text and r"$\pm$" in text and r"$\uparrow$" in text
    assert r"\caption{" in text and "Partial experiment: 10 of 15 trials finished" in text


def test_latex_escapes_every_special_character(complete: dict[str, Any]) -> None:
    assert latex_escape(r"a_b & 50% #1 $x$ {y} ~^\ <|>") == (r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}"
                                                             r"\textasciicircum{}\textbackslash{} \textless{}\textbar{}"
                                                             r"\textgreater{}")
    complete["arms"][1]["name"] = HOSTILE
    complete["model"] = "runs/my_model #2.pt"
    text = render_results(complete, "latex")
    row = next(line for line in text.splitlines() if "candidate & better" in line)
    assert row.startswith(latex_escape(HOSTILE) + " & candidate")
    assert len(re.findall(r"(?<!\\)&", row)) == 9
    assert r"runs/my\_model \#2.pt" in text and "#2" not in text.replace(r"\#2", "")


# ----------------------------------------------------------------------------------------------------------- CSV


def test_csv_has_one_row_per_trial_with_its_arm(partial: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(render_results(partial, "csv"))))
    assert len(rows) == sum(len(arm["trials"]) for arm in partial["arms"])
    assert list(rows[0])[:8] == ["arm", "kind", "seed", "status", "seconds", "error", METRIC, "metrics/mAP50(B)"]
    cbam = [row for row in rows if row["arm"] == "cbam"]
    assert [row["status"] for row in cbam] == ["done", "diverged", "missing"]
    assert cbam[0][METRIC] == "0.431" and cbam[1][METRIC] == "" and cbam[2]["seconds"] == ""
    assert cbam[1]["error"] == f"diverged: {METRIC} = nan" and cbam[0]["error"] == ""
    assert {row["verdict"] for row in cbam} == {"incomplete"} and cbam[0]["arm_mean"] == "0.431"
    se = next(row for row in rows if row["arm"] == "se")
    assert (se["mean_diff"], se["ci95_low"], se["ci95_high"], se["p_holm"]) == ("-0.001", "-0.02", "0.018", "0.8")
    assert se["params"] == "3180000" and float(se["flops"]) == 8.75e9 and se["gflops_framework"] == ""


def test_csv_keeps_names_intact_and_neutralises_formulas(complete: dict[str, Any]) -> None:
    complete["arms"][1]["name"] = '=HYPERLINK("http://x", "a, b")'
    complete["arms"][2]["name"] = HOSTILE + "\nline 2"
    rows = list(csv.DictReader(io.StringIO(render_results(complete, "csv"))))
    names = {row["arm"] for row in rows}
    assert names == {"baseline", "'" + complete["arms"][1]["name"], complete["arms"][2]["name"],
                     "ultralytics:yolov8s.yaml"}
    assert len(rows) == 12


def test_csv_metric_named_like_a_column_gets_a_prefix(complete: dict[str, Any]) -> None:
    for arm in complete["arms"]:
        for trial in arm["trials"]:
            trial["metrics"]["seed"] = 1.0
    header = render_results(complete, "csv").splitlines()[0].split(",")
    assert header.count("seed") == 1 and "metric:seed" in header


def test_unknown_format_names_the_valid_ones(complete: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown report format 'pdf'; valid: md, latex, csv, html"):
        render_results(complete, "pdf")
    assert FORMATS == ("md", "latex", "csv", "html")


# ---------------------------------------------------------------------------------------------------------- HTML



@pytest.fixture
def page(partial: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "ablate.html"
    path.write_text(render_results(partial, "html"), encoding="utf-8")
    return path


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    html = re.sub(r'xmlns(:xlink)?="http://www\.w3\.org/[\w/]+"', "", html)  # a namespace name is not a request
    assert not re.search(r"https?:|//[\w.-]+/|\bsrc\s*=|@import|url\((?!#)", html, re.IGNORECASE)
    elements = html_elements(html)
    assert not {tag for tag, _ in elements} & {"script", "link", "img", "iframe", "object", "embed", "base"}
    assert all(not key.startswith("on") for _, attrs in elements for key in attrs)
    csp = [attrs["content"] for tag, attrs in elements if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]


def test_page_has_the_table_the_charts_and_says_it_is_partial(page: Path, partial: dict[str, Any]) -> None:
    html = page.read_text()
    assert "Partial experiment: 10 of 15 trials finished" in html
    table = summary_table(partial)
    assert all(f"<td class=\"l\">{row[0]}</td>" in html for row in table.rows)
    assert '<td class="l verdict-better">better</td>' in html
    assert ("<td class=l>eca</td><td>2</td><td class=l>failed</td><td>–</td><td>62 s</td>"
            "<td class=l>RuntimeError: CUDA out of memory</td>") in html  # the trials, with why one failed
    charts = [attrs for tag, attrs in html_elements(html) if tag == "svg"]
    # the metric against FLOPs, then one chart per recorded column but the epoch
    assert [attrs["aria-label"] for attrs in charts] == [METRIC, "train/box_loss", METRIC]
    ids = [attrs["id"] for _, attrs in html_elements(html) if "id" in attrs]
    assert len(ids) == len(set(ids))  # charts share the page without id clashes


def test_flops_chart_marks_every_arm_with_a_mean(partial: dict[str, Any]) -> None:
    from surgeon.experiments.render_html import flops_chart
    from surgeon.profile.charts import label_boxes

    chart = flops_chart(partial)
    boxes = label_boxes(chart)
    assert [label for label, _ in boxes] == ["baseline", "cbam", "se", "ultralytics:yolov8s.yaml"]
    assert "Not drawn (no finished trial or no FLOP count): eca." in chart
    for (_, a), (_, b) in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def _drawn_texts(figure: Any) -> list[Any]:
    """The texts matplotlib draws: every visible one, but tick labels only of ticks inside the axes' view."""
    import matplotlib

    hidden = set()
    for axes in figure.axes:
        for axis, (low, high) in ((axes.xaxis, axes.get_xlim()), (axes.yaxis, axes.get_ylim())):
            for location, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True):
                if not min(low, high) <= location <= max(low, high):
                    hidden.add(id(label))
    return [t for t in figure.findobj(matplotlib.text.Text) if t.get_visible() and id(t) not in hidden]


def test_curve_charts_keep_their_text_apart_and_inside(complete: dict[str, Any]) -> None:
    import matplotlib

    from surgeon.experiments.render_html import TEXT_RC, curve_figure
    from surgeon.profile.charts import RC

    complete["arms"][2]["name"] = "a much longer arm name " * 3
    with matplotlib.rc_context({**RC, **TEXT_RC}):
        figure = curve_figure(complete, "train/box_loss")
        renderer = figure.canvas.get_renderer()
        figure.draw(renderer)  # constrained layout runs at draw time
        texts = [t for t in _drawn_texts(figure) if t.get_text().strip()]
        boxes = [t.get_window_extent(renderer) for t in texts]
    shown = {" ".join(t.get_text().split()) for t in texts}  # a long name is wrapped over lines
    assert {"epoch", "train/box_loss", "baseline", " ".join(complete["arms"][2]["name"].split())} <= shown
    frame = figure.bbox
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box
    for (ta, a), (tb, b) in itertools.combinations(zip(texts, boxes, strict=True), 2):
        assert not a.overlaps(b) or a.width == 0 or b.width == 0, (ta.get_text(), tb.get_text())


def test_a_chart_that_cannot_be_drawn_is_a_note(partial: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import surgeon.experiments.render_html as page

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise ValueError("cannot place 40 labels without overlap; draw fewer points per chart")

    monkeypatch.setattr(page, "scatter_svg", refuse)
    html = render_results(partial, "html")
    assert "<p class=note>No chart: cannot place 40 labels without overlap; draw fewer points per chart.</p>" in html
    assert '<td class="l verdict-better">better</td>' in html  # the rest of the page stands


def test_page_without_curves_says_so(one_seed: dict[str, Any]) -> None:
    for arm in one_seed["arms"]:
        for trial in arm["trials"]:
            trial["curves"] = {}
    html = render_results(one_seed, "html")
    assert "No trial recorded training curves" in html and html.count("<svg") == 1


def test_page_escapes_every_user_string(complete: dict[str, Any]) -> None:
    complete["arms"][1]["name"] = HOSTILE
    complete["arms"][2]["verdict_reason"] = "<script>alert(1)</script>"
    complete["model"] = "<iframe srcdoc=x>"
    complete["metric"] = "<b>acc</b>"
    for arm in complete["arms"]:
        for trial in arm["trials"]:
            trial["metrics"]["<b>acc</b>"] = trial["metrics"][METRIC]
    html = render_results(complete, "html")
    assert not {"img", "script", "iframe"} & {tag for tag, _ in html_elements(html)}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;iframe srcdoc=x&gt;" in html
    assert "<b>acc</b>" not in html and "&lt;b&gt;acc&lt;/b&gt;" in html


# ------------------------------------------------------------------------------------------------ in a browser


@pytest.mark.browser
def test_browser_builds_every_chart_and_blocks_nothing(page: Path, tmp_path: Path) -> None:
    shown = render_in_chromium(page, tmp_path / "chromium")
    charts = [attrs for tag, attrs in html_elements(shown["dom"]) if tag == "svg"]
    assert len(charts) == 3 and all(attrs.get("role") == "img" for attrs in charts)
    assert "Content Security Policy" not in shown["log"]
    from surgeon.profile.charts import label_boxes

    boxes = label_boxes(shown["dom"])
    assert len(boxes) == 4
    for (_, a), (_, b) in itertools.combinations(boxes, 2):
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
