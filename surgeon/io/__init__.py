"""The I/O wing: models in and out of files, and the framework adapters that know each framework's own.

One concept per module, lowest first:

- :mod:`.layouts` — where a checkpoint keeps its weights (bare, container, prefix, EMA siblings), and putting them
  back the same way;
- :mod:`.files` — what kind a file is, safetensors reading, atomic writing;
- :mod:`.specs` — architecture specs (``torchvision:resnet50``), built with random weights, or on the meta device;
- :mod:`.detect` — which torchvision or timm architecture a state_dict belongs to;
- :mod:`.adapter` — the :class:`FrameworkAdapter` contract, and what it reads into (:class:`LoadedModel`);
- :mod:`.builtin` — the torchvision and timm adapters;
- :mod:`.registry` — the registered adapters and the lookups that choose one;
- :mod:`.reading` — reading a spec, file or directory, without side effects (nothing replayed, nothing installed);
- :mod:`.saving` — writing a patched model (never patching it), and the default output name.

Rebuilding a patched model (read, replay the recipe, load the weights) is :func:`surgeon.pipeline.load_model`.
"""

from .adapter import FrameworkAdapter, LoadedModel, LoadOptions, ReferenceFlops, Replay
from .files import atomic_write, file_mode, is_checkpoint
from .layouts import CHECKPOINT_FORMATS, Layout, SaveResult
from .reading import load_state, read_checkpoint, read_model, read_recipe
from .registry import adapter_named, adapters, build_arch, register, registered, unregister
from .saving import default_output, save_model, writes_directory
from .specs import is_spec, meta_model

__all__ = ["CHECKPOINT_FORMATS", "FrameworkAdapter", "Layout", "LoadOptions", "LoadedModel", "ReferenceFlops",
           "Replay", "SaveResult", "adapter_named", "adapters", "atomic_write", "build_arch", "default_output",
           "file_mode", "is_checkpoint", "is_spec", "load_state", "meta_model", "read_checkpoint", "read_model",
           "read_recipe", "register", "registered", "save_model", "unregister", "writes_directory"]
