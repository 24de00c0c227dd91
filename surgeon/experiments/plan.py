"""The plan of an ablation, as plain data: the model, the arms, the seeds, the trainer and its arguments.

The plan is what ``EXPDIR/plan.json`` holds and what decides whether a directory is the same experiment (it
resumes) or another one (it is refused). Everything an arm needs to be rebuilt in another process is in it: the
arguments of :func:`surgeon.pipeline.insert_rule` for a block, the text of a rules file, a patched checkpoint's
recipe, a control's spec. Files are identified by their SHA-256, so an edited file is another plan.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SurgeonError
from ..io import FrameworkAdapter, adapter_named
from ..pipeline.surgery import recipe_source, resolve
from ..recipe import versions
from ..rules import PRESET_DIR, list_presets
from .options import AblateOptions

__all__ = ["ARM_KINDS", "PLAN_SCHEMA", "PLAN_VERSION", "Arm", "ExperimentPlan", "build_plan", "check_trainer_spec",
           "framework_trainer"]

PLAN_SCHEMA = "attn-surgeon/ablate-plan"
PLAN_VERSION = 1
ARM_KINDS = ("baseline", "candidate", "control")
BASELINE = "baseline"


@dataclass(frozen=True)
class Arm:
    """One arm of the experiment: a model trained once per seed.

    Attributes:
        name: how tables name it (``baseline``, the block, the rules file's stem, the control's spec).
        kind: ``baseline``, ``candidate`` or ``control``.
        insert: for a block: the arguments of :func:`surgeon.pipeline.insert_rule` (``block``, ``after``,
            ``position``, ``init``, ``stage``, ``stride``).
        rules: for a rules file or preset: the document's YAML text.
        recipe: for a patched checkpoint given as rules: its recipe, replayed.
        source: what the user gave for a rules arm (its file or preset); a control's spec, or its file's absolute
            path.
        sha256: a control file's SHA-256.
    """

    name: str
    kind: str
    insert: dict[str, Any] | None = None
    rules: str | None = None
    recipe: dict[str, Any] | None = None
    source: str | None = None
    sha256: str | None = None

    @property
    def directory(self) -> str:
        """The arm's directory under ``EXPDIR/trials/``: its name with anything but ``A-Za-z0-9._-`` as ``-``."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-.") or "arm"

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class ExperimentPlan:
    """The whole experiment as data (see the module docstring).

    Attributes:
        model: ``source`` (spec or path), ``sha256`` of a file, ``arch``, ``arch_args``, ``trust_code``,
            ``trust_pickle``, ``input_shape``.
        arms: the baseline first, then the candidates, then the controls.
        seeds: every arm is trained once with each.
        trainer: ``spec`` (``package.module:function`` or ``ultralytics``) and ``args`` (the Ultralytics trainer's).
        metric: the compared metric, or ``None`` for the first the trainer returns.
        mode: ``max`` or ``min``.
        versions: of attn-surgeon and torch when the plan was made (recorded, not compared).
    """

    model: dict[str, Any]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    trainer: dict[str, Any]
    metric: str | None
    mode: str
    versions: dict[str, str] = field(default_factory=versions)

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": PLAN_SCHEMA, "version": PLAN_VERSION, "model": dict(self.model),
                "arms": [arm.to_dict() for arm in self.arms], "seeds": list(self.seeds),
                "trainer": dict(self.trainer), "metric": self.metric, "mode": self.mode,
                "versions": dict(self.versions)}

    def identity(self) -> dict[str, Any]:
        """What makes two plans the same experiment: everything but the versions."""
        data = self.to_dict()
        del data["versions"]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ExperimentPlan:
        """Read :meth:`to_dict`'s output back.

        Raises:
            SurgeonError: not a plan of this version.
        """
        if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
            raise SurgeonError("not an attn-surgeon ablation plan")
        if data.get("version") != PLAN_VERSION:
            raise SurgeonError(f"an ablation plan of version {data.get('version')}; this attn-surgeon reads version "
                               f"{PLAN_VERSION}")
        arms = tuple(Arm(**arm) for arm in data["arms"])
        return cls(dict(data["model"]), arms, tuple(data["seeds"]), dict(data["trainer"]), data["metric"],
                   data["mode"], dict(data.get("versions", {})))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source(source: str) -> dict[str, Any]:
    """A model's spec as given, or a file's absolute path and SHA-256 (trials may run in another directory)."""
    if os.path.isfile(source):
        path = Path(source).resolve()
        return {"source": str(path), "sha256": _sha256(path)}
    if os.path.isdir(source):
        return {"source": str(Path(source).resolve())}
    return {"source": source}


