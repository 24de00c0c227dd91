"""The framework adapter contract: what attn-surgeon needs to know of a framework, in one abstract class.

A framework (torchvision, timm, Ultralytics, Hugging Face transformers, ...) is one :class:`FrameworkAdapter`
subclass, registered once in :mod:`surgeon.io.registry`. Its methods are called by name by the readers and writers of
:mod:`surgeon.io`, by the profiler, by the CLI and by the pipeline; each has a default that means "the framework does
not do this", so an adapter overrides only what its framework has: specs it builds, files or directories it
recognises and reads, a native layout it writes, training hooks, a FLOP count of its own, a trainer.

Two promises every adapter keeps:

- reading has no side effects: :meth:`~FrameworkAdapter.read_directory` and :meth:`~FrameworkAdapter.adopt` return
  the base model, its recipe and the state still to load, and install or replay nothing (the pipeline replays the
  recipe, loads the state with :meth:`~FrameworkAdapter.load_state`, and installs the training hooks);
- writing only writes: :meth:`~FrameworkAdapter.write` never patches a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, TrainerError
from ..recipe import Recipe
from .detect import Detection
from .layouts import Layout, SaveResult, load_weights

__all__ = ["FrameworkAdapter", "LoadOptions", "LoadedModel", "ReferenceFlops", "Replay", "load_plain_state"]

Replay = Callable[[nn.Module, Recipe], nn.Module]
"""The one replay path (:func:`surgeon.pipeline.replay`), handed to an adapter's training hooks by the pipeline."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: what ``--arch``, ``--arch-args``, ``--trust-code`` and ``--trust-pickle`` say.

    Attributes:
        arch: the architecture spec of a file that holds only weights (detected from its keys without it), or the
            class of a framework's model directory (``transformers:ClassName``).
        arch_args: keyword arguments of the architecture's factory (a transformers config's fields).
        trust_code: allow a recipe that imports code: a ``package.module:factory`` base or ``package.module:Class``
            blocks.
        trust_pickle: allow a file that holds pickled code (``torch.save(model)``); unpickling runs that code.
    """

    arch: str | None = None
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    trust_code: bool = False
    trust_pickle: bool = False


@dataclass
class LoadedModel:
    """A model read from a spec, a file or a directory, in the layout it came in.

    A reader returns the *base* model: where ``state`` is set, the pipeline replays ``recipe`` on ``module`` and then
    loads ``state`` into it (:meth:`FrameworkAdapter.load_state`), after which ``state`` is ``None``.

    Attributes:
        module: the model.
        spec: the architecture it was built as (``torchvision:resnet50``), or ``None`` for a pickled model without one.
        arch_args: the factory arguments it was built with.
        layout: how its source stored it, so that the output stores it the same way.
        path: the file or directory it was read from (``None`` for a spec).
        recipe: the surgery its source records, replayed or to replay.
        detection: what architecture detection found, when the spec was detected from the weights.
        state: weights still to be loaded into ``module`` (after the replay), or ``None``.
    """

    module: nn.Module
    spec: str | None
    arch_args: dict[str, Any] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    path: Path | None = None
    recipe: Recipe | None = None
    detection: Detection | None = None
    state: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class ReferenceFlops:
    """The GFLOPs a framework itself reports for one of its models, to be stated beside attn-surgeon's count.

    Attributes:
        counter: what the user runs to see the number (``model.info()``).
        method: how that counter counts (``thop: 2 x conv/linear MACs``).
        image_shape: the ``(C, H, W)`` input it counts at (the framework's default image size).
        input_label: that input in the framework's words (``Ultralytics' default imgsz=640``).
        gflops: its number, or ``None`` where the framework cannot count here (a counter it needs is missing).
    """

    counter: str
    method: str
    image_shape: tuple[int, ...]
    input_label: str
    gflops: float | None


def load_plain_state(loaded: LoadedModel) -> None:
    """Load ``loaded.state`` strictly into ``loaded.module`` after removing the key prefix that makes it fit (a plain
    checkpoint's way, and an adapter's by default); the layout records that prefix."""
    if loaded.state is not None:
        what = f"--arch {loaded.spec}" if loaded.recipe is None else f"{loaded.spec} patched by its recipe"
        loaded.layout.prefix = load_weights(loaded.module, loaded.state, what)


class FrameworkAdapter(ABC):
    """One framework's specs, files, layouts, training hooks, reports and trainer.

    Subclasses set :attr:`name` and implement :meth:`build` and :meth:`owns`; every other method has a default
    meaning "the framework has no such thing". An adapter imports its framework only inside its methods, so
    registering it costs nothing until one of its specs, files or models is met.

    Attributes:
        name: the spec prefix of its models (``ultralytics`` for ``ultralytics:yolov8n.yaml``) and the
            ``Layout.framework`` of its native layout.
        title: what messages call its checkpoint files (``an Ultralytics checkpoint``), or ``None``.
        writes_directory: whether its native layout is a directory (the default output name then has no suffix).
    """

    name: str = ""
    title: str | None = None
    writes_directory: bool = False

    # ------------------------------------------------------------------------------------------------ models

    @abstractmethod
    def build(self, name: str, **arch_args: Any) -> nn.Module:
        """The model of spec ``NAME:name``, with random weights and nothing downloaded.

        Raises:
            ModelLoadError: no such model, or arguments it does not take.
        """

    @abstractmethod
    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` is one of the framework's models. Must not import the framework."""

    def owns_global(self, global_name: str) -> bool:
        """Whether a class a pickle refers to (``ultralytics.nn.tasks.DetectionModel``) is the framework's, which
        names the file as one of its checkpoints."""
        return False

    # ------------------------------------------------------------------------------------------------- files

    def is_model_directory(self, path: Path) -> bool:
        """Whether ``path`` (an existing directory) is one of the framework's model directories, by content."""
        return False

    def read_directory(self, path: Path, options: LoadOptions) -> LoadedModel:
        """Read one of its model directories: the base model, the recipe it records, and the weights to load.

        Nothing is replayed or installed. A recipe that imports code is refused without ``options.trust_code``.

        Raises:
            ModelLoadError, CheckpointError: one line saying what is wrong and what to do.
        """
        raise CheckpointError(f"{path}: {self.name} reads no model directories")

    def read_recipe(self, path: Path) -> Recipe | None:
        """The recipe one of its model directories records, or ``None``."""
        return None

    def restricted_load(self, path: Path) -> Any:
        """The framework's own weights-only loader for a pickled file of its own that the user trusts, tried before
        anything is fully unpickled; ``None`` where it refuses the file (or the framework has no such loader)."""
        return None

    def adopt(self, model: nn.Module) -> nn.Module:
        """One of its models unpickled from a file, as the framework's own loader would return it (no side effects)."""
        return model

    def arch_hint(self, container: Mapping[str, Any]) -> str | None:
        """The spec a checkpoint container of the framework's training script names (timm's ``arch``), or ``None``;
        architecture detection tries it first."""
        return None

    def load_state(self, loaded: LoadedModel) -> None:
        """Load ``loaded.state`` into ``loaded.module`` (its recipe replayed), strictly; set the layout's prefix.

        Raises:
            CheckpointError: the weights do not fit the model.
        """
        load_plain_state(loaded)

    def native_layout(self, model: nn.Module) -> Layout | None:
        """The layout one of its models is saved in by default (its ``framework`` set to :attr:`name`); ``None``
        for a model that is not the framework's, or a framework without a layout of its own."""
        return None

    def write(self, model: nn.Module, path: Path, recipe: Recipe, layout: Layout, *, force: bool = False,
              protect: tuple[Path, ...] = ()) -> SaveResult:
        """Write ``model`` with ``recipe`` in the framework's native ``layout``; writes only, patches nothing.

        Raises:
            OutputExistsError: ``path`` exists and ``force`` is false, or ``path`` is one of ``protect``.
            CheckpointError: the write failed; nothing was written.
        """
        raise CheckpointError(f"{self.name} has no native layout to write {path} in")

    # -------------------------------------------------------------------------------------------- surgery

    def check_model(self, model: nn.Module) -> None:
        """Before surgery and before saving: raise a :class:`~surgeon.errors.SurgeonError` for one of its models
        that lost blocks it records; do nothing for any other model."""

    def note_recipe(self, model: nn.Module, recipe: Recipe) -> None:
        """After a surgery or a replay gave ``model`` its recipe: keep the recipe where the framework's own saving
        finds it (a transformers config); do nothing for any other model."""

    def install_training_hooks(self, replay: Replay) -> None:
        """Make the framework's own training keep inserted blocks, replaying recipes with ``replay``.

        Called by the pipeline, explicitly; idempotent; never by a read.
        """

    # ----------------------------------------------------------------------------------------------- reports

    def reference_flops(self, model: nn.Module) -> ReferenceFlops | None:
        """The GFLOPs the framework itself reports for one of its models, or ``None``."""
        return None

    def places(self, model: nn.Module) -> dict[str, str]:
        """The places people put attention in one of its models, by site name (``model.9``: ``SPPF``)."""
        return {}

    # ---------------------------------------------------------------------------------------------- training

    def train(self, model: nn.Module, *, seed: int, workdir: Path, args: Mapping[str, Any],
              metric: str) -> dict[str, float]:
        """Train ``model`` with the framework's own trainer, for ``attn-surgeon ablate``.

        Args:
            model: the (patched) model, trained in place.
            seed: the trial's seed.
            workdir: the trial's directory; the trainer writes its output there.
            args: the trainer's arguments (``epochs``, ``data``, ...).
            metric: the metric to report, by the trainer's name for it.

        Returns:
            The final metrics, by name; ``metric`` among them.

        Raises:
            TrainerError: the framework has no trainer, or it failed.
        """
        raise TrainerError(f"{self.name} has no trainer attn-surgeon can run; pass your own as "
                           "--trainer package.module:function")
