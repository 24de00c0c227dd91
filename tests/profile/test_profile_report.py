"""The profile report: its figures, its formats, the ``profile`` command, and the report surgery writes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import surgeon
from surgeon.cli._options import LoadOptions
from surgeon.cli._surgery import run_rules_command
from surgeon.match import Rule, parse_site_spec
from surgeon.profile import SCHEMA_VERSION, LatencyOptions, profile_models, render_text
from surgeon.profile.measure.attribution import capture_block_inputs, time_blocks
from tests._util import run_cli as run

SHAPE = (1, 3, 32, 32)
NO_TIMING = LatencyOptions(runs=0)


class SortGate(nn.Module):
    """A user block that runs an operator without a formula (sort), to see it reported by name."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + torch.sort(x, dim=1).values * 0


@pytest.fixture(scope="module")
def r18_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    base = torchvision.models.resnet18().eval()
    patched = surgeon.insert(copy.deepcopy(base), "eca", init="paper", input_shape=SHAPE)
    return base, patched


@pytest.fixture(scope="module")
def report(r18_pair) -> dict:
    base, patched = r18_pair
    return profile_models(base, patched, input_shape=SHAPE, batch_sizes=(1, 2),
                          latency=LatencyOptions(runs=3, warmup=1, threads=1, max_time=0),
                          names=("torchvision:resnet18", "/some/dir/r18_eca.pt"))


# --- figures --------------------------------------------------------------------------------------------------


def test_sizes_counts_and_deltas_add_up(report: dict, r18_pair) -> None:
    base, patched = r18_pair
    before, after = report["models"]
    assert report["schema_version"] == SCHEMA_VERSION == 2
    assert before["parameters"] == sum(p.numel() for p in base.parameters()) == 11_689_512
    assert after["parameters"] - before["parameters"] == report["delta"]["parameters"] == 36  # ECA k=3,3,5,5,5,5,5,5
    sites = report["sites"]
    assert [row["site"] for row in sites] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                                              "layer4.0", "layer4.1"]
    assert sum(row["parameters"] for row in sites) == report["delta"]["parameters"]
    assert [row["input_shape"] for row in sites[::2]] == [[64, 8, 8], [128, 4, 4], [256, 2, 2], [512, 1, 1]]
    # the blocks' own counts are exactly what surgery added: MACs of the 1-D convs, and FLOPs of pooling, sigmoid, mul
    assert sum(row["macs"] for row in sites) == report["delta"]["macs"] > 0
    assert sum(row["flops"] for row in sites) == report["delta"]["flops"] > 2 * report["delta"]["macs"]
    # conv1d, mean over 8x8 (a sum, then a division per channel), sigmoid, x * gate
    assert sites[0]["flops"] == 2 * 64 * 3 + 64 * 64 + 64 + 64 + 64 * 64
    assert sites[0]["flops_share"] == pytest.approx(sites[0]["flops"] / after["flops"])
    assert before["uncounted_ops"] == after["uncounted_ops"] == {}
    assert after["operators"]["aten.sigmoid"]["flops"] == sum(row["input_shape"][0] for row in sites)


def test_latency_memory_and_environment_are_recorded(report: dict) -> None:
    env = report["environment"]
    assert env["threads"] == 1 and env["device"] == "cpu" and env["machine"]
    assert env["torch"] == torch.__version__.split("+")[0] and env["attn_surgeon"] == surgeon.__version__
    assert report["input"] == {"shape": list(SHAPE), "image": [3, 32, 32], "batch_sizes": [1, 2]}
    for model in report["models"]:
        assert [entry["batch_size"] for entry in model["latency"]] == [1, 2]
        for entry in model["latency"]:
            assert 0 < entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"]
            assert entry["images_per_s"] == pytest.approx(entry["batch_size"] * 1000 / entry["median_ms"])
            assert (entry["runs"], entry["warmup"]) == (3, 1)
        assert [m["batch_size"] for m in model["peak_memory"]] == [1, 2]
        assert all(m["bytes"] > 0 for m in model["peak_memory"])
    ratios = report["delta"]["latency"]
    assert ratios[0]["ratio"] == pytest.approx(report["models"][1]["latency"][0]["median_ms"]
                                               / report["models"][0]["latency"][0]["median_ms"])
    assert "3 timed forward passes" in report["conventions"]["latency"] and "1 thread " in report["conventions"][
        "latency"]


