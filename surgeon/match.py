"""Selectors, rules and the plan: which block goes where.

Matching is one pure function, :func:`matches`, of a site and a selector. A selector's fields are ANDed:

1. ``exclude`` first: a site that matches the exclude selector never matches.
2. ``kind`` (``block``/``bottleneck``, ``conv``, ``module``), then ``class`` (the site's class name, exact),
   then ``name`` (a dotted glob: ``*`` and ``?`` stay inside one name segment, ``**`` crosses dots) or ``regex``
   (Python ``re.fullmatch`` on the qualified name).
3. Convolution filters (``kernel``, ``stride``, ``groups``, ``dilation``, ``in_channels``, ``out_channels``): a
   number, a list of numbers, or a comparison such as ``">=256"``; they apply to conv sites only, except
   ``stride``/``in_channels``/``out_channels``, which every site has.
4. ``stage`` (numbers from 1) and ``index`` within the stage (negative counts from the end), then ``every: N``
   (every N-th unit of a stage, starting at ``offset``, default 0).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import CheckpointError, NoMatchError, SelectorError
from .recipe import Recipe
from .sites import POSITIONS, Position, Site, SiteTable

__all__ = ["IntFilter", "Selector", "Rule", "Action", "Plan", "parse_site_spec", "parse_int_filter", "matches",
           "select", "make_plan", "plan_from_recipe", "dotted_glob", "POSITIONS", "SITE_KINDS", "RANGE"]

_KIND_ALIASES = {"block": "block", "bottleneck": "block", "residual": "block", "conv": "conv", "module": "module"}
SITE_KINDS = tuple(_KIND_ALIASES)
"""What a selector's ``kind`` may say; ``bottleneck`` and ``residual`` are aliases of ``block``."""
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*(-?\d+)\s*$")
RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-|\.\.)\s*(-?\d+)\s*$")
"""An inclusive integer range, ``2-4`` or ``2..4``."""


@dataclass(frozen=True)
class IntFilter:
    """A set of accepted integers: exact values, a comparison, or an inclusive range."""

    values: tuple[int, ...] = ()
    op: str = "in"
    bound: int = 0

    def __call__(self, value: int | None) -> bool:
        if value is None:
            return False
        if self.op == "in":
            return value in self.values
        return {">=": value >= self.bound, "<=": value <= self.bound, ">": value > self.bound,
                "<": value < self.bound, "!=": value != self.bound}[self.op]

    def __str__(self) -> str:
        if self.op == "in":
            return str(self.values[0]) if len(self.values) == 1 else "[" + ", ".join(map(str, self.values)) + "]"
        return f"{self.op}{self.bound}"


def parse_int_filter(value: Any, what: str = "value") -> IntFilter:
    """``3``, ``[1, 2]``, ``"2-4"`` / ``"2..4"`` (inclusive), ``">=256"``, ``"3x3"`` (a square kernel)."""
    if isinstance(value, IntFilter):
        return value
    if isinstance(value, bool):
        raise SelectorError(f"{what}: expected a number, a list or a comparison like '>=256', got {value!r}")
    if isinstance(value, int):
        return IntFilter((value,))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
        return IntFilter(tuple(value))
    if isinstance(value, str):
        square = re.fullmatch(r"\s*(\d+)x(\d+)\s*", value)
        if square and square.group(1) == square.group(2):
            return IntFilter((int(square.group(1)),))
        ranged = RANGE.match(value)
        if ranged:
            low, high = int(ranged.group(1)), int(ranged.group(2))
            if low > high:
                raise SelectorError(f"{what}: empty range {value!r}")
            return IntFilter(tuple(range(low, high + 1)))
        if "," in value:
            items = [item.strip() for item in value.split(",")]
            if all(re.fullmatch(r"-?\d+", item) for item in items):
                return IntFilter(tuple(int(item) for item in items))
            return _bad(value, what)
        compared = _COMPARISON.match(value)
        if compared:
            op, number = compared.group(1) or "==", int(compared.group(2))
            return IntFilter((number,)) if op == "==" else IntFilter(op=op, bound=number)
    return _bad(value, what)