def framework_trainer(name: str | None) -> FrameworkAdapter | None:
    """The registered framework adapter called ``name`` if it trains models (Ultralytics'), else ``None``."""
    adapter = adapter_named(name)
    if adapter is None or type(adapter).train is FrameworkAdapter.train:
        return None
    return adapter


def check_trainer_spec(spec: str) -> None:
    """Refuse a trainer that is neither a framework that trains (``ultralytics``) nor ``package.module:function``
    (which is imported only in the trials' processes).

    Raises:
        SurgeonError: with the forms expected.
    """
    module, sep, function = spec.partition(":")
    if framework_trainer(spec) is None and not (sep and module and function.isidentifier()
                                                and all(part.isidentifier() for part in module.split("."))):
        raise SurgeonError(f"trainer {spec!r}: expected package.module:function (called as function(model, *, seed, "
                           "workdir)) or ultralytics (Ultralytics' own trainer)")


def _rules_arm(source: str, trust_code: bool) -> Arm:
    """A candidate from a rules file, a preset, or a patched checkpoint (its recipe); read now, so that a bad file
    fails before anything runs and an edited file makes another plan."""
    recipe = recipe_source(source, trust_code)
    name = Path(source).stem if os.path.exists(source) else source
    if recipe is not None:
        return Arm(name, "candidate", recipe=recipe.to_dict(), source=source)
    resolve(source, trust_code=trust_code)  # raises RuleError with the file's line and column
    path = Path(source) if os.path.isfile(source) else PRESET_DIR / f"{source}.yaml"
    if not os.path.isfile(source) and source not in list_presets():
        raise SurgeonError(f"--rules {source}: give a rules file or a preset name")
    return Arm(name, "candidate", rules=path.read_text(encoding="utf-8"), source=source)


def build_plan(source: str, options: AblateOptions, trainer: str) -> ExperimentPlan:
    """The plan of ``options`` on the model ``source``, trained by ``trainer``.

    Raises:
        SurgeonError: a bad trainer spec, a rules file that cannot be read, or two arms with the same name.
    """
    check_trainer_spec(trainer)
    if framework_trainer(trainer) is None and options.train_args:
        raise SurgeonError("train args are a framework trainer's (ultralytics); a package.module:function trainer "
                           "takes its settings from its own code")
    loading = options.loading
    placement = options.placement
    arms = [Arm(BASELINE, "baseline")]
    for block in options.blocks:
        arguments = {"block": block, "after": placement.after, "position": placement.position,
                     "init": placement.init, "stage": placement.stage, "stride": placement.stride}
        arms.append(Arm(block, "candidate", insert=arguments))
    arms += [_rules_arm(rules, loading.trust_code) for rules in options.rules]
    for control in options.controls:
        identity = _source(control)
        arms.append(Arm(control, "control", source=identity["source"], sha256=identity.get("sha256")))
    seen: dict[str, str] = {}
    for arm in arms:
        if arm.directory in seen:
            raise SurgeonError(f"two arms would share the name {arm.name!r} ({seen[arm.directory]} and {arm.kind}); "
                               "give each candidate and control once")
        seen[arm.directory] = arm.kind
    model = {**_source(source), "arch": loading.arch, "arch_args": dict(loading.arch_args),
             "trust_code": loading.trust_code, "trust_pickle": loading.trust_pickle,
             "input_shape": list(loading.input_shape) if loading.input_shape else None}
    return ExperimentPlan(model, tuple(arms), options.seeds, {"spec": trainer, "args": dict(options.train_args)},
                          options.metric, options.mode)