def test_each_block_is_timed_alone(report: dict) -> None:
    timing, sites = report["site_timing"], report["sites"]
    assert all(row["latency_ms"] > 0 for row in sites)
    assert timing["batch_size"] == 1 and timing["untimed"] == []
    assert timing["blocks_ms"] == pytest.approx(sum(row["latency_ms"] for row in sites))
    model_ms = report["models"][1]["latency"][0]["median_ms"]
    assert sites[0]["latency_share"] == pytest.approx(sites[0]["latency_ms"] / model_ms)
    assert timing["measured_delta_ms"] == pytest.approx(model_ms - report["models"][0]["latency"][0]["median_ms"])
    assert "timed alone" in report["conventions"]["site_latency"]


def test_block_inputs_are_captured_and_hooks_removed(r18_pair) -> None:
    _, patched = r18_pair
    probe = torch.randn(2, 3, 32, 32)
    captured = capture_block_inputs(patched, ["layer2.0.eca_residual", "no.such.module"], (probe,))
    assert list(captured) == ["layer2.0.eca_residual"]
    args, kwargs = captured["layer2.0.eca_residual"]
    assert args[0].shape == (2, 128, 4, 4) and kwargs == {}
    assert all(not module._forward_pre_hooks for module in patched.modules())
    times = time_blocks(patched, ["layer1.0.eca_residual", "fc"], (probe,), runs=2, warmup=0)
    assert times["layer1.0.eca_residual"].runs == 2 and times["fc"].batch_size == 2


def test_deviation_measures_the_surgery_and_says_when_weights_differ(report: dict) -> None:
    deviation = report["deviation"]
    assert deviation["max_abs"] > 0 and deviation["relative"] > 0  # paper init changes the function
    assert deviation["weights"] == {"common": 122, "differ": 0}
    assert "surgery alone" in deviation["note"]
    torch.manual_seed(1)
    other_draw = torchvision.models.resnet18()
    torch.manual_seed(2)
    patched = surgeon.insert(torchvision.models.resnet18(), "eca", input_shape=SHAPE)  # identity init
    unrelated = profile_models(other_draw, patched, input_shape=SHAPE, latency=NO_TIMING)
    assert unrelated["deviation"]["weights"]["differ"] > 0 and "different weights" in unrelated["deviation"]["note"]
    adopted = profile_models(other_draw, patched, input_shape=SHAPE, latency=NO_TIMING, share_weights=True)
    assert adopted["deviation"]["weights"]["adopted"] == 122 and adopted["deviation"]["weights"]["differ"] == 0
    assert adopted["deviation"]["max_abs"] == 0  # identity init: exactly the original function


def test_counts_only_report_has_no_timings() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    report = profile_models(model, input_shape=SHAPE, latency=NO_TIMING)
    assert report["input"]["batch_sizes"] == [] and report["models"][0]["latency"] == []
    assert "latency" not in report["conventions"] and "delta" not in report and report["sites"] == []
    assert "not measured" in report["notes"][0]
    assert "median (p10–p90)" not in render_text(report, "table")


def test_uncounted_operator_is_listed_by_name_in_every_format() -> None:
    torch.manual_seed(0)
    patched = surgeon.insert(torchvision.models.resnet18(), f"{__name__}:SortGate", after="layer4.*",
                             position="after", input_shape=SHAPE)
    report = profile_models(patched, input_shape=SHAPE, latency=NO_TIMING)
    assert report["models"][0]["uncounted_ops"] == {"aten.sort": 2}
    assert [row["uncounted_calls"] for row in report["sites"]] == [1, 1]
    for fmt in ("table", "md", "html"):
        assert "aten.sort" in render_text(report, fmt), fmt
    assert "* the block ran an uncounted op" in render_text(report, "table")


