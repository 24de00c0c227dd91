"""``attn-surgeon compare``: exit codes, one-line errors, clean --json stdout, files, and the page in Chromium."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from surgeon.profile.charts import KINDS, label_boxes
from tests._util import render_in_chromium
from tests._util import run_cli as run

FAST = ["--input-shape", "1,3,64,64", "--runs", "1", "--warmup", "0", "--max-time", "0", "--exports", "off"]


@pytest.fixture(scope="module")
def as_json() -> object:
    # sorted by parameters, not by the default latency: one timed round cannot order se and resnet34 reliably
    return run("compare", "torchvision:resnet18", "--blocks", "se,sk", "--baseline", "torchvision:resnet34", *FAST,
               "--sort", "params", "--json")


def test_json_stdout_is_only_json_and_progress_goes_to_stderr(as_json) -> None:
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)  # nothing but the document on stdout
    assert document["schema"] == "attn-surgeon/compare" and document["model"] == "torchvision:resnet18"
    assert [row["name"] for row in document["rows"]] == ["se", "torchvision:resnet34", "sk"]
    lines = as_json.stderr.splitlines()
    assert lines == ["[0/3 done] Measuring torchvision:resnet18", "[0/3 done] se: patching and measuring",
                     "[1/3 done] sk: patching and measuring", "[2/3 done] torchvision:resnet34: loading and measuring"]


def test_a_misfit_block_is_a_row_not_an_error(as_json) -> None:
    rows = {row["name"]: row for row in json.loads(as_json.stdout)["rows"]}
    assert rows["sk"]["status"] == "misfit" and "swap block" in rows["sk"]["reason"]


def test_table_is_the_default_and_written_files_need_force(tmp_path: Path) -> None:
    result = run("compare", "torchvision:resnet18", "--blocks", "eca", "--stage", "4", "--sort", "params", *FAST)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Candidates on torchvision:resnet18 at --after bottleneck --stage 4")
    assert re.search(r"^ eca\s+block\s+2\s", result.stdout, flags=re.MULTILINE)
    assert "torchvision:resnet18 (reference)" in result.stdout and "Sorted by parameters added" in result.stdout
    for suffix, start in ((".md", "# Candidates on"), (".html", "<!DOCTYPE html>"), (".json", "{")):
        path = tmp_path / f"compare{suffix}"
        written = run("compare", "torchvision:resnet18", "--blocks", "eca", "--stage", "4", *FAST, "-o", str(path))
        assert written.exit_code == 0 and written.stdout.strip() == f"Wrote {path}", written.output
        assert path.read_text().startswith(start)
        again = run("compare", "torchvision:resnet18", "--blocks", "eca", *FAST, "-o", str(path))
        assert again.exit_code == 1 and again.stderr == f"error: {path}: exists; pass --force to overwrite it\n"
        assert again.stdout == ""  # refused before any measuring: no progress either
    forced = run("compare", "torchvision:resnet18", "--blocks", "eca", "--stage", "4", *FAST, "-o",
                 str(tmp_path / "compare.json"), "--force")
    assert forced.exit_code == 0


def test_rules_files_and_presets_are_candidates(tmp_path: Path) -> None:
    rules = tmp_path / "late_eca.yaml"
    rules.write_text("version: 1\nrules:\n  - match: {kind: block, stage: 4}\n    insert: {block: eca}\n")
    result = run("compare", "torchvision:resnet18", "--rules", str(rules), "--rules", "se_resnet", *FAST, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["rows"]}
    assert set(rows) == {"late_eca.yaml", "se_resnet"}  # --rules alone: no block candidates
    assert rows["late_eca.yaml"]["sites"] == 2 and rows["se_resnet"]["sites"] == 8
    assert {row["kind"] for row in rows.values()} == {"rules"}


@pytest.mark.parametrize(("args", "message"), [
    (("--after", "layer9.*"), "error: rule '--after layer9.*': no site matches (name=layer9.*); run `attn-surgeon "
                              "sites MODEL` to see what can match\n"),
    (("--rules", "no_such_preset"), None),
])
def test_errors_of_the_whole_run_are_one_line_with_exit_1(args: tuple[str, ...], message: str | None) -> None:
    result = run("compare", "torchvision:resnet18", "--blocks", "se", *args, *FAST)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    if message is not None:
        assert result.stderr == message


@pytest.mark.parametrize(("args", "message"), [
    (("--json", "--format", "md"), "--json contradicts --format md"),
    (("--sort", "speed"), "'speed' is not one of"),
    (("--exports", "all"), "'all' is not one of"),
    (("--batch-sizes", "0"), "batch sizes must be positive integers"),
    (("--blocks", ","), "expected block names like se,eca,cbam"),
])
def test_bad_usage_exits_2(args: tuple[str, ...], message: str) -> None:
    result = run("compare", "torchvision:resnet18", *args)
    assert result.exit_code == 2 and message in result.stderr


# --- the page ---------------------------------------------------------------------------------------------------


class _Points(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[dict[str, str]]] = {}
        self.tags: set[str] = set()
        self._chart: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.tags.add(tag)
        if tag == "figure" and "data-chart" in values:
            self._chart = values["data-chart"]
            self.charts[self._chart] = []
        elif tag == "g" and values.get("class") == "chart-point" and self._chart:
            self.charts[self._chart].append(values)


def _points(markup: str) -> _Points:
    parser = _Points()
    parser.feed(markup)
    return parser


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compare") / "compare.html"
    result = run("compare", "torchvision:resnet18", "--blocks", "se,eca,sk", "--baseline", "torchvision:resnet34",
                 *FAST, "-o", str(path))
    assert result.exit_code == 0, result.output
    return path


def test_page_is_self_contained_with_two_scatters_and_baselines_marked(page: Path) -> None:
    html = page.read_text()
    assert not re.search(r"https?:|//[\w.-]+/|\bsrc\s*=|@import|url\((?!#)", html, re.IGNORECASE)
    parsed = _points(html)
    assert not parsed.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert sorted(parsed.charts) == ["flops", "parameters"]
    for points in parsed.charts.values():
        named = {(p["data-label"].removesuffix(" (unstable)"), p["data-kind"]) for p in points}
        assert named == {("se", "candidate"), ("eca", "candidate"), ("torchvision:resnet34", "baseline"),
                         ("torchvision:resnet18 (reference)", "reference")}
    resnet34 = next(p for p in parsed.charts["parameters"] if p["data-kind"] == "baseline")
    assert float(resnet34["data-x"]) == pytest.approx(100 * (21_797_672 - 11_689_512) / 11_689_512, rel=1e-4)


@pytest.mark.browser
def test_browser_draws_every_point(page: Path, tmp_path: Path) -> None:
    rendered = render_in_chromium(page, tmp_path, height=2400)
    parsed = _points(rendered["dom"])
    assert [len(points) for points in parsed.charts.values()] == [4, 4]
    for chart in rendered["dom"].split("<svg ")[1:]:  # each chart has its own coordinates
        boxes = label_boxes(chart)
        assert len(boxes) == 4
        for index, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[index + 1:]:
                apart = box_a[2] <= box_b[0] or box_b[2] <= box_a[0] or box_a[3] <= box_b[1] or box_b[3] <= box_a[1]
                assert apart, f"{a!r} overlaps {b!r}"
    assert "Content Security Policy" not in rendered["log"]
    image_module = pytest.importorskip("PIL.Image")
    import numpy as np

    pixels = np.asarray(image_module.open(rendered["screenshot"]).convert("RGB"))
    for kind, count in (("candidate", 2), ("baseline", 1)):
        color = KINDS[kind][1]
        drawn = np.all(pixels == [int(color[i:i + 2], 16) for i in (1, 3, 5)], axis=-1)
        assert drawn.sum() > 2 * 20 * count, kind  # every marker of the two charts is painted (plus the legend)
