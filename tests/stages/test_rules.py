"""The rules language: exact error messages with locations, precedence, presets reproducing the papers' networks,
fuzzing of the loader, ``surgeon.apply`` and ``attn-surgeon apply``."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import surgeon
from surgeon.blocks import eca_kernel_size, list_blocks
from surgeon.cli import _Group, cli
from surgeon.cli.apply import apply as apply_command
from surgeon.errors import RuleError
from surgeon.match import Rule, make_plan
from surgeon.rewrite import rewrite
from surgeon.rules import MAX_BYTES, PRESET_DIR, list_presets, load_rules, locate, parse_rules
from surgeon.sites import Site, find_sites

LOCATED = re.compile(r"^[^\n]+:\d+:\d+: ")
RESNET50_PARAMS = 25_557_032


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Several helpers share two cores; oversubscribed intra-op threads make every conv ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def doc(*rule_lines: str) -> str:
    return "version: 1\nrules:\n" + "".join(line + "\n" for line in rule_lines)


def error_of(text: str | bytes, file: str = "rules/x.yaml", **kwargs) -> str:
    with pytest.raises(RuleError) as info:
        parse_rules(text, file, **kwargs)
    return str(info.value)


VALID_MATCH_KEYS = ("kind, class, name, regex, kernel, stride, groups, dilation, in_channels, out_channels, stage, "
                    "index, every, offset, exclude")

# (document, exact message)
ERRORS = [
    (doc("  - name: eca-late", "    match: {kind: block, stage: 4}", "    insert:", "      block: ecaa"),
     "rules/x.yaml:6:14: rule 'eca-late': unknown block 'ecaa' (did you mean 'eca'?)"),
    (doc("  - name: late", "    match: {kind: block, stagee: 4}", "    insert: {block: eca}"),
     (f"rules/x.yaml:4:26: rule 'late': unknown key 'stagee' in match (did you mean 'stage'?); valid keys: "
     f"{VALID_MATCH_KEYS}")),
    ("version: 1\nrule:\n  - match: {kind: block}\n",
     ("rules/x.yaml:2:1: unknown key 'rule' in the document (did you mean 'rules'?); valid keys: version, "
     "description, init, rules")),
    (doc("  - name: se-all", "    match: {kind: block}", "    insert: {block: se, args: {ratio: 0.25}}"),
     ("rules/x.yaml:5:32: rule 'se-all': block 'se' has no option 'ratio'; valid options: act_layer, gate_layer, "
     "init, rd_channels, rd_divisor, rd_ratio")),
    (doc("  - name: se-all", "    match: {kind: block}", "    insert: {block: se, args: {rd_ratio: high}}"),
     "rules/x.yaml:5:42: rule 'se-all': block 'se' option 'rd_ratio' expects float, got str 'high'"),
    (doc("  - name: cc", "    match: {kind: block}", "    insert: {block: ccnet, args: {recurrence: 2.5}}"),
     "rules/x.yaml:5:47: rule 'cc': block 'ccnet' option 'recurrence' expects int, got float 2.5"),
    (doc("  - name: se-all", "    match: {kind: block}", "    insert: {block: se, args: {init: paper}}"),
     "rules/x.yaml:5:32: rule 'se-all': init is set next to block (init: paper), not inside args"),
    ("rules:\n  - match: {kind: block}\n    insert: {block: se}\n",
     "rules/x.yaml:1:1: missing 'version: 1' at the top"),
    ("version: 2\nrules: []\n", "rules/x.yaml:1:10: unsupported version '2'; this attn-surgeon reads version 1"),
    ("version: true\nrules: []\n", "rules/x.yaml:1:10: unsupported version 'true'; this attn-surgeon reads version 1"),
    ("version: 1\n", "rules/x.yaml:1:1: missing 'rules:' (a list of rules)"),
    ("version: 1\nrules: []\n", "rules/x.yaml:2:8: rules must be a non-empty list, one '- match: ...' item per rule"),
    ("", "rules/x.yaml:1:1: empty rules file; it needs 'version: 1' and 'rules:'"),
    ("- 1\n- 2\n", "rules/x.yaml:1:1: the document must be a mapping of keys to values"),
    (doc("  - name: both", "    match: {kind: block}", "    insert: {block: se}", "    replace: {block: sk}"),
     "rules/x.yaml:3:5: rule 'both': a rule needs exactly one action, 'insert:' or 'replace:' (it has both)"),
    (doc("  - name: none", "    match: {kind: block}"),
     "rules/x.yaml:3:5: rule 'none': a rule needs exactly one action, 'insert:' or 'replace:'"),
    (doc("  - insert: {block: se}"), ("rules/x.yaml:3:5: rule '#1': a rule needs 'match:' (a selector such as "
                                  "{kind: block})")),
    (doc("  - match: {}", "    insert: {block: se}"),
     ("rules/x.yaml:3:12: rule '#1': match is empty and would select every site; give at least one key such as "
     "'kind: block'")),
    (doc("  - match: {kind: conv}", "    insert: {position: after}"),
     "rules/x.yaml:4:13: rule '#1': insert needs 'block:' (see `attn-surgeon blocks`)"),
    (doc("  - match: {kind: conv, kernel: 3}", "    insert: {block: sk}"),
     ("rules/x.yaml:4:21: rule '#1': 'sk' is a swap block (it replaces a conv unit); use 'replace:' instead of "
     "'insert:'")),
    (doc("  - match: {kind: conv, kernel: 3}", "    replace: {block: eca}"),
     ("rules/x.yaml:4:22: rule '#1': 'eca' is an insert block; use 'insert:' instead of 'replace:', or match the "
      "attention module it replaces (kind: module, class: SqueezeExcitation)")),
    (doc("  - match: {kind: block}", "    replace: {block: sk}"),
     "rules/x.yaml:3:12: rule '#1': replace swaps conv units, and this rule matches block sites; use kind: conv"),
    (doc("  - match: {kind: conv}", "    replace: {block: sk, position: after}"),
     "rules/x.yaml:4:26: rule '#1': unknown key 'position' in replace; valid keys: block, args"),
    (doc("  - match: {kind: block}", "    insert: {block: se, position: inside}"),
     "rules/x.yaml:4:35: rule '#1': position must be one of residual, after, before, got 'inside'"),
    (doc("  - match: {kind: conv}", "    insert: {block: se, position: residual}"),
     ("rules/x.yaml:4:35: rule '#1': position residual needs residual units, and this rule matches conv sites; "
     "use after or before")),
    (doc("  - match: {kind: block}", "    insert: {block: se, init: pretrained}"),
     "rules/x.yaml:4:31: rule '#1': init must be one of identity, paper, got 'pretrained'"),
    (doc("  - match: {kind: block, kernel: 3}", "    insert: {block: se}"),
     "rules/x.yaml:3:26: rule '#1': kernel filters conv sites only, and this selector has kind: block"),
    (doc("  - match: {kind: conv, index: 0}", "    insert: {block: se}"),
     ("rules/x.yaml:3:25: rule '#1': index counts residual units within a stage; conv sites have none (select them "
     "with stage and a name glob such as 'layer*.*.conv2')")),
    (doc("  - match: {kind: block, offset: 1}", "    insert: {block: se}"),
     "rules/x.yaml:3:26: rule '#1': offset counts from the first unit for 'every'; give every: N too"),
    (doc("  - match: {kind: block, every: 0}", "    insert: {block: se}"),
     "rules/x.yaml:3:33: rule '#1': every must be >= 1, got 0"),
    (doc("  - match: {kind: block, every: '2'}", "    insert: {block: se}"),
     "rules/x.yaml:3:33: rule '#1': every must be a whole number >= 1, got '2'"),
    (doc("  - match: {kind: block, stage: last}", "    insert: {block: se}"),
     ("rules/x.yaml:3:33: rule '#1': stage: expected a number, a list, a range like '2-4' or a comparison like "
     "'>=256', got 'last'")),
    (doc("  - match: {kind: block, stage: '1-99999'}", "    insert: {block: se}"),
     "rules/x.yaml:3:33: rule '#1': stage: range '1-99999' is too wide; use a comparison such as '>=1'"),
    (doc("  - match: {kind: block, stage: '4-2'}", "    insert: {block: se}"),
     "rules/x.yaml:3:33: rule '#1': stage: empty range '4-2'"),
    (doc("  - match: {kind: conv, kernel: >=3}", "    insert: {block: se}"),
     ("rules/x.yaml:3:33: invalid YAML: found character '>' that cannot start any token; quote comparisons and "
     "ranges, e.g. \">=256\"")),
    (doc("  - match: {kind: cnv}", "    insert: {block: se}"),
     "rules/x.yaml:3:19: rule '#1': kind must be one of block, bottleneck, residual, conv, module, got 'cnv'"),
    (doc("  - match: {regex: 'layer(1'}", "    insert: {block: se}"),
     "rules/x.yaml:3:20: rule '#1': invalid regex 'layer(1': missing ), unterminated subpattern at position 5"),
    (doc("  - match: {kind: block, kind: conv}", "    insert: {block: se}"),
     "rules/x.yaml:3:26: rule '#1': duplicate key 'kind' in match"),
    (doc("  - match: {name: [layer1, layer2]}", "    insert: {block: se}"),
     "rules/x.yaml:3:19: rule '#1': name must be a single value, not a list"),
    (doc("  - match: {kind: block, exclude: layer1}", "    insert: {block: se}"),
     "rules/x.yaml:3:35: rule '#1': exclude must be a mapping of keys to values"),
    (doc("  - name: a", "    match: {kind: block}", "    insert: {block: se}",
         "  - name: a", "    match: {kind: block}", "    insert: {block: eca}"),
     "rules/x.yaml:6:11: rule '#2': rule name 'a' is already used by the rule at rules/x.yaml:3:5"),
    (doc("  - name: 'eca late'", "    match: {kind: block}", "    insert: {block: eca}"),
     "rules/x.yaml:3:11: rule '#1': rule name 'eca late' must be 1-64 letters, digits, '_', '-', '.' or ':'"),
    (doc("  - match: {kind: block}", "    insert: {block: se}", "    allow_empty: yes please"),
     "rules/x.yaml:5:18: rule '#1': allow_empty must be true or false, got 'yes please'"),
    (doc("  - match: {kind: block}", "    insert: {block: 'os:system'}"),
     ("rules/x.yaml:4:21: rule '#1': block 'os:system' imports and runs code; pass --trust-code (trust_code=True) "
     "if you trust it")),
    (doc("  - match: {kind: block}", "    insert: {block: !!binary aGVsbG8=}"),
     ("rules/x.yaml:4:21: rule '#1': block: unsupported YAML type 'tag:yaml.org,2002:binary'; use plain numbers, "
     "strings and booleans")),
    ("version: 1\nbase: &b {kind: block}\nrules:\n  - match: *b\n    insert: {block: se}\n",
     "rules/x.yaml:4:12: invalid YAML: aliases (*name) are not allowed in rules files"),
    ("version: 1\nrules: [\n", "rules/x.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>'"),
    ("version: 1\n---\nversion: 1\n", "rules/x.yaml:2:1: invalid YAML: but found another document"),
    ("version: 1\x00\n", "rules/x.yaml:1:11: invalid YAML: special characters are not allowed (character 0)"),
    (b"version: 1\nrules: \xff\n", "rules/x.yaml:2:8: not UTF-8 text"),
    ("[" * 3000, "rules/x.yaml:1:1: invalid YAML: nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m.split(": ", 1)[1][:60] for _, m in ERRORS])
def test_error_messages_are_exact_and_located(text: str | bytes, message: str) -> None:
    assert error_of(text) == message


def test_unknown_block_without_a_close_name_lists_every_block() -> None:
    names = ", ".join(info.name for info in list_blocks())
    assert error_of(doc("  - match: {kind: block}", "    insert: {block: zzzzzz}")) == (
        f"rules/x.yaml:4:21: rule '#1': unknown block 'zzzzzz'; valid blocks: {names}")


def test_alias_bomb_and_huge_files_are_refused_quickly(tmp_path: Path) -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    bomb = "\n".join(lines) + "\nrules: []\n"
    start = time.perf_counter()
    assert error_of(bomb) == "rules/x.yaml:3:10: invalid YAML: aliases (*name) are not allowed in rules files"
    huge = tmp_path / "huge.yaml"
    huge.write_text("version: 1\n" + "# padding\n" * (MAX_BYTES // 10 + 1))
    with pytest.raises(RuleError) as info:
        load_rules(huge)
    assert str(info.value) == f"{huge}:1:1: file too large ({huge.stat().st_size:,} bytes; rules files are limited " \
                              f"to {MAX_BYTES:,})"
    assert error_of("#" * (MAX_BYTES + 1)).startswith("rules/x.yaml:1:1: file too large")
    assert time.perf_counter() - start < 2.0


def test_the_example_in_rules_readme_is_valid() -> None:
    readme = (PRESET_DIR / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    rules = parse_rules(example, "README.md")
    assert [(r.name, r.block, r.op, r.init, r.allow_empty) for r in rules] == [
        ("se-early", "se", "insert", "identity", False), ("eca-late", "eca", "insert", "paper", False),
        ("sk", "sk", "replace", "paper", True)]
    table = readme.split("| preset | placement | parameters |", 1)[1]
    for preset, params, _ in PRESET_COUNTS:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{preset}` |"))
        assert f"{params:,}" in row or f"+ {params - RESNET50_PARAMS} |" in row, preset


# -- what a valid document becomes --------------------------------------------------------------------------------

def test_a_valid_document_reads_into_rules() -> None:
    rules = parse_rules(doc(
        "  - name: gc-late",
        "    match: {kind: block, stage: '3-4', exclude: {index: -1}}",
        "    insert: {block: global_context, position: residual, args: {rd_ratio: 0.25}, init: paper}",
        "  - match: {kind: conv, name: 'layer*.*.conv2', kernel: 3x3, stride: 1}",
        "    replace: {block: sk, args: {groups: 8}}",
        "    allow_empty: true",
    ), "x.yaml")
    assert [rule.name for rule in rules] == ["gc-late", "#2"]
    gc, sk = rules
    assert (gc.block, gc.op, gc.position, gc.args, gc.init) == ("gc", "insert", "residual", {"rd_ratio": 0.25}, "paper")
    assert gc.selector.stage.values == (3, 4) and gc.selector.exclude.index.values == (-1,)
    assert (sk.block, sk.op, sk.position, sk.args, sk.allow_empty) == ("sk", "replace", None, {"groups": 8}, True)
    assert sk.selector.kernel.values == (3,) and sk.selector.name == "layer*.*.conv2"
    assert str(rules.locations["gc-late"]) == "x.yaml:3:5" and str(rules.locations["#2"]) == "x.yaml:6:5"


def test_init_defaults_document_setting_and_override() -> None:
    text = "version: 1\ninit: paper\nrules:\n  - match: {kind: block}\n    insert: {block: se}\n" \
           "  - match: {kind: block}\n    insert: {block: eca, init: identity}\n"
    assert [rule.init for rule in parse_rules(text)] == ["paper", "identity"]
    assert [rule.init for rule in parse_rules(text, init="identity")] == ["identity", "identity"]
    assert [rule.init for rule in load_rules("se_resnet")] == ["identity"]
    assert [rule.init for rule in load_rules("se_resnet", init="paper")] == ["paper"]


def test_load_rules_sources(tmp_path: Path) -> None:
    text = doc("  - match: {kind: block}", "    insert: {block: se}")
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    expected = parse_rules(text)
    assert load_rules(path) == expected and load_rules(str(path)).source == str(path)
    assert load_rules(text) == expected
    assert load_rules({"version": 1, "rules": [{"match": {"kind": "block"}, "insert": {"block": "se"}}]}) == expected
    assert load_rules(list(expected)) == expected
    assert load_rules("eca_resnet").source == "rules/eca_resnet.yaml"
    flow = "{version: 1, rules: [" + ", ".join(f"{{name: r{i}, match: {{kind: block}}, insert: {{block: se}}}}"
                                               for i in range(20)) + "]}"
    assert len(flow) > 1000 and len(load_rules(flow)) == 20  # a long one-line document is text, not a file name


def test_user_blocks_need_trust_code() -> None:
    text = doc("  - match: {kind: block}", "    insert: {block: 'tests.fixtures.user_blocks:ScaledIdentity', "
               "args: {init_value: 0.5}}")
    assert error_of(text).endswith("imports and runs code; pass --trust-code (trust_code=True) if you trust it")
    (rule,) = parse_rules(text, trust_code=True)
    assert (rule.block, rule.args) == ("tests.fixtures.user_blocks:ScaledIdentity", {"init_value": 0.5})
    assert error_of(text.replace("init_value", "scale"), trust_code=True).endswith(
        "block 'tests.fixtures.user_blocks:ScaledIdentity' has no option 'scale'; valid options: init_value")
    with pytest.raises(RuleError) as info:
        load_rules("se_resnt")
    assert str(info.value) == (f"se_resnt:1:1: no such rules file or preset (did you mean 'se_resnet'?); presets: "
                               f"{', '.join(list_presets())}")
    with pytest.raises(RuleError) as info:
        load_rules({"version": 1, "rules": [{"match": {"kind": "block"}, "insert": {"block": "se", "args": {
            "rd_ratio": "x"}}}]})
    assert str(info.value).startswith("<dict>:") and "expects float, got str 'x'" in str(info.value)


# -- precedence and plan-time errors, located -----------------------------------------------------------------------

def _site(name: str, kind: str, stage: int | None = 1, index: int | None = None) -> Site:
    extra = {"kernel_size": (3, 3), "groups": 1, "dilation": (1, 1)} if kind == "conv" else {}
    return Site(name, kind, "Conv2d" if kind == "conv" else "Bottleneck", 64, 64, (8, 8), (8, 8), 1, stage, index,
                residual_channels=64 if kind == "block" else None, **extra)


SITES = [_site("layer1.0", "block", index=0), _site("layer1.0.conv2", "conv"), _site("layer1.1", "block", index=1),
         _site("layer1.1.conv2", "conv")]


def plan_error(text: str) -> str:
    rules = parse_rules(text, "rules/x.yaml")
    with pytest.raises(surgeon.errors.SurgeonError) as info:
        make_plan(SITES, rules)
    located = locate(info.value, rules)
    assert isinstance(located, RuleError)
    return str(located)


def test_a_rule_that_matches_nothing_is_a_located_error_unless_allowed() -> None:
    text = doc("  - name: eca-all", "    match: {kind: block}", "    insert: {block: eca}",
               "  - name: eca-late", "    match: {kind: block, stage: 4}", "    insert: {block: eca}")
    assert plan_error(text) == ("rules/x.yaml:6:5: rule 'eca-late': no site matches (kind=block, stage=4); run "
                                "`attn-surgeon sites MODEL` to see what can match")
    plan = make_plan(SITES, parse_rules(text + "    allow_empty: true\n"))
    assert [action.site.name for action in plan.actions] == ["layer1.0", "layer1.1"]
    assert plan.empty_rules == ["eca-late"]


def test_replacing_a_site_twice_names_both_rules() -> None:
    text = doc("  - name: sk-all", "    match: {kind: conv}", "    replace: {block: sk}",
               "  - name: sc-first", "    match: {kind: conv, name: layer1.0.conv2}", "    replace: {block: scconv}")
    assert plan_error(text) == "rules/x.yaml:6:5: rule 'sc-first': layer1.0.conv2 is already replaced by rule 'sk-all'"


def test_two_inserts_on_one_site_stack_in_file_order() -> None:
    text = doc("  - name: first", "    match: {kind: block, index: 0}", "    insert: {block: se, init: paper}",
               "  - name: second", "    match: {kind: block, index: 0}", "    insert: {block: eca, init: paper}")
    model = torchvision.models.resnet18().eval()
    table = find_sites(model, (1, 3, 32, 32))
    plan = make_plan(table.sites, parse_rules(text))
    assert [(a.rule, a.site.name) for a in plan.actions] == [
        ("first", f"layer{i}.0") for i in range(1, 5)] + [("second", f"layer{i}.0") for i in range(1, 5)]
    rewrite(model, plan)
    calls: list[str] = []
    for name in ("layer2.0.se_residual", "layer2.0.eca_residual"):
        model.get_submodule(name).register_forward_hook(lambda module, args, out, name=name: calls.append(name))
    model(torch.randn(1, 3, 32, 32))
    assert calls == ["layer2.0.se_residual", "layer2.0.eca_residual"]


# -- presets -------------------------------------------------------------------------------------------------------

def test_every_preset_opens_with_a_citation_and_loads() -> None:
    assert set(list_presets()) >= {"se_resnet", "eca_resnet", "eca_resnet_k3557", "cbam_resnet", "ca_mobilenetv2",
                                   "gc_resnet", "nonlocal_resnet50", "sk_resnet", "scnet", "danet_head", "ccnet",
                                   "sa_resnet", "scsa_resnet", "ema_mobilenetv2", "mlca_mobilenetv3",
                                   "yolo_c2f_ema", "yolo_sppf_lska", "yolo_neck_scsa"}
    for name in list_presets():
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        header = text.split("\nversion: 1\n")[0]
        assert header.startswith("# ") and all(line.startswith("#") for line in header.splitlines()), name
        assert re.search(r"https://(arxiv\.org|mftp\.mmcheng\.net|doi\.org)/", header)
        assert "Placement reproduced:" in header
        assert len(load_rules(name)) >= 1


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    return model, find_sites(model, (1, 3, 32, 32))


def patched_params(resnet50, preset: str) -> tuple[int, list[str]]:
    model, table = resnet50
    model = copy.deepcopy(model)
    plan = make_plan(table.sites, load_rules(preset, init="paper"))
    rewrite(model, plan)
    return sum(p.numel() for p in model.parameters()), [action.site.name for action in plan.actions]


def _cbam_params(channels: int) -> int:
    hidden = channels // 16
    return 2 * channels * hidden + hidden + channels + 2 * 49 + 2  # official: channel MLP, 7x7 conv, BN(1)


STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]  # ResNet-50: output channels and units per stage


def _gc_params(c: int) -> int:
    p = c // 16  # official ContextBlock: conv_mask (C + 1), 1x1 C->P with bias, LayerNorm([P, 1, 1]), 1x1 P->C
    return (c + 1) + (c * p + p) + 2 * p + (p * c + c)


def _nonlocal_params(c: int) -> int:
    p = c // 2  # theta, phi, g: 1x1 C->P with bias; W: 1x1 P->C with bias; BatchNorm(C)
    return 3 * (c * p + p) + (p * c + c) + 2 * c


BLOCK_FORMULAS = {  # preset: added parameters from the official formulas, over ResNet-50's stages
    "se_resnet": sum(n * (2 * c * (c // 16) + c // 16 + c) for c, n in STAGES),
    "eca_resnet_k3557": 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7,
    "eca_resnet": 3 * 5 + 4 * 5 + 6 * 5 + 3 * 7,
    "cbam_resnet": sum(n * _cbam_params(c) for c, n in STAGES),
    "gc_resnet": sum(n * _gc_params(c) for c, n in STAGES[1:]),
    "nonlocal_resnet50": 2 * _nonlocal_params(512) + 3 * _nonlocal_params(1024),
    "ccnet": 2 * (2048 * 256 + 256) + (2048 * 2048 + 2048) + 1,
    "sa_resnet": sum(n * 3 * c // 64 for c, n in STAGES),  # sa_layer: cweight, cbias, sweight, sbias, GN(C/2G)
    "scsa_resnet": sum(n * 16 * (c // 4) for c, n in STAGES),  # SCSA on the mid width C/4: 16 parameters a channel
}

PRESET_COUNTS = [  # (preset, parameters of torchvision:resnet50 patched with --init paper, sites)
    ("se_resnet", 28_088_024, None),
    ("eca_resnet_k3557", RESNET50_PARAMS + 80, None),
    ("eca_resnet", RESNET50_PARAMS + 86, None),
    ("cbam_resnet", 28_089_624, None),
    ("gc_resnet", 28_078_773, [f"layer{s}.{i}" for s, n in ((2, 4), (3, 6), (4, 3)) for i in range(n)]),
    ("nonlocal_resnet50", 32_915_496, ["layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5"]),
    ("sk_resnet", 37_245_352, [f"layer{s}.{i}.conv2" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for i in range(n)]),
    ("scnet", 25_564_584, [f"layer{s}.{i}.conv1" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for i in range(n)]),
    ("danet_head", 30_802_474, ["layer4.2", "layer4.2"]),
    ("ccnet", 30_802_473, ["layer4.2"]),
    ("sa_resnet", RESNET50_PARAMS + 708, None),
    ("scsa_resnet", RESNET50_PARAMS + 60_416,
     [f"layer{s}.{i}.conv2" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for i in range(n)]),
]


def test_official_formulas_give_the_published_counts() -> None:
    assert RESNET50_PARAMS + BLOCK_FORMULAS["se_resnet"] == 28_088_024  # SE-ResNet-50
    assert RESNET50_PARAMS + BLOCK_FORMULAS["cbam_resnet"] == 28_089_624  # CBAM-ResNet-50, official code's count
    counts = {preset: params for preset, params, _ in PRESET_COUNTS}
    for preset, added in BLOCK_FORMULAS.items():
        assert counts[preset] == RESNET50_PARAMS + added, preset


@pytest.mark.parametrize(("preset", "params", "sites"), PRESET_COUNTS, ids=[case[0] for case in PRESET_COUNTS])
def test_presets_reproduce_parameter_counts_on_resnet50(resnet50, preset: str, params: int, sites) -> None:
    counted, chosen = patched_params(resnet50, preset)
    assert counted == params
    assert sites is None or chosen == sites
    if preset == "scnet":
        assert abs(counted - 25.56e6) <= 0.01e6  # SCNet-50 in the paper: 25.56M


def test_danet_and_ccnet_pick_the_last_unit_of_a_dilated_backbone_too() -> None:
    dilated = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    table = find_sites(dilated, (1, 3, 32, 32))
    for preset in ("danet_head", "ccnet"):
        plan = make_plan(table.sites, load_rules(preset))
        assert {a.site.name for a in plan.actions} == {"layer4.2"}


def test_ca_mobilenetv2_places_ca_after_each_expanded_depthwise_unit() -> None:
    model = torchvision.models.mobilenet_v2().eval()
    table = find_sites(model, (1, 3, 32, 32))
    plan = make_plan(table.sites, load_rules("ca_mobilenetv2", init="paper"))
    assert [a.site.name for a in plan.actions] == [f"features.{i}.conv.1.0" for i in range(2, 18)]  # 16, not features.1
    before = sum(p.numel() for p in model.parameters())
    rewrite(model, plan)
    added = 0
    for action in plan.actions:
        c = action.site.out_channels
        mip = max(8, c // 32)
        added += c * mip + mip + 2 * mip + 2 * (mip * c + c)  # official CoordAtt: conv1, bn1, conv2, conv3
    after = sum(p.numel() for p in model.parameters())
    assert after == before + added == 3_950_648 and round(after / 1e6, 2) == 3.95  # the paper: MobileNetV2 + CA 3.95M
    assert isinstance(model.features[2].conv[1], torch.nn.Module)
    assert "features.2.ca_after_conv_1_0.conv1.weight" in model.state_dict()


def test_ema_mobilenetv2_places_ema_after_each_expanded_depthwise_unit() -> None:
    model = torchvision.models.mobilenet_v2().eval()
    table = find_sites(model, (1, 3, 32, 32))
    plan = make_plan(table.sites, load_rules("ema_mobilenetv2", init="paper"))
    assert [a.site.name for a in plan.actions] == [f"features.{i}.conv.1.0" for i in range(2, 18)]
    before = sum(p.numel() for p in model.parameters())
    rewrite(model, plan)
    added = sum(10 * (c // 24) ** 2 + 4 * (c // 24) for c in (a.site.out_channels for a in plan.actions))  # 10c'² + 4c'
    after = sum(p.numel() for p in model.parameters())
    assert before == 3_504_872 and after == before + added == 3_584_376


def test_mlca_mobilenetv3_replaces_every_se_module() -> None:
    model = torchvision.models.mobilenet_v3_small().eval()
    table = find_sites(model, (1, 3, 64, 64))
    plan = make_plan(table.sites, load_rules("mlca_mobilenetv3"))
    se = {name: module for name, module in model.named_modules() if type(module).__name__ == "SqueezeExcitation"}
    assert [a.site.name for a in plan.actions] == list(se) and {a.op for a in plan.actions} == {"replace"}
    se_params = sum(p.numel() for module in se.values() for p in module.parameters())
    mlca_params = sum(2 * eca_kernel_size(module.fc1.in_channels) for module in se.values())  # 2k, ECA's k for C
    before = sum(p.numel() for p in model.parameters())
    result = rewrite(model, plan)
    after = sum(p.numel() for p in model.parameters())
    assert (before, se_params, mlca_params) == (2_542_856, 461_640, 78)
    assert after == before - se_params + mlca_params == 2_081_294
    assert sorted(key for item in result.inserted for key in item.removed_keys) == sorted(
        f"{name}.{key}" for name, module in se.items() for key in module.state_dict())


def test_mmcv_after_conv_positions_are_expressible(resnet50) -> None:
    """mmcv's plugin position after_conv3 with stages (F, F, T, T) equals our residual position on those stages."""
    model, table = resnet50
    after_conv3 = doc("  - match: {kind: conv, name: 'layer*.*.conv3', stage: [3, 4]}",
                      "    insert: {block: se, position: after, init: paper}")
    residual = doc("  - match: {kind: block, stage: [3, 4]}",
                   "    insert: {block: se, position: residual, init: paper}")
    models = []
    for text in (after_conv3, residual):
        models.append(copy.deepcopy(model))
        rewrite(models[-1], make_plan(table.sites, parse_rules(text)))
    # new blocks are seeded by their names, which differ: give both the same weights, then compare functions
    state = {key.replace(".se_residual.", ".se_after_conv3."): value for key, value in models[1].state_dict().items()}
    models[0].load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(models[0](x), models[1](x)) and not torch.equal(models[1](x), model(x))
    after_conv2 = doc("  - match: {kind: conv, name: 'layer*.*.conv2', stage: [3, 4]}",
                      "    insert: {block: eca, position: after}")
    plan = make_plan(table.sites, parse_rules(after_conv2))
    assert [a.site.name for a in plan.actions] == [f"layer{s}.{i}.conv2" for s, n in ((3, 6), (4, 3)) for i in range(n)]