# --- formats ----------------------------------------------------------------------------------------------------


def test_json_is_strict_and_round_trips(report: dict) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    text = render_text(report, "json")
    assert json.loads(text, parse_constant=refuse) == report


def test_table_fits_120_columns_without_truncation(report: dict) -> None:
    text = render_text(report, "table", width=120)
    assert "…" not in text  # rich truncates a cell that does not fit with an ellipsis
    assert max(len(line) for line in text.splitlines() if not line.startswith(("Output", "Latency:", "Time alone",
                                                                                 "MACs:", "8 inserted"))) <= 120
    for expected in ("torchvision:resnet18 vs r18_eca.pt", "11,689,512", "+36", "layer4.1", "×", "1 thread"):
        assert expected in text, expected


def test_markdown_tables_are_well_formed(report: dict) -> None:
    text = render_text(report, "md")
    assert text.startswith("# Profile of torchvision:resnet18 vs r18_eca.pt\n")
    tables: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    assert len(tables) == 4  # sizes, latency, inserted blocks, operators
    for table in tables:
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table}
        assert len(widths) == 1, table
        assert re.fullmatch(r"\| (?:(?:---|--:) \| )*(?:---|--:) \|", table[1])
    assert "**+36**" in text and "```text\nMACs:" in text


# --- the command --------------------------------------------------------------------------------------------------


def _paper_eca_k3557(model: nn.Module) -> nn.Module:
    rules = [Rule(parse_site_spec("bottleneck", stage=str(stage)), "eca", "insert", None, {"k_size": k}, "paper",
                  name=f"eca stage {stage}") for stage, k in zip((1, 2, 3, 4), (3, 5, 5, 7), strict=True)]
    return surgeon.run_surgery(model, rules, input_shape=SHAPE, base="timm:resnet50").model


def test_profile_timm_resnet50_against_its_eca_patches(tmp_path: Path) -> None:
    """The issue's check: a parameter delta of exactly 86 (adaptive kernels 5,5,5,7), or 80 with kernels 3,5,5,7."""
    adaptive = tmp_path / "r50_eca.pt"
    result = run("insert", "timm:resnet50", "--block", "eca", "--init", "paper", "-o", str(adaptive),
                 "--input-shape", "1,3,32,32")
    assert result.exit_code == 0, result.output
    result = run("profile", "timm:resnet50", "--compare", str(adaptive), "--runs", "0", "--input-shape", "1,3,32,32")
    assert result.exit_code == 0, result.output
    assert re.search(r"difference +\+86 +\+86 ", result.stdout), result.stdout
    assert "16 blocks" in result.stdout

    torch.manual_seed(0)
    k3557 = tmp_path / "r50_eca_k3557.pt"
    surgeon.save(_paper_eca_k3557(surgeon.io.build_arch("timm:resnet50")), k3557)
    result = run("profile", "timm:resnet50", "--compare", str(k3557), "--runs", "0", "--input-shape", "1,3,32,32",
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["delta"]["parameters"] == 80
    assert [row["parameters"] for row in report["sites"]] == [3] * 3 + [5] * 4 + [5] * 6 + [7] * 3
    assert report["deviation"]["weights"]["adopted"] > 0  # the spec took the checkpoint's original weights


def test_profile_command_formats_and_files(tmp_path: Path) -> None:
    base = ["profile", "torchvision:resnet18", "--runs", "1", "--warmup", "0", "--max-time", "0", "--input-shape",
            "1,3,32,32", "--batch-sizes", "1,2"]
    as_json = run(*base, "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["input"]["batch_sizes"] == [1, 2] and report["environment"]["threads"] == torch.get_num_threads()
    html = tmp_path / "r.html"
    result = run(*base, "-o", str(html))
    assert result.exit_code == 0 and result.stdout.strip() == f"Wrote {html}"
    assert html.read_text().startswith("<!DOCTYPE html>")
    result = run(*base, "-o", str(html))
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {html}: exists; pass --force to overwrite it"
    markdown = run(*base, "--format", "md", "--threads", "1")
    assert markdown.exit_code == 0 and markdown.stdout.startswith("# Profile of torchvision:resnet18")
    assert "1 thread ·" in markdown.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--json", "--format", "md"), "--json contradicts --format md"),
    (("--batch-sizes", "1,0"), "batch sizes must be positive integers"),
    (("--batch-sizes", "a"), "expected comma-separated batch sizes"),
    (("--device", "tpu"), "expected cpu, cuda or cuda:N"),
])
def test_profile_bad_usage_exits_2(args: tuple[str, ...], message: str) -> None:
    result = run("profile", "torchvision:resnet18", *args)
    assert result.exit_code == 2 and message in result.stderr