def _bad(value: Any, what: str) -> IntFilter:
    raise SelectorError(f"{what}: expected a number, a list, a range like '2-4' or a comparison like '>=256', "
                        f"got {value!r}")


def dotted_glob(pattern: str) -> re.Pattern[str]:
    """Compile a dotted-name glob: ``*`` and ``?`` match inside one segment, ``**`` across segments."""
    parts = re.split(r"(\*\*|\*|\?|\[[^\]]*\])", pattern)
    regex = ""
    for part in parts:
        if part == "**":
            regex += ".*"
        elif part == "*":
            regex += "[^.]*"
        elif part == "?":
            regex += "[^.]"
        elif part.startswith("[") and part.endswith("]"):
            regex += fnmatch.translate(part)[4:-3]
        else:
            regex += re.escape(part)
    return re.compile(regex)


@dataclass(frozen=True)
class Selector:
    """Which sites a rule applies to; fields left ``None`` do not constrain. See the module docstring."""

    kind: str | None = None
    cls: str | None = None
    name: str | None = None
    regex: str | None = None
    kernel: IntFilter | None = None
    stride: IntFilter | None = None
    groups: IntFilter | None = None
    dilation: IntFilter | None = None
    in_channels: IntFilter | None = None
    out_channels: IntFilter | None = None
    stage: IntFilter | None = None
    index: IntFilter | None = None
    every: int | None = None
    offset: int = 0
    exclude: Selector | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in _KIND_ALIASES:
            raise SelectorError(f"unknown site kind {self.kind!r}; valid: block (or bottleneck), conv, module")
        if self.kind is not None:
            object.__setattr__(self, "kind", _KIND_ALIASES[self.kind])
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise SelectorError(f"invalid regex {self.regex!r}: {exc}") from None
        if self.every is not None and self.every < 1:
            raise SelectorError(f"every must be >= 1, got {self.every}")

    def describe(self) -> str:
        parts = []
        for key in ("kind", "cls", "name", "regex", "kernel", "stride", "groups", "dilation", "in_channels",
                    "out_channels", "stage", "index", "every", "offset"):
            value = getattr(self, key)
            if value is not None and not (key == "offset" and value == 0):
                parts.append(f"{'class' if key == 'cls' else key}={value}")
        if self.exclude is not None:
            parts.append(f"exclude=({self.exclude.describe()})")
        return ", ".join(parts) or "every site"


def parse_site_spec(text: str, **filters: Any) -> Selector:
    """Turn a command-line site (``--after``) into a selector.

    ``bottleneck``/``block`` → residual units; ``conv`` or ``conv3x3``/``conv1x1``/``convKxK`` → convolutions
    (of that kernel); ``re:PATTERN`` → regex on qualified names; anything with ``.`` or ``*`` → dotted glob on
    qualified names; anything else → a class name (``C2f``, ``InvertedResidual``). ``filters`` are extra fields
    (``stride=1``, ``stage="2-4"``), given as numbers or strings.
    """
    text = text.strip()
    if not text:
        raise SelectorError("empty site; try 'bottleneck', 'conv3x3', a class name or a name glob like 'layer3.*'")
    fields: dict[str, Any] = {key: parse_int_filter(value, key) for key, value in filters.items() if value is not None}
    lowered = text.lower()
    conv = re.fullmatch(r"conv(?:(\d+)x(\d+))?", lowered)
    if lowered in _KIND_ALIASES and lowered != "conv":
        return Selector(kind=lowered, **fields)
    if conv:
        if conv.group(1):
            if conv.group(1) != conv.group(2):
                raise SelectorError(f"only square kernels can be selected this way, got {text!r}")
            fields["kernel"] = IntFilter((int(conv.group(1)),))
        return Selector(kind="conv", **fields)
    if text.startswith("re:"):
        return Selector(regex=text[3:], **fields)
    if "." in text or "*" in text or "?" in text:
        return Selector(name=text, **fields)
    if not text.isidentifier():
        raise SelectorError(f"cannot read site {text!r}: use 'bottleneck', 'conv3x3', a class name, "
                            "a name glob like 'layer3.*' or 're:REGEX'")
    return Selector(cls=text, **fields)