# -- fuzzing: every malformed document is a located RuleError -------------------------------------------------------

def _outcome(data: str | bytes) -> None:
    try:
        rules = parse_rules(data, "fuzz.yaml")
    except RuleError as exc:
        assert LOCATED.match(str(exc)) and "\n" not in str(exc), str(exc)
        return
    assert rules and all(isinstance(rule, Rule) for rule in rules)


KEYS = ["version", "rules", "init", "match", "insert", "replace", "name", "block", "args", "position", "kind", "stage",
        "index", "every", "offset", "exclude", "kernel", "groups", "regex", "allow_empty", "class", "rd_ratio",
        "k_size", "x"]
SCALARS = (st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=False) | st.text(max_size=12)
           | st.sampled_from(["block", "conv", "se", "eca", "sk", "residual", "after", "paper", "2-4", ">=256", "3x3",
                              "layer*.*.conv2", "layer(", "ecaa", "os:system"]))
TREES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(-2, 2) | st.none(),
                                     inner, max_size=5), max_leaves=25)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(tree=TREES, version=st.sampled_from([1, 1, 1, 2, "1", None]))
def test_fuzz_random_yaml_trees(tree, version) -> None:
    document = {"version": version, "rules": tree} if version is not None else tree
    _outcome(yaml.safe_dump(document, sort_keys=False))


