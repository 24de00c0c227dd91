"""Which architecture does a state_dict belong to? Matching key names and shapes against torchvision and timm.

Building every architecture to read its state_dict would take minutes, so candidates are narrowed before anything
is built, from what each library publishes without building: torchvision's parameter counts (``num_params`` in
each model's weights metadata) and timm's ``pretrained_cfg`` names of the first convolution and the classifier.
The survivors are built on the ``meta`` device with weight initialisation skipped (no memory, no random numbers),
and each one's signature (keys, shapes, classifier) is cached as JSON under the user cache directory, keyed by the
library versions, so the next detection reads it instead of building.

A checkpoint fine-tuned to another number of classes differs from its architecture only in the classifier; such a
near miss is rebuilt with ``num_classes`` read from the classifier's weight. Tensors alone cannot tell apart
architectures that differ only in parameter-free layers (timm's ``resnet50``, ``resnetaa50`` and ``resnetblur50``,
torchvision's ``resnet50``): among exact matches the caller's hint wins, then torchvision, then the architecture
with the fewest modules, and the others are reported so the user can pass ``--arch`` instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from .files import atomic_write
from .layouts import common_prefixes
from .specs import meta_model

__all__ = ["Candidate", "Detection", "Signature", "SignatureCache", "cache_dir", "detect_arch"]

_CACHE_FORMAT = 1
_BN_STATS = (".running_mean", ".running_var", ".num_batches_tracked")


def cache_dir() -> Path:
    """``$ATTN_SURGEON_CACHE``, else ``$XDG_CACHE_HOME/attn-surgeon``, else ``~/.cache/attn-surgeon``."""
    if os.environ.get("ATTN_SURGEON_CACHE"):
        return Path(os.environ["ATTN_SURGEON_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attn-surgeon"


@dataclass(frozen=True)
class Signature:
    """What an architecture's state_dict looks like.

    Attributes:
        shapes: every key and its shape, in state_dict order.
        classifier: qualified names of the classification head's modules (their keys may differ in a fine-tuned
            checkpoint).
        modules: how many modules it has (fewer is the simpler explanation of the same tensors).
    """

    shapes: dict[str, tuple[int, ...]]
    classifier: tuple[str, ...] = ()
    modules: int = 0

    def in_classifier(self, key: str) -> bool:
        return any(key.startswith(name + ".") for name in self.classifier)


def _classifier_names(spec: str, model: nn.Module) -> tuple[str, ...]:
    if spec.startswith("timm:"):
        head = getattr(model, "pretrained_cfg", {}).get("classifier")
        return (head,) if isinstance(head, str) else tuple(head or ())
    linears = [qualified for qualified, module in model.named_modules() if isinstance(module, nn.Linear)]
    return tuple(linears[-1:])


def _signature_of(spec: str, model: nn.Module) -> Signature:
    return Signature({key: tuple(value.shape) for key, value in model.state_dict().items()},
                     _classifier_names(spec, model), sum(1 for _ in model.modules()))


class SignatureCache:
    """Signatures by ``spec`` (plus arguments), read from and written back to one JSON file per library versions."""

    def __init__(self, directory: Path | None = None) -> None:
        import timm
        import torchvision

        versions = (f"torch{torch.__version__.split('+')[0]}-tv{torchvision.__version__.split('+')[0]}"
                    f"-timm{timm.__version__}")
        self.path = (directory or cache_dir()) / f"signatures-v{_CACHE_FORMAT}-{versions}.json"
        self._entries: dict[str, Any] = {}
        self._dirty = False
        self.built = 0
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and isinstance(data.get("models"), dict):
                self._entries = data["models"]
        except (OSError, ValueError):
            pass  # no cache yet, or a damaged one: rebuilt as needed

    @staticmethod
    def key(spec: str, arch_args: Mapping[str, Any] | None) -> str:
        return spec + (f"?{json.dumps(dict(arch_args), sort_keys=True, default=str)}" if arch_args else "")

    def get(self, spec: str, arch_args: Mapping[str, Any] | None = None) -> Signature | None:
        """The signature, built on the meta device if it is not cached; ``None`` if the architecture cannot be built."""
        key = self.key(spec, arch_args)
        entry = self._entries.get(key)
        if entry is None:
            try:
                signature = _signature_of(spec, meta_model(spec, arch_args))
                entry = {"keys": list(signature.shapes), "shapes": [list(s) for s in signature.shapes.values()],
                         "classifier": list(signature.classifier), "modules": signature.modules}
            except Exception as exc:  # noqa: BLE001  (any failing factory just drops out of the candidates)
                entry = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            self._entries[key] = entry
            self._dirty = True
            self.built += 1
        if "error" in entry:
            return None
        return Signature(dict(zip(entry["keys"], (tuple(s) for s in entry["shapes"]))), tuple(entry["classifier"]),
                         entry["modules"])

    def save(self) -> None:
        """Write new entries back; a cache that cannot be written only costs time next run."""
        if not self._dirty:
            return
        payload = json.dumps({"format": _CACHE_FORMAT, "models": self._entries}, separators=(",", ":")).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda file: file.write(payload), force=True)
            self._dirty = False
        except Exception:  # noqa: BLE001, S110
            pass


@dataclass
class Candidate:
    """How well one architecture fits the checkpoint's tensors (with the best of its common prefixes removed)."""

    spec: str
    arch_args: dict[str, Any]
    prefix: str
    matched: int
    total: int
    difference: str = ""
    modules: int = 0

    @property
    def exact(self) -> bool:
        return self.matched == self.total

    def describe(self) -> str:
        args = "".join(f" {k}={v}" for k, v in self.arch_args.items())
        return f"{self.spec}{args} ({self.matched}/{self.total} tensors match{'; ' if self.difference else ''}" \
               f"{self.difference})"


