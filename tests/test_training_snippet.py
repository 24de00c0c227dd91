"""The documentation's "In your training code" snippet runs as written (issue 7).

The snippet is read from ``docs/training.md`` between ``<!-- snippet:training -->`` and ``<!-- /snippet -->``; the
same lines are in ``examples/training_snippet.py`` between ``# snippet:training`` and ``# /snippet``, and the two
must agree line for line. It is run in a temporary directory holding what it names: ``rules/eca_resnet.yaml``,
pretrained weights ``resnet18.pt`` and a ``train_loader``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

import surgeon
from surgeon.blocks.eca import EfficientChannelAttention
from tests._util import REPO

PAGE = REPO / "docs" / "training.md"
PAGE_SNIPPET = re.compile(r"<!-- snippet:training -->\s*```python\n(.*?)```\s*<!-- /snippet -->", re.DOTALL)
FILE_SNIPPET = re.compile(r"^# snippet:training\n(.*?)^# /snippet$", re.DOTALL | re.MULTILINE)


def page_snippet() -> str:
    found = PAGE_SNIPPET.search(PAGE.read_text())
    assert found, "docs/training.md lost its <!-- snippet:training --> ... <!-- /snippet --> section"
    return found.group(1)


def file_snippet() -> str:
    found = FILE_SNIPPET.search((REPO / "examples" / "training_snippet.py").read_text())
    assert found, "examples/training_snippet.py lost its '# snippet:training' ... '# /snippet' markers"
    return found.group(1)


def test_page_and_example_hold_the_same_snippet() -> None:
    assert page_snippet() == file_snippet()


def test_training_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    code = page_snippet()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "rules" / "eca_resnet.yaml", tmp_path / "rules" / "eca_resnet.yaml")
    pretrained = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(pretrained, tmp_path / "resnet18.pt")
    generator = torch.Generator().manual_seed(0)
    train_loader = [(torch.randn(4, 3, 64, 64, generator=generator), torch.randint(0, 10, (4,), generator=generator))
                    for _ in range(2)]

    namespace = {"__name__": "__snippet__", "train_loader": train_loader}
    exec(compile(code, "docs/training.md (snippet:training)", "exec"), namespace)  # noqa: S102

    model = namespace["model"]
    assert isinstance(model, torchvision.models.ResNet)
    assert sum(isinstance(m, EfficientChannelAttention) for m in model.modules()) == 8  # every BasicBlock
    new_keys = set(model.state_dict()) - set(pretrained)
    assert set(pretrained) <= set(model.state_dict())
    assert new_keys and set(namespace["missing"]) == new_keys and namespace["unexpected"] == []
    saved = torch.load(tmp_path / "resnet18_eca.pt", weights_only=True)
    resumed = model.state_dict()
    assert saved.keys() == resumed.keys() and all(torch.equal(saved[k], resumed[k]) for k in saved)
    assert not torch.equal(saved["conv1.weight"], pretrained["conv1.weight"])  # the loop trained it


def test_same_rules_on_a_fresh_model_resume_a_plain_state_dict_strictly(tmp_path: Path) -> None:
    """The page's claim: a trainer's own ``torch.save(model.state_dict())`` resumes after the same ``apply``."""
    torch.set_num_threads(1)
    rules = REPO / "rules" / "eca_resnet.yaml"
    trained = surgeon.apply(torchvision.models.resnet18(num_classes=10), rules, input_shape=(1, 3, 64, 64))
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter))  # stands for training: every tensor moves
    torch.save({"model": trained.state_dict(), "epoch": 3}, tmp_path / "last.pt")

    fresh = surgeon.apply(torchvision.models.resnet18(num_classes=10), rules, input_shape=(1, 3, 64, 64))
    fresh.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True)["model"], strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), trained.eval()(x))
