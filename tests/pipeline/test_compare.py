"""surgeon.compare: one row per candidate, misfits as rows, baselines, sorting, every format and the JSON schema."""

from __future__ import annotations

import copy
import gc
import importlib
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import surgeon
from surgeon import CompareOptions, LatencyOptions
from surgeon.errors import ModelForwardError, NoMatchError, SurgeonError
from surgeon.exportable import CHECKS, check_exports
from surgeon.profile import render_text, write_report
from surgeon.profile.comparison import SORT_KEYS, Comparison
from tests._util import REPO

NO_TIMING = LatencyOptions(runs=0)

SHAPE = (1, 3, 64, 64)  # layer4 at 2x2: a training step at batch 1 has more than one value per channel
SCHEMA = json.loads((REPO / "docs" / "compare.schema.json").read_text())


class _Alive:
    """The comparison's ``observe`` hook: keeps a weak reference to every model it creates, and at each new one
    records how many models (the reference included) are alive."""

    def __init__(self, reference: nn.Module) -> None:
        self.refs = [weakref.ref(reference)]
        self.most = 0

    def __call__(self, model: nn.Module) -> None:
        gc.collect()
        self.refs.append(weakref.ref(model))
        self.most = max(self.most, sum(ref() is not None for ref in self.refs))


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def run(r18: nn.Module) -> dict[str, Any]:
    state = {key: value.clone() for key, value in r18.state_dict().items()}
    alive = _Alive(r18)
    steps: list[tuple[int, int, str]] = []
    options = CompareOptions(blocks=["se", "eca", "sk"], rules=["eca_resnet"], baselines=["torchvision:resnet34"],
                             input_shape=SHAPE, batch_sizes=(1, 2), exports="off", name="torchvision:resnet18",
                             latency=LatencyOptions(runs=1, warmup=0, threads=1, max_time=0))
    result = surgeon.compare(r18, options, observe=alive,
                             progress=lambda done, total, message: steps.append((done, total, message)))
    return {"result": result, "alive": alive, "steps": steps, "state": state}


def _rows(result: Comparison) -> dict[str, Any]:
    return {row.name: row for row in result.rows}


# --- the library result -------------------------------------------------------------------------------------------


def test_each_candidate_is_a_row_measured_against_the_model(run: dict, r18: nn.Module) -> None:
    result: Comparison = run["result"]
    rows = _rows(result)
    assert list(rows) == ["se", "eca", "sk", "eca_resnet", "torchvision:resnet34"]  # in the order measured
    reference = result.reference
    assert reference.parameters == sum(p.numel() for p in r18.parameters())
    for name in ("se", "eca", "eca_resnet"):
        row = rows[name]
        assert row.status == "ok" and row.sites == 8
        assert row.parameters_delta == row.parameters - reference.parameters > 0
        assert row.flops_delta == row.flops - reference.flops > 0 and row.macs_delta >= 0
        assert row.deviation == {"max_abs": 0.0, "relative": 0.0}  # identity init: the same function at insertion
        assert [(t.batch_size, t.mode) for t in row.latency] == [(1, "eval"), (1, "train"), (2, "eval"), (2, "train")]
        assert all(t.ratio > 0 and t.rounds == 1 and t.ratio_p10 <= t.ratio <= t.ratio_p90 for t in row.latency)
        assert {(m.batch_size, m.mode) for m in row.peak_memory} == {(1, "eval"), (1, "train"), (2, "eval"),
                                                                     (2, "train")}
        assert row.exports is None  # exports="off"
    assert rows["eca"].parameters_delta == rows["eca_resnet"].parameters_delta  # the preset is ECA with identity
    assert result.batch_sizes == [1, 2] and result.input_shape == list(SHAPE)
    assert result.placement == "--after bottleneck"


def test_a_block_that_cannot_go_there_is_a_row_with_its_reason(run: dict) -> None:
    row = _rows(run["result"])["sk"]
    assert row.status == "misfit" and row.kind == "block"
    assert row.reason == ("'sk' is a swap block (it replaces a conv unit); use swap (`attn-surgeon swap --with sk`) "
                          "to swap it in")
    assert row.parameters is None and row.latency == [] and "\n" not in row.reason