def test_profile_cuda_without_a_gpu_is_bad_usage() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run("profile", "torchvision:resnet18", "--device", "cuda")
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


# --- the report surgery writes --------------------------------------------------------------------------------


def _surgery(tmp_path: Path, name: str, profile: str) -> Path:
    output = tmp_path / f"{name}.pt"
    run_rules_command("torchvision:resnet18", [Rule(parse_site_spec("bottleneck"), "se", init="paper")],
                      load=LoadOptions(), input_shape=SHAPE, output=output, suffix="se", dry_run=False, force=False,
                      as_json=True, profile=profile)
    return output


def test_surgery_writes_the_profile_report_beside_the_checkpoint(tmp_path: Path, capsys) -> None:
    counts = json.loads(_surgery(tmp_path, "counts", "counts").with_suffix(".report.json").read_text())
    profile = counts["profile"]
    assert profile["schema_version"] == SCHEMA_VERSION and profile["models"][0]["name"] == "torchvision:resnet18"
    assert profile["delta"]["parameters"] == counts["parameters"]["added"] == sum(r["parameters"]
                                                                                  for r in profile["sites"])
    assert profile["deviation"]["max_abs"] == counts["verification"]["max_abs_diff"]
    assert profile["input"]["batch_sizes"] == [] and "--profile full" in profile["notes"][0]
    page = (tmp_path / "counts.report.html").read_text()
    assert "Inserted blocks" in page and 'data-chart="sites"' in page and 'data-chart="latency"' not in page

    full = json.loads(_surgery(tmp_path, "full", "full").with_suffix(".report.json").read_text())["profile"]
    assert full["input"]["batch_sizes"] == [1] and full["models"][1]["latency"][0]["runs"] == 10
    assert all(row["latency_ms"] > 0 for row in full["sites"])
    assert full["delta"]["parameters"] == profile["delta"]["parameters"]
    # the full profile times both models and runs them in reduced precision, as `profile MODEL --compare` does
    assert full["sites"][0].keys() == profile["sites"][0].keys()
    assert full.keys() - profile.keys() == {"site_timing", "precision"}

    off = json.loads(_surgery(tmp_path, "off", "off").with_suffix(".report.json").read_text())
    assert off["profile"] is None and not (tmp_path / "off.report.html").exists()
    capsys.readouterr()


def test_surgery_refuses_an_existing_html_report(tmp_path: Path) -> None:
    (tmp_path / "out.report.html").write_text("precious")
    result = run("insert", "torchvision:resnet18", "--block", "se", "-o", str(tmp_path / "out.pt"), "--input-shape",
                 "1,3,32,32")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'out.report.html'}: exists; pass --force to overwrite it"
    assert (tmp_path / "out.report.html").read_text() == "precious" and not (tmp_path / "out.pt").exists()