PRESET_TEXTS = [(PRESET_DIR / f"{name}.yaml").read_text() for name in list_presets()]


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_presets(data) -> None:
    text = data.draw(st.sampled_from(PRESET_TEXTS))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["delete", "insert", "replace", "line"]))
        if kind == "delete":
            text = text[:position] + text[position + data.draw(st.integers(1, 8)):]
        elif kind == "insert":
            text = text[:position] + data.draw(st.text(max_size=6) | st.sampled_from(["*a", "&a ", "\t", ": ", "- ",
                                                                                     "{", "]", "!!", "\n  "])) \
                + text[position:]
        elif kind == "replace":
            text = text[:position] + data.draw(st.text(min_size=1, max_size=3)) + text[position + 1:]
        else:
            lines = text.splitlines()
            index = data.draw(st.integers(0, max(0, len(lines) - 1)))
            text = "\n".join(lines[:index] + lines[index:][:1] * data.draw(st.integers(0, 2)) + lines[index + 1:])
    _outcome(text)


@FUZZ
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _outcome(data)


YAML_SYNTAX = st.lists(st.sampled_from(list("{}[]:-,'\"!&*?|>#%@` \n\tab1.") + KEYS[:12]), max_size=40).map("".join)


@FUZZ
@given(body=YAML_SYNTAX)
def test_fuzz_yaml_syntax_soup(body: str) -> None:
    _outcome("version: 1\nrules:\n" + body)
    _outcome("version: 1\nrules:\n  - match: {kind: block}\n    insert: " + body)