def test_baselines_are_measured_in_the_same_run(run: dict) -> None:
    row = _rows(run["result"])["torchvision:resnet34"]
    assert row.kind == "baseline" and row.status == "ok" and row.deviation is None
    assert row.parameters == 21_797_672 and row.parameters_delta == 21_797_672 - 11_689_512
    assert {t.mode for t in row.latency} == {"eval", "train"}


def test_add_only_comes_from_the_recipe_and_every_ratio_has_its_interval(run: dict) -> None:
    rows = _rows(run["result"])
    assert rows["se"].add_only and rows["eca"].add_only and rows["eca_resnet"].add_only  # blocks inserted only
    assert not rows["torchvision:resnet34"].add_only and not rows["sk"].add_only  # another model; a misfit
    for row in rows.values():
        for timing in row.latency:
            assert timing.ratio_low <= timing.ratio <= timing.ratio_high
            assert timing.stopped == "floor" and timing.rounds == 1  # max_time=0: exactly the rounds asked for
            assert "1 round cannot tell" in timing.unstable  # one round is no measure of precision
    assert run["result"].environment["load_average"].keys() == {"before", "after"}


def test_at_most_two_models_are_alive_and_the_model_is_unchanged(run: dict, r18: nn.Module) -> None:
    alive: _Alive = run["alive"]
    assert len(alive.refs) == 1 + 4  # the reference, se, eca, the preset, the baseline (sk is refused up front)
    assert alive.most == 2
    gc.collect()
    assert sum(ref() is not None for ref in alive.refs) == 1  # only the reference is left
    assert all(torch.equal(value, run["state"][key]) for key, value in r18.state_dict().items())
    assert not r18.training and all(p.grad is None for p in r18.parameters())
    assert surgeon.recipe_of(r18) is None


