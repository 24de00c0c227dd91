"""Tensor helpers shared by the stages, the profiler and the exporter: the probe batch (its default shape, its
values, and what it means when the user's model refuses it), the flattened outputs of a forward pass, how far two
outputs are apart, and an eval-mode scope that gives every submodule its flag back.

They know only torch, so every layer may use them; each small rule here has no other owner.

Many models run only at the input size they were built for (timm's BoTNet, CaiT and MaxViT assert it; a ViT's
position embedding fixes it), so the default probe is the size a model *declares*, and 224x224 only for a model that
declares none. Where a model still raises on the probe, :func:`probe_guard` turns the model's own exception into a
:class:`~surgeon.errors.ModelForwardError` that says which ``input_shape`` to pass, while a failure of our own code
running around or inside that forward pass (hooks, op counters) keeps propagating as the bug it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .errors import ModelForwardError, SurgeonError

__all__ = ["DEFAULT_INPUT_SHAPE", "ULTRALYTICS_IMGSZ", "declared_input_shape", "default_input_shape", "device_of",
           "eval_mode", "flatten_outputs", "output_deviation", "probe_guard", "probe_input", "run_outputs"]

DEFAULT_INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, 224, 224)
"""The probe shape of a model that declares no input size of its own."""

ULTRALYTICS_IMGSZ = 640
"""Ultralytics' default image size (its ``cfg/default.yaml``), for a model that carries no training arguments."""

_INCEPTION_SIZE = 299


def _square(size: Any) -> tuple[int, int] | None:
    """``(H, W)`` from an image size given as ``640``, ``[640]`` or ``[480, 640]``; ``None`` if it is none of those."""
    values = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(values) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None
    return (values[0], values[-1])


def _timm_size(model: nn.Module) -> tuple[int, ...] | None:
    # timm attaches its pretrained config to every model it builds, with random weights too
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, Mapping) else None
    if isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size):
        return tuple(size)
    return None


def _ultralytics_size(model: nn.Module) -> tuple[int, ...] | None:
    # A model of a library that was never imported cannot be one of its classes, so nothing is imported here.
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is None or not isinstance(model, getattr(tasks, "BaseModel", ())):
        return None
    args = getattr(model, "args", None)  # a dict in a checkpoint, a namespace after training
    imgsz = args.get("imgsz") if isinstance(args, Mapping) else getattr(args, "imgsz", None)
    yaml = getattr(model, "yaml", None)
    channels = yaml.get("channels", yaml.get("ch", 3)) if isinstance(yaml, Mapping) else 3
    return (int(channels), *(_square(imgsz) or (ULTRALYTICS_IMGSZ, ULTRALYTICS_IMGSZ)))


def _torchvision_size(model: nn.Module) -> tuple[int, ...] | None:
    models = sys.modules.get("torchvision.models")
    if models is None:
        return None
    if isinstance(model, models.Inception3):  # designed and trained for 299x299 (its weights' transforms crop 299)
        return (3, _INCEPTION_SIZE, _INCEPTION_SIZE)
    if isinstance(model, models.VisionTransformer):  # its forward asserts this size
        return (3, model.image_size, model.image_size)
    return None


def _transformers_size(model: nn.Module) -> tuple[int, ...] | None:
    # A Hugging Face vision config names its channels, and its image size where the model needs one (ViT, BEiT)
    modeling = sys.modules.get("transformers.modeling_utils")  # where PreTrainedModel lives; never imported here
    if modeling is None or not isinstance(model, modeling.PreTrainedModel):
        return None
    config = model.config
    channels = getattr(config, "num_channels", None)
    size = _square(getattr(config, "image_size", None))
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        channels = 3
    if size is None:
        return None if channels == 3 else (channels, *DEFAULT_INPUT_SHAPE[2:])
    return (channels, *size)