@dataclass
class Detection:
    """The detected architecture; ``also`` lists the other architectures that hold exactly the same tensors."""

    spec: str
    arch_args: dict[str, Any]
    prefix: str
    matched: int
    total: int
    also: list[str] = field(default_factory=list)
    built: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        args = "".join(f" {k}={v}" for k, v in self.arch_args.items())
        also = ", ".join(self.also[:4]) + (f" and {len(self.also) - 4} more" if len(self.also) > 4 else "")
        fits = f"; also fits {also}" if also else ""
        return f"detected {self.spec}{args} ({self.matched}/{self.total} tensors match{fits})"


def _score(spec: str, args: dict[str, Any], signature: Signature, view: dict[str, tuple[int, ...]],
           prefix: str) -> Candidate:
    matched = sum(1 for key, shape in signature.shapes.items() if view.get(key) == shape)
    difference = ""
    for key, shape in signature.shapes.items():
        if view.get(key) != shape:
            difference = (f"{prefix}{key} is {list(view[key])}, expected {list(shape)}" if key in view
                          else f"no {prefix}{key}")
            break
    else:
        extra = next((key for key in view if key not in signature.shapes), None)
        difference = f"unexpected {prefix}{extra}" if extra else ""
    return Candidate(spec, args, prefix, matched, max(len(view), len(signature.shapes)), difference,
                     signature.modules)


def _retarget_classes(signature: Signature, view: dict[str, tuple[int, ...]], spec: str) -> int | None:
    """``num_classes`` that would make a near miss exact: every difference lies in the classifier."""
    if not signature.classifier:
        return None
    differing = [k for k, s in signature.shapes.items() if view.get(k) != s]
    differing += [k for k in view if k not in signature.shapes]
    if not differing or not all(signature.in_classifier(key) for key in differing):
        return None
    weight = view.get(f"{signature.classifier[0]}.weight")
    if weight is not None and len(weight) >= 1:
        return int(weight[0])
    if spec.startswith("timm:") and not any(signature.in_classifier(key) for key in view):
        return 0  # a headless timm model (num_classes=0) has no classifier keys at all
    return None


def _parameter_range(shapes: Mapping[str, tuple[int, ...]], floating: Mapping[str, bool]) -> tuple[int, int]:
    """Bounds on the parameter count: weights and biases at least; every float tensor but BN statistics at most."""
    def numel(shape: tuple[int, ...]) -> int:
        total = 1
        for size in shape:
            total *= size
        return total

    upper = sum(numel(s) for k, s in shapes.items() if floating[k] and not k.endswith(_BN_STATS))
    lower = sum(numel(s) for k, s in shapes.items() if floating[k] and k.endswith((".weight", ".bias")))
    return lower, upper


def _torchvision_candidates(shapes: Mapping[str, tuple[int, ...]], floating: Mapping[str, bool]) -> list[str]:
    import torchvision
    from torchvision.models import get_model_weights

    lower, upper = _parameter_range(shapes, floating)
    head = next((s for k, s in reversed(list(shapes.items())) if floating[k] and len(s) == 2), None)
    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        try:
            counts = {w.meta["num_params"] for w in get_model_weights(name)}
        except (KeyError, ValueError):
            counts = set()
        if not counts:
            names.append(name)  # nothing published: it has to be built to know
            continue
        # a head retrained for k classes changes the count by (k - 1000) * (features + 1)
        shifted = {c + (head[0] - 1000) * (head[1] + 1) for c in counts} if head else set()
        if any(lower <= c <= upper for c in counts | shifted):
            names.append(name)
    return [f"torchvision:{name}" for name in names]


