"""Architecture detection from a state_dict's keys and shapes (issue 5)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
import torchvision

from surgeon.errors import ModelLoadError
from surgeon.io.detect import SignatureCache, detect_arch
from surgeon.io.layouts import common_prefixes, fit_prefix


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> SignatureCache:
    """One cache for the module, in a temporary directory: the first detection builds, the rest read it."""
    return SignatureCache(tmp_path_factory.mktemp("signatures"))


def state_of(spec: str, **kwargs) -> OrderedDict[str, torch.Tensor]:
    library, _, name = spec.partition(":")
    with torch.device("meta"):  # detection reads only names and shapes
        model = (torchvision.models.get_model(name, weights=None, **kwargs) if library == "torchvision"
                 else timm.create_model(name, **kwargs))
    return model.state_dict()


PREFIX_CASES = [
    (["conv1.weight", "fc.bias"], [""]),
    (["module.conv1.weight", "module.fc.bias"], ["module.", ""]),
    (["model.module.a.weight", "model.module.b.weight"], ["model.module.", "model.", ""]),
    (["model.weight", "model.bias"], ["model.", ""]),  # one segment always stays
    (["weight"], [""]),
]


@pytest.mark.parametrize(("keys", "expected"), PREFIX_CASES)
def test_common_prefixes(keys: list[str], expected: list[str]) -> None:
    assert common_prefixes(keys) == expected


def test_fit_prefix_picks_the_prefix_that_fits_the_model() -> None:
    model_keys = ["features.0.weight", "features.1.weight"]
    assert fit_prefix(["model.features.0.weight", "model.features.1.weight"], model_keys) == "model."
    assert fit_prefix(model_keys, model_keys) == ""  # a shared "features." is part of the model, not a wrapper
    assert fit_prefix(["model.features.0.weight"], model_keys) is None


@pytest.mark.parametrize(("spec", "expected"), [
    ("torchvision:resnet18", ("detected torchvision:resnet18 (122/122 tensors match; also fits timm:resnet18, "
                              "timm:resnetblur18)")),
    ("torchvision:resnet50", ("detected torchvision:resnet50 (320/320 tensors match; also fits timm:resnet50, "
                              "timm:resnetaa50, timm:resnetblur50)")),
    ("torchvision:mobilenet_v2", "detected torchvision:mobilenet_v2 (314/314 tensors match)"),
])
def test_detects_torchvision_models(cache: SignatureCache, spec: str, expected: str) -> None:
    detection = detect_arch(state_of(spec), cache=cache)
    assert detection.describe() == expected and detection.spec == spec and detection.arch_args == {}


def test_timm_resnet50_with_its_checkpoint_hint(cache: SignatureCache) -> None:
    """A timm resnet50 holds the same tensors as torchvision's; timm's training checkpoint names its arch."""
    state = state_of("timm:resnet50")
    assert detect_arch(state, cache=cache).spec == "torchvision:resnet50"
    detection = detect_arch(state, hint="timm:resnet50", cache=cache)
    assert detection.describe() == ("detected timm:resnet50 (320/320 tensors match; also fits torchvision:resnet50, "
                                    "timm:resnetaa50, timm:resnetblur50)")


def test_timm_only_family(cache: SignatureCache) -> None:
    detection = detect_arch(state_of("timm:seresnet18"), cache=cache)
    assert detection.spec == "timm:seresnet18" and detection.matched == detection.total


def test_fine_tuned_classifier_gives_num_classes(cache: SignatureCache) -> None:
    state = OrderedDict((f"model.{k}", v) for k, v in state_of("torchvision:resnet50", num_classes=10).items())
    detection = detect_arch(state, cache=cache)
    assert detection.describe().startswith("detected torchvision:resnet50 num_classes=10 (320/320 tensors match")
    assert detection.arch_args == {"num_classes": 10} and detection.prefix == "model."


def test_second_detection_builds_nothing(cache: SignatureCache) -> None:
    detect_arch(state_of("torchvision:resnet18"), cache=cache)
    again = detect_arch(state_of("torchvision:resnet18"), cache=SignatureCache(cache.path.parent))
    assert again.built == 0 and again.spec == "torchvision:resnet18"


def test_near_miss_lists_the_closest(cache: SignatureCache) -> None:
    state = state_of("torchvision:resnet18")
    del state["layer4.1.bn2.running_var"]
    with pytest.raises(ModelLoadError) as info:
        detect_arch(state, where="ckpt.pt", cache=cache)
    assert str(info.value) == (
        "ckpt.pt: no torchvision or timm architecture has exactly these tensors; closest: torchvision:resnet18 "
        "(121/122 tensors match; no layer4.1.bn2.running_var), timm:resnet18 (121/122 tensors match; no "
        "layer4.1.bn2.running_var), timm:resnetblur18 (121/122 tensors match; no layer4.1.bn2.running_var); "
        "pass --arch SPEC")


def test_unknown_tensors(cache: SignatureCache) -> None:
    state = {"encoder.weight": torch.zeros(4, 4), "decoder.weight": torch.zeros(4, 4)}
    with pytest.raises(ModelLoadError) as info:
        detect_arch(state, where="ckpt.pt", cache=cache)
    assert str(info.value) == ("ckpt.pt: no torchvision or timm architecture has these 2 tensors (first: "
                               "encoder.weight); pass --arch SPEC")