def declared_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The ``(1, C, H, W)`` input the model says it was built for, or ``None`` if it says nothing.

    Read from timm's ``pretrained_cfg["input_size"]``; an Ultralytics model's training image size
    (``model.args["imgsz"]``, else Ultralytics' default 640); torchvision's Inception v3 (299) and a torchvision
    ViT's ``image_size``; a Hugging Face transformers model's ``config.num_channels`` and ``config.image_size``.
    """
    for read in (_timm_size, _ultralytics_size, _torchvision_size, _transformers_size):
        image = read(model)
        if image is not None:
            return (1, *image)
    return None


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The probe shape to use when the caller gives none: the model's declared input, else ``(1, 3, 224, 224)``."""
    return declared_input_shape(model) or DEFAULT_INPUT_SHAPE


def probe_input(input_shape: Sequence[int], module: nn.Module | None = None, seed: int = 0) -> torch.Tensor:
    """A deterministic probe batch of ``input_shape`` on the module's device and floating dtype."""
    device, dtype = torch.device("cpu"), torch.float32
    if module is not None:
        tensor = next((t for t in module.parameters()), None)
        if tensor is not None and tensor.is_floating_point():
            device, dtype = tensor.device, tensor.dtype
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(input_shape), generator=generator).to(device=device, dtype=dtype)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's first parameter or buffer lives (CPU for a model without either)."""
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and give every submodule its own train/eval flag back on exit.

    Restoring each flag, rather than calling ``model.train(previous)``, keeps a submodule that the user froze in
    eval mode (a frozen BatchNorm) frozen.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them), in order.

    NumPy arrays (what onnxruntime returns) become tensors; anything else that is not a tensor is left out.
    """
    leaves, _ = tree_flatten(value)
    tensors = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
        elif type(leaf).__module__ == "numpy" and hasattr(leaf, "dtype"):
            tensors.append(torch.from_numpy(leaf))
    return tensors


def run_outputs(model: nn.Module, probe: torch.Tensor) -> list[torch.Tensor]:
    """The flattened eval-mode outputs of ``model`` on ``probe``, without autograd; every train/eval flag is kept."""
    with torch.no_grad(), eval_mode(model):
        return flatten_outputs(model(probe))


def output_deviation(reference: Iterable[torch.Tensor], outputs: Iterable[torch.Tensor]) -> tuple[float, float]:
    """``(max abs diff, relative diff)`` over matching output tensors; ``inf`` if their structure differs."""
    reference, outputs = list(reference), list(outputs)
    if len(reference) != len(outputs) or any(a.shape != b.shape for a, b in zip(reference, outputs)):
        return float("inf"), float("inf")
    max_abs, scale = 0.0, 0.0
    for a, b in zip(reference, outputs):
        if a.numel() == 0:
            continue
        if not a.is_floating_point():
            max_abs = max(max_abs, 0.0 if torch.equal(a, b) else float("inf"))
            continue
        max_abs = max(max_abs, (a.float() - b.float()).abs().max().item())
        scale = max(scale, a.float().abs().max().item())
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


@contextmanager
def probe_guard(model: nn.Module, input_shape: Sequence[int], name: str | None = None) -> Iterator[None]:
    """Turn the user's model refusing a probe batch of ``input_shape`` into a :class:`ModelForwardError`.

    The body runs ``model`` on that batch, possibly with our own code around or inside it (hooks, an op counter).
    When the body raises, the model runs once more alone on the same batch to learn whose fault it was: if it fails
    again, the model refuses the input and its own exception becomes a ``ModelForwardError`` (chained to it); if it
    runs, our code failed, and the body's exception propagates unchanged, as the bug it is. Errors of the
    :class:`~surgeon.errors.SurgeonError` family always propagate unchanged.

    Args:
        model: the user's model.
        input_shape: the probe batch's shape.
        name: how to call the model in the message (its class name by default).
    """
    shape = tuple(int(v) for v in input_shape)
    try:
        yield
    except SurgeonError:
        raise
    except Exception:
        try:
            run_outputs(model, probe_input(shape, model))
        except Exception as exc:  # the model's own code refuses the batch, whatever it raises
            raise ModelForwardError(name or type(model).__name__, shape, _first_line(exc),
                                    declared_input_shape(model)) from exc
        raise


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, or the bare type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