def _timm_candidates(views: Iterable[dict[str, tuple[int, ...]]], headless: bool = False) -> list[str]:
    """timm models whose first convolution and classifier (or, with ``headless``, no classifier) are in a view."""
    import timm

    def names(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [v for v in value or () if isinstance(v, str)]

    views = list(views)
    found = []
    for name in timm.list_models():
        cfg = timm.get_pretrained_cfg(name)
        if cfg is None:
            continue
        first, heads = names(cfg.first_conv), names(cfg.classifier)
        for view in views:
            has_stem = bool(first) and all(f"{conv}.weight" in view for conv in first)
            if headless:
                head_ok = bool(heads) and not any(key.startswith(f"{h}.") for h in heads for key in view)
            else:
                head_ok = all(f"{h}.weight" in view for h in heads)
            if has_stem and head_ok:
                found.append(f"timm:{name}")
                break
    return found


def _evaluate(specs: Iterable[str], views: dict[str, dict[str, tuple[int, ...]]], arch_args: dict[str, Any],
              cache: SignatureCache) -> list[Candidate]:
    scored = []
    for spec in specs:
        signature = cache.get(spec, arch_args)
        if signature is None:
            continue
        best = max((_score(spec, arch_args, signature, view, prefix) for prefix, view in views.items()),
                   key=lambda c: c.matched)
        classes = None if best.exact else _retarget_classes(signature, views[best.prefix], spec)
        if classes is not None and "num_classes" not in arch_args:
            retargeted = cache.get(spec, {**arch_args, "num_classes": classes})
            if retargeted is not None:
                best = _score(spec, {**arch_args, "num_classes": classes}, retargeted, views[best.prefix],
                              best.prefix)
        scored.append(best)
    return scored


def detect_arch(state: Mapping[str, torch.Tensor], *, arch_args: Mapping[str, Any] | None = None,
                hint: str | None = None, where: str = "the checkpoint",
                cache: SignatureCache | None = None) -> Detection:
    """Find the torchvision or timm architecture whose state_dict has exactly these keys and shapes.

    Args:
        state: the checkpoint's tensors (a common key prefix such as ``model.`` or ``module.`` is allowed).
        arch_args: factory arguments to build every candidate with.
        hint: a spec tried first and preferred among exact matches (e.g. ``timm:NAME`` from a timm checkpoint's
            ``arch`` entry).
        where: how error messages name the checkpoint.
        cache: the signature cache (default: the user cache directory).

    Raises:
        ModelLoadError: no architecture matches exactly; the message lists the closest ones.
    """
    start = time.perf_counter()
    arch_args = dict(arch_args or {})
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    floating = {key: value.is_floating_point() for key, value in state.items()}
    views = {prefix: {k[len(prefix):]: s for k, s in shapes.items()} for prefix in common_prefixes(shapes)}
    cache = cache or SignatureCache()
    specs = [*([hint] if hint else []), *_torchvision_candidates(shapes, floating), *_timm_candidates(views.values())]
    scored = _evaluate(dict.fromkeys(specs), views, arch_args, cache)
    if not any(c.exact for c in scored):  # rarer: a timm backbone saved without its classifier (num_classes=0)
        headless = [spec for spec in _timm_candidates(views.values(), headless=True) if spec not in specs]
        scored += _evaluate(headless, views, arch_args, cache)
    cache.save()
    exact = [c for c in scored if c.exact]
    if not exact:
        closest = sorted(scored, key=lambda c: c.matched / c.total, reverse=True)[:3]
        if not closest:
            raise ModelLoadError(f"{where}: no torchvision or timm architecture has these {len(shapes)} tensors "
                                 f"(first: {next(iter(shapes), '-')}); pass --arch SPEC")
        raise ModelLoadError(f"{where}: no torchvision or timm architecture has exactly these tensors; closest: "
                             f"{', '.join(c.describe() for c in closest)}; pass --arch SPEC")
    exact.sort(key=lambda c: (c.spec != hint, not c.spec.startswith("torchvision:"), c.modules, len(c.spec), c.spec))
    chosen = exact[0]
    return Detection(chosen.spec, chosen.arch_args, chosen.prefix, chosen.matched, chosen.total,
                     [c.spec for c in exact[1:]], cache.built, time.perf_counter() - start)