def _index_matches(site: Site, selector: Selector, stage_sizes: dict[int, int]) -> bool:
    if selector.index is None and selector.every is None:
        return True
    if site.index is None or site.stage is None:
        return False
    size = stage_sizes.get(site.stage, 0)
    if selector.index is not None:
        negative = site.index - size
        if not (selector.index(site.index) or selector.index(negative)):
            return False
    if selector.every is not None:
        return site.index >= selector.offset and (site.index - selector.offset) % selector.every == 0
    return True


def matches(site: Site, selector: Selector, stage_sizes: dict[int, int] | None = None) -> bool:
    """Whether ``site`` satisfies every field of ``selector`` (precedence in the module docstring).

    Args:
        site: the candidate.
        selector: the selector.
        stage_sizes: number of residual units per stage, needed for negative ``index`` values.
    """
    if selector.exclude is not None and matches(site, selector.exclude, stage_sizes):
        return False
    if selector.kind is not None and site.kind != selector.kind:
        return False
    if selector.cls is not None and site.cls != selector.cls:
        return False
    if selector.name is not None and not dotted_glob(selector.name).fullmatch(site.name):
        return False
    if selector.regex is not None and not re.fullmatch(selector.regex, site.name):
        return False
    conv_only = {"kernel": site.kernel_size[0] if site.kernel_size and site.kernel_size[0] == site.kernel_size[1]
                 else None, "groups": site.groups, "dilation": site.dilation[0] if site.dilation else None}
    for key, value in (*conv_only.items(), ("stride", site.stride), ("in_channels", site.in_channels),
                       ("out_channels", site.out_channels), ("stage", site.stage)):
        condition = getattr(selector, key)
        if condition is not None and not condition(value):
            return False
    return _index_matches(site, selector, stage_sizes or {})


def _stage_sizes(sites: Iterable[Site]) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for site in sites:
        if site.kind == "block" and site.stage is not None:
            sizes[site.stage] = sizes.get(site.stage, 0) + 1
    return sizes


def select(sites: Sequence[Site], selector: Selector) -> list[Site]:
    """The sites that match, in execution order."""
    sizes = _stage_sizes(sites)
    return [site for site in sites if matches(site, selector, sizes)]


@dataclass(frozen=True)
class Rule:
    """One line of a surgery plan: a selector and an action.

    Attributes:
        selector: which sites.
        block: registry name (or ``package.module:Class``) of the block to insert or swap in.
        op: ``insert`` (add a block at ``position``) or ``replace`` (swap a conv unit, or put an insert block in
            place of a module that keeps its input's shape, such as a model's own SE).
        position: ``residual`` (before the skip addition; default for residual units), ``after`` or ``before``.
        args: block options.
        init: ``identity`` or ``paper``.
        name: the rule's name in messages.
        allow_empty: matching nothing is not an error.
    """

    selector: Selector
    block: str
    op: Literal["insert", "replace"] = "insert"
    position: Position | None = None
    args: dict[str, Any] = field(default_factory=dict)
    init: str = "identity"
    name: str = "rule"
    allow_empty: bool = False

    def position_for(self, site: Site) -> Position:
        if self.position is not None:
            return self.position
        return "residual" if site.kind == "block" else "after"


@dataclass(frozen=True)
class Action:
    """One resolved step: put ``block`` at ``position`` of ``site`` (or swap the site's conv unit)."""

    site: Site
    block: str
    op: Literal["insert", "replace"]
    position: Position | None
    args: dict[str, Any]
    init: str
    rule: str


@dataclass
class Plan:
    """The ordered actions, and the rules that matched nothing (each allowed to)."""

    actions: list[Action]
    empty_rules: list[str] = field(default_factory=list)