# -- surgeon.apply and attn-surgeon apply ---------------------------------------------------------------------------

SHAPE = (1, 3, 32, 32)


def r18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_surgeon_apply_takes_presets_documents_rules_and_recipes(tmp_path: Path) -> None:
    reference = surgeon.apply(r18(), "eca_resnet_k3557", input_shape=SHAPE, init="paper")
    keys = list(reference.state_dict())
    assert sum(".eca_residual." in key for key in keys) == 8
    text = (PRESET_DIR / "eca_resnet_k3557.yaml").read_text()
    document = yaml.safe_load(text)
    for source in (PRESET_DIR / "eca_resnet_k3557.yaml", text, document, list(load_rules(document))):
        assert list(surgeon.apply(r18(), source, input_shape=SHAPE, init="paper").state_dict()) == keys
    surgeon.save(reference, tmp_path / "patched.pt")
    for recipe in (surgeon.recipe_of(reference), surgeon.recipe_of(reference).to_dict(), tmp_path / "patched.pt"):
        assert list(surgeon.apply(r18(), recipe).state_dict()) == keys
    with pytest.raises(RuleError) as info:
        surgeon.apply(r18(), doc("  - name: late", "    match: {kind: block, stage: 5}", "    insert: {block: se}"),
                      input_shape=SHAPE)
    assert str(info.value).startswith("<string>:3:5: rule 'late': no site matches (kind=block, stage=5)")


