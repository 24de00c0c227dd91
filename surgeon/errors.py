"""Typed errors raised by the library.

Every error a user can cause derives from :class:`SurgeonError`. The CLI turns these into one line on stderr
and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "SurgeonError",
    "BlockError",
    "ModelLoadError",
    "CheckpointError",
    "NoMatchError",
    "SelectorError",
    "TraceError",
    "RewriteError",
    "VerificationError",
    "OutputExistsError",
    "RuleError",
]


class SurgeonError(Exception):
    """Base class of every error that a user's input can cause."""


class BlockError(SurgeonError, ValueError):
    """An unknown block name, bad block arguments, or a block that breaks the shape contract."""


class ModelLoadError(SurgeonError):
    """A model spec or model file that cannot be turned into an ``nn.Module``."""


class CheckpointError(SurgeonError):
    """A checkpoint whose tensors do not fit the architecture, or a file we refuse to unpickle."""


class SelectorError(SurgeonError, ValueError):
    """A site selector that cannot be parsed."""


class NoMatchError(SurgeonError):
    """A selector that matched no site of the model."""


class TraceError(SurgeonError):
    """No module enclosing a site could be traced by torch.fx; the message names each one tried and why."""


class RewriteError(SurgeonError):
    """A planned insertion that cannot be realised on this model."""


class VerificationError(SurgeonError):
    """The patched model broke one of the guarantees (keys, values, forward)."""


class OutputExistsError(SurgeonError, FileExistsError):
    """The output path exists and ``force`` was not given."""


class RuleError(SurgeonError):
    """A rules file that cannot be read, or a rule that cannot be applied; the message starts with
    ``file:line:column: rule 'name':``."""
