"""The benchmark scripts run end to end in their ``--quick`` configuration and print their ratio lines.

No timing is asserted (the machine is shared and noisy); what is checked is that each script builds what it
compares, finds both sides equal where it says so, counts the sites it claims, and prints one ratio per row with its
goal mark. The timing helpers they share are checked on known numbers.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RATIO = r"(\d+\.\d{3}) \[(\d+\.\d{3}), (\d+\.\d{3})\]"
MARK = r"(ok|noise|MISSED)"


@pytest.fixture
def run_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run ``benchmarks/NAME`` as ``__main__`` in this process (no second import of torch) and return its stdout."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()

    def run(name: str, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [name, *args])
        runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
        return capsys.readouterr().out

    # The scripts raise dynamo's recompile limit; torch's own scoped patch restores it (monkeypatch would delete
    # the attribute on teardown, which hides the option from every later torch.compile).
    with torch._dynamo.config.patch(recompile_limit=torch._dynamo.config.recompile_limit):
        yield run
    torch.set_num_threads(threads)


def _row(out: str, *leading: str) -> re.Match[str]:
    pattern = r"^" + r"\s+".join(re.escape(cell) for cell in leading) + r"\s.*?" + RATIO + r"\s+" + MARK
    match = re.search(pattern, out, flags=re.MULTILINE)
    assert match, f"no ratio row for {leading} in:\n{out}"
    return match


def _machine_line_first(out: str) -> None:
    assert re.match(r".+, \d+ cores, torch \S+, \d+ thread\(s\), (cpu|wall) clock, load average", out.splitlines()[0])


def test_surgery_time_quick(run_script) -> None:
    out = run_script("surgery_time.py", "--quick")
    _machine_line_first(out)
    sections = re.split(r"^probe 1x3x(\d+)x\1$", out, flags=re.MULTILINE)
    assert sections[1::2] == ["64", "32"], out  # one table per probe size, in the order asked
    for table in sections[2::2]:
        for model, sites in (("resnet18", "8"), ("resnet34", "16")):
            match = _row(table, model, sites)  # the net ratio with its goal mark
            net, low, high = (float(match.group(i)) for i in (1, 2, 3))
            assert low <= net <= high
            rest = re.match(r"\s+" + RATIO + r"\s+(\d+\.\d{3})$", table[match.end():].split("\n", 1)[0])
            assert rest, f"no gross ratio and forward floor after the net ratio of {model} in:\n{table}"
            gross, forwards = float(rest.group(1)), float(rest.group(4))
            # one round: the net ratio is the gross one less the two forwards (each rounded to 3 decimals)
            assert forwards > 0 and gross - forwards - net == pytest.approx(0, abs=2e-3)
        assert re.search(r"^fit net of two forwards: ms = -?\d+\.\d \+ -?\d+\.\d\d ms/site x sites, R\^2 = \S+ "
                         r"over 2 models$", table, flags=re.MULTILINE)
        assert re.search(r"^fit gross: surgery ms = -?\d+\.\d \+ -?\d+\.\d\d ms/site x sites, R\^2 = \S+$", table,
                         flags=re.MULTILINE)


def test_blocks_quick_every_pair_equal(run_script) -> None:
    from _timm_pairs import PAIRS

    out = run_script("blocks.py", "--quick")
    _machine_line_first(out)
    for name in PAIRS:
        for shape in ("2x32x8x8", "2x64x4x4"):
            row = _row(out, name, shape)
            rel_diff = float(out[row.end():].split("\n", 1)[0].split()[-1])
            assert rel_diff < 1e-5, f"{name} at {shape}: ours and timm's differ by {rel_diff}"


def test_blocks_quick_times_every_new_block_at_two_shapes(run_script) -> None:
    out = run_script("blocks.py", "--quick", "--blocks")
    _machine_line_first(out)
    table = out.split("against our SE at the same shape", 1)[1]
    for name in ("ema", "scsa", "mlca", "lska", "lsk", "sa", "cpca", "gam", "ela"):
        for shape in ("2x32x8x8", "2x64x4x4"):
            match = re.search(rf"^{name}\s+{shape}\s+(\d+\.\d)\s+(\d+\.\d)\s+{RATIO}\s+(.+)$", table,
                              flags=re.MULTILINE)
            assert match, f"no row for {name} at {shape} in:\n{table}"
            options = match.group(6)
            if (name, shape) == ("sa", "2x32x8x8"):  # SA's 64 groups need 128 channels: the proposed option
                assert re.fullmatch(r"groups=\d+", options), options
            if (name, shape) == ("scsa", "2x64x4x4"):  # a 4x4 map under SCSA's 7x7 window: the window is clipped
                assert options == "defaults"


def test_block_costs_counts_a_block_on_resnet50(run_script) -> None:
    out = run_script("block_costs.py", "--blocks", "mlca", "sk", "--runs", "0", "--shape", "1x3x64x64")
    _machine_line_first(out)
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+)$", out, flags=re.MULTILINE))
    assert rows["mlca"].startswith("residual | +172 | ")  # 2k per bottleneck, k = 5, 5, 5, 7 by stage: 2 * 86
    assert rows["sk"].startswith("3x3 unit | +")


def test_runtime_overhead_quick(run_script) -> None:
    out = run_script("runtime_overhead.py", "--quick", "--blocks", "cbam", "sk")
    _machine_line_first(out)
    for name in ("cbam", "sk"):
        row = _row(out, name, "eager", "1")
        ours_over_plain, flops, rel_diff = (float(v) for v in out[row.end():].split("\n", 1)[0].split())
        # float32 rounding through 16 blocks (SK pools after the path BN instead of after the path sum)
        assert rel_diff < 1e-4, f"{name}: patched resnet50 and timm's native network differ by {rel_diff}"
        assert flops > 1.0 and ours_over_plain > 0


def test_memory_quick(run_script) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc/self/status")
    out = run_script("memory.py", "--quick")
    match = re.search(r"^resnet18\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+\.\d{3})\s+" + MARK, out, flags=re.MULTILINE)
    assert match, out
    weights, built, peak = (int(match.group(i)) for i in (1, 2, 3))
    assert weights == 45 and peak >= built  # resnet18: 11.7M float32 parameters and BN buffers


# --- the shared helpers ------------------------------------------------------------------------------------------

def test_paired_ratio_uses_per_round_ratios() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _timing import linear_fit, paired_ratio, quantile
    finally:
        sys.path.remove(str(BENCHMARKS))
    # round 3 is slow for both (a noisy neighbour): the paired ratio stays 2, the ratio of medians would not
    ratio = paired_ratio([2.0, 4.0, 20.0, 2.2], [1.0, 2.0, 10.0, 1.1])
    assert (ratio.value, ratio.low, ratio.high) == (2.0, 2.0, 2.0)
    assert ratio.numerator_s == 3.1 and ratio.denominator_s == 1.55
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.25) == 1.75
    slope, intercept, r2 = linear_fit([8, 16, 50], [110.0, 190.0, 530.0])
    assert slope == pytest.approx(10.0) and intercept == pytest.approx(30.0) and r2 == pytest.approx(1.0)
    assert linear_fit([8, 8], [1.0, 2.0])[2] != linear_fit([8, 8], [1.0, 2.0])[2]  # NaN: no spread in x


def test_goal_mark_separates_noise_from_a_miss() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _timing import Ratio, goal_mark
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert goal_mark(Ratio(0.99, 0.95, 1.10, 1.0, 1.0), 1.0) == "ok"
    assert goal_mark(Ratio(1.05, 0.97, 1.10, 1.0, 1.0), 1.0) == "noise"
    assert goal_mark(Ratio(1.05, 1.01, 1.10, 1.0, 1.0), 1.0) == "MISSED"
    assert (goal_mark(1.25, 1.3), goal_mark(1.35, 1.3)) == ("ok", "MISSED")


def test_alternate_rotates_the_first_contender() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _timing import alternate
    finally:
        sys.path.remove(str(BENCHMARKS))
    calls: list[str] = []
    samples = alternate({name: (lambda name=name: calls.append(name)) for name in "abc"}, rounds=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3, "c": 3}


def test_steady_malloc_re_runs_the_script_once_with_the_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _timing
    finally:
        sys.path.remove(str(BENCHMARKS))
    if _timing.platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc tunables")
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(_timing.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(sys, "argv", ["blocks.py", "--rounds", "3"])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    _timing.use_steady_malloc(False)
    assert calls == [] and _timing.allocator_line() == "malloc: the system's default settings"
    _timing.use_steady_malloc(True)
    (path, argv, env), = calls
    assert path == sys.executable and argv == [sys.executable, "blocks.py", "--rounds", "3"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + _timing.STEADY_MALLOC  # the user's kept
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])
    _timing.use_steady_malloc(True)  # already under the tunables: runs on
    assert len(calls) == 1 and "freed memory kept" in _timing.allocator_line()


def test_compare_time_quick(run_script) -> None:
    out = run_script("compare_time.py", "--quick")
    assert re.match(r".+, \d+ cores, torch \S+, load average", out.splitlines()[0])
    assert "compare torchvision:resnet18 --blocks se,eca --input-shape 1,3,64,64" in out
    assert "2 of 2 candidates measured" in out
    assert re.search(r"^  wall time \d+\.\d s \(goal < 180 s\): (ok|MISSED)$", out, flags=re.MULTILINE), out