def invoke(*args: str):
    group = cli
    if "apply" not in cli.commands:  # until the command is registered in surgeon/cli/__init__.py
        group = _Group("attn-surgeon", commands={"apply": apply_command})
    return CliRunner().invoke(group, ["apply", *args])


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("torchvision:resnet18", "nonlocal_resnet50", "--dry-run", "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert "dry run, nothing written" in result.stdout and "layer2.1" in result.stdout and "nonlocal" in result.stdout
    result = invoke("torchvision:resnet18", "nonlocal_resnet50", "--dry-run", "--json", "--input-shape", "1,3,64,64")
    plan = json.loads(result.stdout)["plan"]
    assert [(row["site"], row["position"], row["block"], row["rule"]) for row in plan] == [
        ("layer2.1", "after", "nonlocal", "nonlocal-res3-res4"),
        ("layer3.1", "after", "nonlocal", "nonlocal-res3-res4")]
    assert list(tmp_path.iterdir()) == []


def test_cli_recipe_reproduces_a_patch_exactly(tmp_path: Path) -> None:
    base = tmp_path / "base.pt"
    torch.save(r18().state_dict(), base)
    patched, replayed, rules = tmp_path / "patched.pt", tmp_path / "replayed.pt", tmp_path / "mine.yaml"
    rules.write_text((PRESET_DIR / "danet_head.yaml").read_text()
                     + "  - {name: se, match: {kind: block}, insert: {block: se, init: paper}}\n")
    result = invoke(str(base), "--arch", "torchvision:resnet18", str(rules), "-o", str(patched),
                    "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    result = invoke(str(base), "--arch", "torchvision:resnet18", "--recipe", str(patched), "-o", str(replayed),
                    "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    first, second = surgeon.load(patched), surgeon.load(replayed)
    assert list(first.state_dict()) == list(second.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert [step.module for step in surgeon.recipe_of(first).steps][:3] == [
        "layer4.1.danet_pam_after", "layer4.1.danet_cam_after", "layer1.0.se_residual"]
    steps = [[step.to_dict() for step in surgeon.recipe_of(model).steps] for model in (first, second)]
    assert steps[0] == steps[1]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first.eval()(x), second.eval()(x)) and not torch.equal(first(x), r18()(x))
    result = invoke("torchvision:resnet50", "--recipe", str(patched), "--dry-run", "--input-shape", "1,3,64,64")
    assert result.exit_code == 1 and "its recipe does not fit torchvision:resnet50" in result.stderr


def test_cli_errors_are_one_located_line(tmp_path: Path) -> None:
    rules = tmp_path / "x.yaml"
    rules.write_text(doc("  - name: eca-late", "    match: {kind: block, stage: 4}", "    insert:",
                         "      block: ecaa"))
    result = invoke("torchvision:resnet18", str(rules), "--dry-run")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: {rules}:6:14: rule 'eca-late': unknown block 'ecaa' (did you mean 'eca'?)\n"
    rules.write_text(doc("  - name: eca-late", "    match: {kind: block, stage: 5}", "    insert: {block: eca}"))
    result = invoke("torchvision:resnet18", str(rules), "--dry-run", "--input-shape", "1,3,64,64")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {rules}:3:5: rule 'eca-late': no site matches (kind=block, stage=5); run "
                             "`attn-surgeon sites MODEL` to see what can match\n")
    assert invoke("torchvision:resnet18").exit_code == 2
    assert invoke("torchvision:resnet18", "se_resnet", "--recipe", str(rules)).exit_code == 2
