"""Selectors of the rules language: one table of cases over a fixed list of sites, plus real torchvision sites.

Each case is the ``match:`` mapping as written in a rules file, read by the rules loader, and the names it must
select; ``excluded`` lists the sites that the selector without its ``exclude`` selects and the exclude removes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision

from surgeon.match import Selector, select
from surgeon.rules import parse_rules
from surgeon.sites import Site, find_sites


def block(name: str, stage: int, index: int, cin: int, cout: int, size: int, stride: int = 1,
          cls: str = "Bottleneck") -> Site:
    return Site(name, "block", cls, cin, cout, (size * stride,) * 2, (size,) * 2, stride, stage, index,
                residual_channels=cout)


def conv(name: str, cin: int, cout: int, kernel: int, size: int, stride: int = 1, groups: int = 1,
         dilation: int = 1, stage: int | None = None) -> Site:
    return Site(name, "conv", "Conv2d", cin, cout, (size * stride,) * 2, (size,) * 2, stride, stage,
                kernel_size=(kernel, kernel), groups=groups, dilation=(dilation, dilation))


def module(name: str, cls: str, channels: int, size: int, stage: int | None = None) -> Site:
    return Site(name, "module", cls, channels, channels, (size,) * 2, (size,) * 2, 1, stage)


SITES = [
    conv("conv1", 3, 64, 7, 32, stride=2),
    module("bn1", "BatchNorm2d", 64, 32),
    block("layer1.0", 1, 0, 64, 256, 16),
    conv("layer1.0.conv1", 64, 64, 1, 16, stage=1),
    module("layer1.0.bn1", "BatchNorm2d", 64, 16, stage=1),
    conv("layer1.0.conv2", 64, 64, 3, 16, stage=1),
    conv("layer1.0.conv3", 64, 256, 1, 16, stage=1),
    conv("layer1.0.downsample.0", 64, 256, 1, 16, stage=1),
    block("layer1.1", 1, 1, 256, 256, 16),
    conv("layer1.1.conv2", 64, 64, 3, 16, stage=1),
    block("layer2.0", 2, 0, 256, 512, 8, stride=2),
    conv("layer2.0.conv2", 128, 128, 3, 8, stride=2, stage=2),
    conv("layer2.0.downsample.0", 256, 512, 1, 8, stride=2, stage=2),
    block("layer2.1", 2, 1, 512, 512, 8),
    block("layer2.2", 2, 2, 512, 512, 8),
    block("layer3.0", 3, 0, 512, 1024, 4, stride=2),
    block("layer3.1", 3, 1, 1024, 1024, 4),
    conv("layer3.1.conv2", 256, 256, 3, 4, dilation=2, stage=3),
    block("layer3.2", 3, 2, 1024, 1024, 4),
    block("layer3.3", 3, 3, 1024, 1024, 4),
    block("features.3", 4, 0, 24, 24, 2, cls="InvertedResidual"),
    conv("features.3.conv.1.0", 144, 144, 3, 2, groups=144, stage=4),
    module("head.attn", "C2f", 256, 2),
]

L1 = ["layer1.0", "layer1.1"]
L2 = ["layer2.0", "layer2.1", "layer2.2"]
L3 = ["layer3.0", "layer3.1", "layer3.2", "layer3.3"]
BLOCKS = L1 + L2 + L3 + ["features.3"]
CONVS = [s.name for s in SITES if s.kind == "conv"]

# (match mapping as written in YAML, selected names, excluded names)
CASES = [
    # kind
    ("{kind: block}", BLOCKS, []),
    ("{kind: bottleneck}", BLOCKS, []),
    ("{kind: residual}", BLOCKS, []),
    ("{kind: conv}", CONVS, []),
    ("{kind: module}", ["bn1", "layer1.0.bn1", "head.attn"], []),
    # class
    ("{class: Bottleneck}", L1 + L2 + L3, []),
    ("{class: InvertedResidual}", ["features.3"], []),
    ("{class: C2f}", ["head.attn"], []),
    ("{class: bottleneck}", [], []),
    # name globs: * stays in one segment, ** crosses dots, ? one character
    ("{name: 'layer1.*'}", L1, []),
    ("{name: 'layer1.**'}", [s.name for s in SITES if s.name.startswith("layer1.")], []),
    ("{name: 'layer*.*.conv2'}", ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer3.1.conv2"], []),
    ("{name: 'layer?.0'}", ["layer1.0", "layer2.0", "layer3.0"], []),
    ("{name: 'layer[23].0'}", ["layer2.0", "layer3.0"], []),
    ("{name: 'features.*.conv.1.0'}", ["features.3.conv.1.0"], []),
    ("{name: layer1}", [], []),
    ("{name: 'conv1'}", ["conv1"], []),
    # regex: full match
    (r"{regex: 'layer2\.\d+'}", L2, []),
    (r"{regex: 'layer2'}", [], []),
    (r"{regex: '.*downsample\.0'}", ["layer1.0.downsample.0", "layer2.0.downsample.0"], []),
    # conv filters
    ("{kind: conv, kernel: 3}", ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer3.1.conv2",
                                 "features.3.conv.1.0"], []),
    ("{kind: conv, kernel: 3x3}", ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer3.1.conv2",
                                   "features.3.conv.1.0"], []),
    ("{kind: conv, kernel: [1, 7]}", ["conv1", "layer1.0.conv1", "layer1.0.conv3", "layer1.0.downsample.0",
                                      "layer2.0.downsample.0"], []),
    ("{kind: conv, stride: 2}", ["conv1", "layer2.0.conv2", "layer2.0.downsample.0"], []),
    ("{kind: conv, groups: '>1'}", ["features.3.conv.1.0"], []),
    ("{kind: conv, dilation: 2}", ["layer3.1.conv2"], []),
    ("{kind: conv, in_channels: '>=128'}", ["layer2.0.conv2", "layer2.0.downsample.0", "layer3.1.conv2",
                                            "features.3.conv.1.0"], []),
    ("{kind: conv, out_channels: '<64'}", [], []),
    ("{kind: conv, out_channels: 256, kernel: 1}", ["layer1.0.conv3", "layer1.0.downsample.0"], []),
    ("{kind: block, out_channels: '!=1024', stride: 2}", ["layer2.0"], []),
    ("{kind: block, in_channels: '512-1024'}", ["layer2.1", "layer2.2"] + L3, []),
    # stage, index, every
    ("{kind: block, stage: 2}", L2, []),
    ("{kind: block, stage: [1, 3]}", L1 + L3, []),
    ("{kind: block, stage: '2-3'}", L2 + L3, []),
    ("{kind: block, stage: '>=3'}", L3 + ["features.3"], []),
    ("{kind: conv, stage: 1}", ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
                                "layer1.1.conv2"], []),
    ("{kind: block, index: 0}", ["layer1.0", "layer2.0", "layer3.0", "features.3"], []),
    ("{kind: block, index: -1}", ["layer1.1", "layer2.2", "layer3.3", "features.3"], []),
    ("{kind: block, stage: 3, index: [0, -1]}", ["layer3.0", "layer3.3"], []),
    ("{kind: block, stage: 3, index: '1-2'}", ["layer3.1", "layer3.2"], []),
    ("{kind: block, stage: [2, 3], every: 2}", ["layer2.0", "layer2.2", "layer3.0", "layer3.2"], []),
    ("{kind: block, stage: [2, 3], every: 2, offset: 1}", ["layer2.1", "layer3.1", "layer3.3"], []),
    ("{kind: block, stage: 3, every: 3}", ["layer3.0", "layer3.3"], []),
    # exclude: matched minus excluded
    ("{kind: block, exclude: {stage: 1}}", L2 + L3 + ["features.3"], L1),
    ("{kind: block, stage: 3, exclude: {index: -1}}", ["layer3.0", "layer3.1", "layer3.2"], ["layer3.3"]),
    ("{kind: conv, kernel: 3, exclude: {groups: '>1'}}",
     ["layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2", "layer3.1.conv2"], ["features.3.conv.1.0"]),
    ("{kind: conv, exclude: {name: '**.downsample.*'}}",
     [n for n in CONVS if "downsample" not in n], ["layer1.0.downsample.0", "layer2.0.downsample.0"]),
    (r"{name: 'layer*.*', exclude: {regex: 'layer[12]\..*'}}", L3, L1 + L2),
    ("{class: Bottleneck, exclude: {stride: 2, exclude: {stage: 3}}}", L1 + ["layer2.1", "layer2.2"] + L3,
     ["layer2.0"]),
    ("{kind: block, stage: 3, exclude: {kind: block}}", [], L3),
]


def _selector(text: str) -> Selector:
    document = f"version: 1\nrules:\n  - match: {text}\n    insert: {{block: eca}}\n"
    return parse_rules(document, "case.yaml")[0].selector


def _names(sites: list[Site]) -> list[str]:
    return [site.name for site in sites]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert sum(1 for _, selected, _ in CASES if not selected) >= 4  # unmatched cases
    assert sum(1 for _, _, excluded in CASES if excluded) >= 6  # excluded cases


@pytest.mark.parametrize(("text", "selected", "excluded"), CASES, ids=[case[0] for case in CASES])
def test_selector_table(text: str, selected: list[str], excluded: list[str]) -> None:
    selector = _selector(text)
    assert _names(select(SITES, selector)) == selected
    without_exclude = replace(selector, exclude=None)
    assert sorted(set(_names(select(SITES, without_exclude))) - set(selected)) == sorted(excluded)


@pytest.fixture(scope="module")
def resnet50_sites() -> list[Site]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # several helpers share two cores: oversubscribed threads make convs 10x slower
    try:
        return find_sites(torchvision.models.resnet50().eval(), (1, 3, 32, 32)).sites
    finally:
        torch.set_num_threads(threads)


RESNET50_CASES = [
    # mmcv ResNet plugin position after_conv2 with stages=(False, False, True, True)
    ("{kind: conv, name: 'layer*.*.conv2', stage: [3, 4]}",
     [f"layer3.{i}.conv2" for i in range(6)] + [f"layer4.{i}.conv2" for i in range(3)]),
    # the Non-local paper's 5 blocks: every other residual block of res3 and res4
    ("{kind: block, stage: [2, 3], every: 2, offset: 1}", ["layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5"]),
    ("{kind: block, index: -1}", ["layer1.2", "layer2.3", "layer3.5", "layer4.2"]),
    # torchvision's ResNet v1.5 strides the 3x3 conv
    ("{kind: conv, kernel: 3, stride: 2}", ["layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]),
    ("{kind: conv, name: 'layer*.0.downsample.0'}", [f"layer{i}.0.downsample.0" for i in range(1, 5)]),
    ("{kind: block, exclude: {stage: [1, 2]}}", [f"layer3.{i}" for i in range(6)] + [f"layer4.{i}" for i in range(3)]),
    ("{class: Bottleneck, out_channels: 2048}", ["layer4.0", "layer4.1", "layer4.2"]),
    ("{kind: conv, stage: 4, kernel: 1, in_channels: 2048}", ["layer4.1.conv1", "layer4.2.conv1"]),
]


@pytest.mark.parametrize(("text", "selected"), RESNET50_CASES, ids=[case[0] for case in RESNET50_CASES])
def test_selectors_on_resnet50(resnet50_sites: list[Site], text: str, selected: list[str]) -> None:
    assert _names(select(resnet50_sites, _selector(text))) == selected