def test_progress_counts_every_candidate(run: dict) -> None:
    steps = run["steps"]
    assert steps[0] == (0, 5, "Measuring torchvision:resnet18") and steps[-1] == (5, 5, "done")
    assert [done for done, _, _ in steps[1:-1]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("key", list(SORT_KEYS))
def test_sorting_puts_misfits_last(run: dict, key: str) -> None:
    rows = run["result"].sorted_rows(key)
    assert rows[-1].name == "sk"
    values = [row.sort_value(key) for row in rows[:-1]]
    assert values == sorted(values)


def test_sort_by_parameters_orders_by_parameters_added(run: dict) -> None:
    names = [row.name for row in run["result"].sorted_rows("params")]
    assert names == ["eca", "eca_resnet", "se", "torchvision:resnet34", "sk"]  # a tie goes by name


def test_the_default_candidates_are_the_registry_s_insert_blocks(r18: nn.Module,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    module = importlib.import_module("surgeon.pipeline.compare")  # the package's `compare` is the function
    monkeypatch.setattr(module._Context, "candidate",
                        lambda self, label, kind, make_rules: seen.append(label) or surgeon.profile.comparison
                        .CompareRow(label, kind, status="misfit", reason="skipped"))
    surgeon.compare(r18, CompareOptions(input_shape=SHAPE, latency=NO_TIMING, exports="off"))
    assert seen == [info.name for info in surgeon.list_blocks("insert")] and "sk" not in seen


def test_errors_of_the_model_itself_stop_the_comparison(r18: nn.Module) -> None:
    with pytest.raises(NoMatchError, match="no site matches"):
        surgeon.compare(r18, CompareOptions(["se"], after="layer9.*", input_shape=SHAPE, latency=NO_TIMING,
                                            exports="off"))
    with pytest.raises(ModelForwardError):
        surgeon.compare(r18, CompareOptions(["se"], input_shape=(1, 5, 32, 32), latency=NO_TIMING, exports="off"))
    with pytest.raises(SurgeonError, match="unknown sort key"):
        surgeon.compare(r18, CompareOptions(["se"], sort="speed"))
    with pytest.raises(SurgeonError, match="unknown export scope"):
        surgeon.compare(r18, CompareOptions(["se"], exports="all"))  # type: ignore[arg-type]


def test_bad_block_options_and_unknown_names_are_rows(r18: nn.Module) -> None:
    result = surgeon.compare(r18, CompareOptions(["ecaa", "se"], stage="4", input_shape=SHAPE, latency=NO_TIMING,
                                                  exports="off"))
    rows = _rows(result)
    assert rows["ecaa"].status == "misfit" and "unknown block 'ecaa' (did you mean 'eca'?)" in rows["ecaa"].reason
    assert rows["se"].status == "ok" and rows["se"].sites == 2 and rows["se"].latency == []
    assert result.batch_sizes == [] and "runs=0" in result.notes[-1]


# --- exportability ----------------------------------------------------------------------------------------------


class _DataDependent(nn.Module):
    """A block whose forward branches on a value: dynamo breaks the graph there, torch.export refuses it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 100:  # never true on a probe: the identity either way
            return x * 2
        return x + x * self.scale


def test_export_checks_say_ok_or_why_in_one_line() -> None:
    good = check_exports(surgeon.get_block("eca").build(16, init="identity"), (1, 16, 8, 8))
    assert good == dict.fromkeys(CHECKS, "ok")
    bad = check_exports(_DataDependent(16), (1, 16, 8, 8), ["torch.export", "torch.compile"])
    assert set(bad) == {"torch.export", "torch.compile"}
    assert bad["torch.compile"].startswith("1 graph break:") and bad["torch.export"] != "ok"
    assert all("\n" not in reason and len(reason) <= 200 for reason in bad.values())


def test_each_distinct_block_is_checked_once(r18: nn.Module) -> None:
    result = surgeon.compare(r18, CompareOptions(["eca"], stage="4", input_shape=SHAPE, latency=NO_TIMING,
                                                  exports="blocks"))
    exports = _rows(result)["eca"].exports
    assert exports.scope == "blocks" and exports.checked == 1  # layer4.0 and layer4.1: same block, same input
    assert exports.results == dict.fromkeys(CHECKS, "ok")
    assert "each distinct inserted block" in result.conventions["exports"]


# --- formats and the JSON schema ----------------------------------------------------------------------------------


def _validate(value: Any, schema: dict, path: str = "$") -> None:
    """The subset of JSON Schema that docs/compare.schema.json uses."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
                  "string": lambda v: isinstance(v, str), "null": lambda v: v is None,
                  "boolean": lambda v: isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert any(checks[name](value) for name in names), f"{path}: {value!r} is not {types}"
    if "const" in schema:
        assert value == schema["const"], path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and isinstance(value, (int, float)):
        assert value >= schema["minimum"], path
    if isinstance(value, dict):
        missing = set(schema.get("required", ())) - set(value)
        assert not missing, f"{path}: missing {missing}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _validate(item, properties[key], f"{path}.{key}")
            elif extra is False:
                raise AssertionError(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _validate(item, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{index}]")


def test_json_matches_the_documented_schema(run: dict) -> None:
    document = json.loads(render_text(run["result"], "json"))
    _validate(document, SCHEMA)
    assert [row["name"] for row in document["rows"]][-1] == "sk"  # rows in sort order, misfits last


def test_the_schema_validator_rejects_what_it_should(run: dict) -> None:
    document = run["result"].to_dict()
    broken = copy.deepcopy(document)
    broken["rows"][0]["latency"][0]["mode"] = "inference"
    with pytest.raises(AssertionError, match="not in"):
        _validate(broken, SCHEMA)
    broken = copy.deepcopy(document)
    del broken["rows"][0]["deviation"]
    with pytest.raises(AssertionError, match="missing"):
        _validate(broken, SCHEMA)


@pytest.mark.parametrize("fmt", ["table", "md", "html", "json"])
def test_every_format_names_every_row_and_the_reason(run: dict, fmt: str, tmp_path: Path) -> None:
    text = render_text(run["result"], fmt)
    for name in ("se", "eca", "eca_resnet", "torchvision:resnet34", "sk"):
        assert name in text
    assert "is a swap block" in text
    path = tmp_path / f"compare.{fmt}"
    write_report(run["result"], path, fmt)
    assert path.read_text() == text
    with pytest.raises(SurgeonError, match="exists; pass --force"):
        write_report(run["result"], path, fmt)


def test_markdown_table_is_well_formed(run: dict) -> None:
    lines = [line for line in render_text(run["result"], "md").splitlines() if line.startswith("|")]
    widths = {line.count(" | ") for line in lines}
    assert len(widths) == 1 and len(lines) == 2 + 5 + 1  # header, rule, five rows, the reference
