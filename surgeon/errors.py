"""Typed errors raised by the library.

Every error a user can cause derives from :class:`SurgeonError`. The CLI turns these into one line on stderr
and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "SurgeonError",
    "BlockError",
    "ModelLoadError",
    "CheckpointError",
    "ExperimentError",
    "NoMatchError",
    "SelectorError",
    "TraceError",
    "RewriteError",
    "VerificationError",
    "OutputExistsError",
    "RuleError",
    "ModelForwardError",
    "TrainerError",
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


class ExperimentError(SurgeonError):
    """An ablation that cannot run or be read: another experiment in the directory, a store that cannot be read."""


class TrainerError(SurgeonError):
    """A framework asked to train a model has no trainer attn-surgeon can run, or its trainer failed."""


class ModelForwardError(SurgeonError):
    """The user's model raised an exception on the probe batch, usually because it runs only at the input size it
    was built for; the message names the model, the probe's shape, the model's own error and the shape to pass.

    Attributes:
        model: how the model is named (its class name, or the spec or path the command line was given).
        input_shape: the probe batch's shape.
        reason: the model's exception as ``Type: first line of its message``.
        declared: the ``(1, C, H, W)`` input the model declares, or ``None``.
        command_line: phrase the advice as the ``--input-shape`` option rather than the ``input_shape`` argument.
    """

    def __init__(self, model: str, input_shape: Sequence[int], reason: str, declared: Sequence[int] | None = None,
                 command_line: bool = False) -> None:
        self.model, self.reason, self.command_line = model, reason, command_line
        self.input_shape = tuple(input_shape)
        self.declared = tuple(declared) if declared is not None else None
        super().__init__(self._message())

    def __reduce__(self) -> tuple:  # the message is built from the fields: pickle those (multiprocessing, DDP)
        return type(self), (self.model, self.input_shape, self.reason, self.declared, self.command_line)

    def on_command_line(self, model: str | None = None, input_shape: Sequence[int] | None = None) -> ModelForwardError:
        """The same error as the command line says it: naming ``model`` (a spec or path), the ``input_shape`` it was
        given (a count of one image runs a batch of one of it) and the ``--input-shape`` option."""
        return ModelForwardError(model or self.model, input_shape or self.input_shape, self.reason, self.declared, True)

    def _shape(self, shape: Sequence[int | str]) -> str:
        return ",".join(map(str, shape)) if self.command_line else f"({', '.join(map(str, shape))})"

    def _message(self) -> str:
        option = "--input-shape " if self.command_line else "input_shape="
        reason = self.reason if self.reason.endswith((".", "!", "?")) else self.reason + "."
        # the advice keeps the caller's batch size; only channels and image size come from the model
        suggested = (self.input_shape[0], *self.declared[1:]) if self.declared is not None else None
        if suggested is not None and suggested != self.input_shape:
            advice = f"Pass {option}{self._shape(suggested)}, the input size it declares."
        else:
            advice = f"Pass {option}{self._shape(('N', 'C', 'H', 'W'))} with the input size it was built for."
        return f"{self.model} fails on a probe batch of shape {self._shape(self.input_shape)}: {reason} {advice}"