def make_plan(sites: Sequence[Site], rules: Sequence[Rule]) -> Plan:
    """Resolve rules against sites, in rule order, then site execution order.

    Two inserts on one site and position stack in rule order. A ``replace`` on a site that an earlier rule already
    replaced is an error naming both rules; so is ``residual`` on a site that is not a residual unit, and a
    ``replace`` of a residual unit or of a module that changes its input's shape.

    Raises:
        NoMatchError: a rule without ``allow_empty`` matched no site.
        SelectorError: a conflicting or impossible action.
    """
    actions: list[Action] = []
    replaced: dict[str, str] = {}
    empty: list[str] = []
    for rule in rules:
        chosen = _candidates(sites, rule)
        if rule.position == "residual":
            chosen = [site for site in chosen if site.kind == "block"]
        if not chosen:
            if rule.allow_empty:
                empty.append(rule.name)
                continue
            wants_units = rule.selector.kind == "block" or rule.position == "residual"
            if wants_units and not any(site.kind == "block" for site in sites):
                raise NoMatchError(
                    f"rule {rule.name!r}: this model has no residual units with convolutions (a pure transformer "
                    "or a plain CNN); select convolutions (--after conv3x3) or modules with NCHW outputs by class "
                    "or name (--after ClassName, --after 'features.*'; `attn-surgeon sites MODEL --kind all` lists "
                    "them)")
            raise NoMatchError(
                f"rule {rule.name!r}: no site matches ({rule.selector.describe()}"
                f"{', position=residual' if rule.position == 'residual' else ''}); "
                "run `attn-surgeon sites MODEL` to see what can match"
            )
        for site in chosen:
            if rule.op == "replace":
                _check_replaceable(rule, site)
                if site.name in replaced:
                    raise SelectorError(f"rule {rule.name!r}: {site.name} is already replaced by rule "
                                        f"{replaced[site.name]!r}")
                replaced[site.name] = rule.name
                actions.append(Action(site, rule.block, "replace", None, dict(rule.args), rule.init, rule.name))
            else:
                actions.append(Action(site, rule.block, "insert", rule.position_for(site), dict(rule.args),
                                      rule.init, rule.name))
    return Plan(actions, empty)


def _candidates(sites: Sequence[Site], rule: Rule) -> list[Site]:
    """A rule's sites; a ``replace`` of modules takes every module its selector picks, residual units included (YOLO11's
    ``Attention``, YOLO12's ``AAttn`` and RT-DETR's ``AIFI`` add a conv branch or their input to their output), never
    a convolution (that is a conv unit's swap); the block takes the module's place in its parent all the same."""
    if rule.op != "replace" or rule.selector.kind != "module":
        return select(sites, rule.selector)
    chosen = select(sites, dataclasses.replace(rule.selector, kind=None))
    return [dataclasses.replace(site, kind="module") for site in chosen if site.kind != "conv"]


def _check_replaceable(rule: Rule, site: Site) -> None:
    """``replace`` swaps a conv unit, or puts a block in place of a module that keeps its input's shape (a model's
    own attention module: SE, ECA, CBAM)."""
    if site.kind == "block":
        raise SelectorError(f"rule {rule.name!r}: replace works on conv units and attention modules, "
                            f"{site.name} is a residual unit")
    if site.kind == "module" and (site.in_channels, site.in_size) != (site.out_channels, site.out_size):
        raise SelectorError(f"rule {rule.name!r}: {site.name} ({site.cls}) maps {site.in_channels} channels at "
                            f"{site.in_size[0]}x{site.in_size[1]} to {site.out_channels} at "
                            f"{site.out_size[0]}x{site.out_size[1]}; a block replaces only a module that keeps its "
                            "input's shape (an attention module such as SE)")


def plan_from_recipe(recipe: Recipe, table: SiteTable) -> Plan:
    """The plan that replays ``recipe`` on a model whose sites are ``table``.

    Raises:
        CheckpointError: a recorded site is missing or has other channels (the base model is not the same).
    """
    sites = table.by_name()
    actions = []
    for step in recipe.steps:
        site = sites.get(step.site)
        if site is None:
            raise CheckpointError(f"recipe step for {step.site!r}: the model has no such site; "
                                  "is it the same base architecture?")
        if step.op == "replace" and step.kind == "module":  # a residual unit that a block replaced whole
            site = dataclasses.replace(site, kind="module")
        channels = site.channels_at(step.position)
        if step.channels and channels != step.channels:
            raise CheckpointError(f"recipe step for {step.site!r}: expected {step.channels} channels, the model has "
                                  f"{channels}; is it the same base architecture?")
        actions.append(Action(site, step.block, step.op, step.position, dict(step.args), step.init,
                              step.rule or "recipe"))
    return Plan(actions)
