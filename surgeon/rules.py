"""Rules files: a small YAML language for surgery plans, read into :class:`~surgeon.match.Rule` objects.

The language is documented in ``rules/README.md``. The reader never builds arbitrary Python objects: the text is
composed into YAML nodes by PyYAML's safe loader (aliases refused, so no expansion bombs; files over
:data:`MAX_BYTES` refused before parsing), and every node is checked against the schema here, so each error can
point at the node that caused it. Every error is a :class:`~surgeon.errors.RuleError` whose message starts with
``file:line:column:`` (1-based) and, inside a rule, ``rule 'name':``.
"""

from __future__ import annotations

import difflib
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .blocks import BlockInfo, get_block, list_blocks
from .blocks._registry import INIT_MODES, validate_block_args
from .checkpoint import CONTAINER_KEYS, RECIPE_KEY, read_checkpoint
from .frameworks import framework_of_directory
from .errors import BlockError, CheckpointError, RuleError, SelectorError, SurgeonError
from .match import POSITIONS, IntFilter, Rule, Selector, dotted_glob, parse_int_filter
from .recipe import Recipe

__all__ = [
    "MAX_BYTES",
    "PRESET_DIR",
    "Location",
    "RuleSet",
    "is_checkpoint",
    "list_presets",
    "load_rules",
    "locate",
    "parse_rules",
    "read_recipe",
    "rules_from_recipe",
]

MAX_BYTES = 1 << 20
PRESET_DIR = Path(__file__).resolve().parent.parent / "rules"
_MAX_DEPTH = 32
_MAX_RANGE = 4096
_TOP_KEYS = ("version", "description", "init", "rules")
_RULE_KEYS = ("name", "match", "insert", "replace", "allow_empty")
_INSERT_KEYS = ("block", "position", "args", "init")
_REPLACE_KEYS = ("block", "args")
_INT_FILTERS = ("kernel", "stride", "groups", "dilation", "in_channels", "out_channels", "stage", "index")
_SELECTOR_KEYS = ("kind", "class", "name", "regex", *_INT_FILTERS, "every", "offset", "exclude")
_CONV_ONLY = ("kernel", "groups", "dilation")
_KINDS = ("block", "bottleneck", "residual", "conv", "module")
_RULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,63}")
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")}
_RANGE = re.compile(r"\s*(-?\d+)\s*(?:-|\.\.)\s*(-?\d+)\s*")


@dataclass(frozen=True)
class Location:
    """A place in a rules file; ``line`` and ``column`` count from 1."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class RuleSet(list):  # list[Rule], plus where each rule was written
    """The rules of one document, in file order; ``locations`` maps each rule's name to where it starts."""

    def __init__(self, rules: Sequence[Rule] = (), source: str = "<rules>",
                 locations: Mapping[str, Location] | None = None) -> None:
        super().__init__(rules)
        self.source = source
        self.locations: dict[str, Location] = dict(locations or {})


def list_presets() -> list[str]:
    """Names of the presets shipped in ``rules/`` (``se_resnet``, ``eca_resnet``, ...)."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []


def _text_location(file: str, text: str, index: int) -> Location:
    before = text[:index]
    return Location(file, before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def _error(where: Location, message: str, rule: str | None = None) -> RuleError:
    return RuleError(f"{where}: {f'rule {rule!r}: ' if rule else ''}{message}")


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases: rules never need them, and they are how expansion bombs are built."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in rules files",
                                       problem_mark=self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _compose(data: str | bytes, file: str) -> tuple[Node | None, _Loader]:
    if len(data) > MAX_BYTES:
        raise _error(Location(file, 1, 1), f"file too large ({len(data):,} bytes; rules files are limited to "
                                           f"{MAX_BYTES:,})")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            where = _text_location(file, data[: exc.start].decode("utf-8", "replace"), exc.start)
            raise _error(where, "not UTF-8 text") from None
    try:
        loader = _Loader(data)  # the reader checks for unprintable characters here already
        return loader.get_single_node(), loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        at = data[mark.index] if mark and mark.index < len(data) else ""
        hint = "; quote comparisons and ranges, e.g. \">=256\"" if at in ("<", ">", "!", "=") else ""
        raise _error(where, f"invalid YAML: {exc.problem or exc.context}{hint}") from None
    except yaml.reader.ReaderError as exc:
        raise _error(_text_location(file, data, exc.position), f"invalid YAML: {exc.reason} "
                                                                f"(character {exc.character!r})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise _error(Location(file, 1, 1), f"invalid YAML: {reason}") from None


class _Reader:
    """Walks the composed nodes against the schema; ``rule`` names the rule being read, for messages."""

    def __init__(self, file: str, loader: _Loader, trust_code: bool) -> None:
        self.file, self.loader, self.trust_code = file, loader, trust_code
        self.rule: str | None = None

    def where(self, node: Node) -> Location:
        return Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: Node, message: str) -> NoReturn:
        raise _error(self.where(node), message, self.rule)

    def mapping(self, node: Node, keys: Sequence[str] | None, what: str) -> dict[str, tuple[Node, Node]]:
        """The entries of a mapping node by key; ``keys`` lists the valid ones (``None``: any name)."""
        if not isinstance(node, MappingNode) or node.tag != "tag:yaml.org,2002:map":
            self.fail(node, f"{what} must be a mapping of keys to values")
        found: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, "a key") if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.fail(key_node, f"keys of {what} must be names")
            if keys is not None and key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(key_node, f"unknown key {key!r} in {what}{hint}; valid keys: {', '.join(keys)}")
            if key in found:
                self.fail(key_node, f"duplicate key {key!r} in {what}")
            found[key] = (key_node, value_node)
        return found

    def scalar(self, node: Node, what: str) -> Any:
        if not isinstance(node, ScalarNode):
            shape = "list" if isinstance(node, SequenceNode) else "mapping"
            self.fail(node, f"{what} must be a single value, not a {shape}")
        if node.tag not in _SCALAR_TAGS:
            self.fail(node, f"{what}: unsupported YAML type {node.tag!r}; use plain numbers, strings and booleans")
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.fail(node, f"{what}: cannot read {node.value!r} ({str(exc).splitlines()[0] if str(exc) else exc})")

    def typed(self, node: Node, kind: type | tuple[type, ...], what: str, expected: str) -> Any:
        value = self.scalar(node, what)
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple)
                                                                                     else (kind,))):
            self.fail(node, f"{what} must be {expected}, got {value!r}")
        return value

    def choice(self, node: Node, choices: Sequence[str], what: str) -> str:
        value = self.scalar(node, what)
        if value not in choices:
            self.fail(node, f"{what} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def plain(self, node: Node, what: str, depth: int = 0) -> Any:
        """A block option's value: a scalar, or lists and mappings of them."""
        if depth > _MAX_DEPTH:
            self.fail(node, f"{what} is nested too deeply")
        if isinstance(node, SequenceNode) and node.tag == "tag:yaml.org,2002:seq":
            return [self.plain(item, what, depth + 1) for item in node.value]
        if isinstance(node, MappingNode) and node.tag == "tag:yaml.org,2002:map":
            return {self.typed(key, str, f"a key of {what}", "a name"): self.plain(value, what, depth + 1)
                    for key, value in node.value}
        return self.scalar(node, what)


def _int_filter(reader: _Reader, node: Node, key: str) -> Any:
    value = reader.plain(node, key)
    ranged = _RANGE.fullmatch(value) if isinstance(value, str) else None
    if ranged and int(ranged.group(2)) - int(ranged.group(1)) > _MAX_RANGE:
        reader.fail(node, f"{key}: range {value!r} is too wide; use a comparison such as '>={ranged.group(1)}'")
    try:
        return parse_int_filter(value, key)
    except SelectorError as exc:
        reader.fail(node, str(exc))


def _selector(reader: _Reader, node: Node, what: str = "match", depth: int = 0) -> Selector:
    fields = reader.mapping(node, _SELECTOR_KEYS, what)
    if not fields:
        reader.fail(node, f"{what} is empty and would select every site; give at least one key such as 'kind: block'")
    values: dict[str, Any] = {}
    kind = None
    if "kind" in fields:
        kind = values["kind"] = reader.choice(fields["kind"][1], _KINDS, "kind")
    for key in ("class", "name", "regex"):
        if key in fields:
            values["cls" if key == "class" else key] = reader.typed(fields[key][1], str, key, "a string")
    for key, checker in (("name", dotted_glob), ("regex", re.compile)):
        if key in values:
            try:
                checker(values[key])
            except (re.error, RecursionError, OverflowError, ValueError) as exc:
                reader.fail(fields[key][1], f"invalid {key} {values[key]!r}: {exc}")
    for key in _INT_FILTERS:
        if key in fields:
            if kind in ("block", "bottleneck", "residual", "module") and key in _CONV_ONLY:
                reader.fail(fields[key][0], f"{key} filters conv sites only, and this selector has kind: {kind}")
            if kind in ("conv", "module") and key == "index":
                reader.fail(fields[key][0], f"index counts residual units within a stage; {kind} sites have none "
                                            "(select them with stage and a name glob such as 'layer*.*.conv2')")
            values[key] = _int_filter(reader, fields[key][1], key)
    if "every" in fields:
        values["every"] = every = reader.typed(fields["every"][1], int, "every", "a whole number >= 1")
        if every < 1:
            reader.fail(fields["every"][1], f"every must be >= 1, got {every}")
    if "offset" in fields:
        if "every" not in fields:
            reader.fail(fields["offset"][0], "offset counts from the first unit for 'every'; give every: N too")
        values["offset"] = offset = reader.typed(fields["offset"][1], int, "offset", "a whole number >= 0")
        if offset < 0:
            reader.fail(fields["offset"][1], f"offset must be >= 0, got {offset}")
    if "exclude" in fields:
        if depth >= 4:
            reader.fail(fields["exclude"][0], "exclude is nested too deeply")
        values["exclude"] = _selector(reader, fields["exclude"][1], "exclude", depth + 1)
    try:
        return Selector(**values)
    except SelectorError as exc:
        reader.fail(node, str(exc))


def _block(reader: _Reader, node: Node, op: str) -> BlockInfo:
    name = reader.typed(node, str, "block", "a block name")
    if ":" in name and not reader.trust_code:
        reader.fail(node, f"block {name!r} imports and runs code; pass --trust-code (trust_code=True) if you "
                          "trust it")
    try:
        info = get_block(name)
    except BlockError as exc:
        if ":" in name:
            reader.fail(node, str(exc))
        names = sorted({alias for info in list_blocks() for alias in (info.name, *info.aliases)})
        close = difflib.get_close_matches(name.lower(), names, n=1)
        valid = ", ".join(block.name for block in list_blocks())
        hint = f" (did you mean {close[0]!r}?)" if close else f"; valid blocks: {valid}"
        reader.fail(node, f"unknown block {name!r}{hint}")
    if op == "insert" and info.kind == "swap":
        reader.fail(node, f"{info.name!r} is a swap block (it replaces a conv unit); use 'replace:' instead of "
                          "'insert:'")
    if op == "replace" and info.kind != "swap":
        reader.fail(node, f"{info.name!r} is an insert block; use 'insert:' instead of 'replace:'")
    return info


def _args(reader: _Reader, node: Node, info: BlockInfo) -> dict[str, Any]:
    fields = reader.mapping(node, None, "args")
    args: dict[str, Any] = {}
    for key, (key_node, value_node) in fields.items():
        if key == "init":
            reader.fail(key_node, "init is set next to block (init: paper), not inside args")
        value = reader.plain(value_node, f"args.{key}")
        try:
            validate_block_args(info, {key: value})
        except BlockError as exc:
            reader.fail(key_node if "has no option" in str(exc) else value_node, str(exc))
        args[key] = value
    return args


def _rule(reader: _Reader, node: Node, number: int, default_init: str, taken: dict[str, Location]) -> Rule:
    name = reader.rule = f"#{number}"
    fields = reader.mapping(node, _RULE_KEYS, "a rule")
    if "name" in fields:
        name_node = fields["name"][1]
        name = str(reader.typed(name_node, (str, int), "name", "a name"))
        if not _RULE_NAME.fullmatch(name):
            reader.fail(name_node, f"rule name {name!r} must be 1-64 letters, digits, '_', '-', '.' or ':'")
        if name in taken:
            reader.fail(name_node, f"rule name {name!r} is already used by the rule at {taken[name]}")
    reader.rule = name
    actions = [key for key in ("insert", "replace") if key in fields]
    if len(actions) != 1:
        reader.fail(node, "a rule needs exactly one action, 'insert:' or 'replace:'"
                          + (" (it has both)" if len(actions) == 2 else ""))
    if "match" not in fields:
        reader.fail(node, "a rule needs 'match:' (a selector such as {kind: block})")
    selector = _selector(reader, fields["match"][1])
    op = actions[0]
    action = reader.mapping(fields[op][1], _INSERT_KEYS if op == "insert" else _REPLACE_KEYS, op)
    if "block" not in action:
        reader.fail(fields[op][1], f"{op} needs 'block:' (see `attn-surgeon blocks`)")
    info = _block(reader, action["block"][1], op)
    args = _args(reader, action["args"][1], info) if "args" in action else {}
    position = reader.choice(action["position"][1], POSITIONS, "position") if "position" in action else None
    if op == "replace" and selector.kind in ("block", "module"):
        reader.fail(fields["match"][1], f"replace swaps conv units, and this rule matches {selector.kind} sites; "
                                        "use kind: conv")
    if position == "residual" and selector.kind in ("conv", "module"):
        reader.fail(action["position"][1], f"position residual needs residual units, and this rule matches "
                                           f"{selector.kind} sites; use after or before")
    init = reader.choice(action["init"][1], INIT_MODES, "init") if "init" in action else default_init
    allow_empty = reader.typed(fields["allow_empty"][1], bool, "allow_empty", "true or false") \
        if "allow_empty" in fields else False
    taken[name] = reader.where(node)
    return Rule(selector, info.name, op, position, args, init if op == "insert" else "paper", name, allow_empty)


def parse_rules(data: str | bytes, file: str = "<string>", *, init: str | None = None,
                trust_code: bool = False) -> RuleSet:
    """Read a rules document.

    Args:
        data: the YAML text (or its UTF-8 bytes).
        file: the name used in messages.
        init: overrides the ``init`` of every insert rule (``identity`` or ``paper``).
        trust_code: allow blocks given as ``package.module:Class`` (importing them runs code).

    Raises:
        RuleError: anything wrong with the document; the message starts with ``file:line:column:``.
    """
    if init is not None and init not in INIT_MODES:
        raise ValueError(f"init must be one of {', '.join(INIT_MODES)}, got {init!r}")
    root, loader = _compose(data, file)
    if root is None:
        raise _error(Location(file, 1, 1), "empty rules file; it needs 'version: 1' and 'rules:'")
    reader = _Reader(file, loader, trust_code)
    top = reader.mapping(root, _TOP_KEYS, "the document")
    if "version" not in top:
        reader.fail(root, "missing 'version: 1' at the top")
    version_node = top["version"][1]
    version = reader.scalar(version_node, "version")
    if type(version) is not int or version != 1:
        reader.fail(version_node, f"unsupported version {version_node.value!r}; this attn-surgeon reads version 1")
    if "description" in top:
        reader.typed(top["description"][1], str, "description", "a string")
    default_init = reader.choice(top["init"][1], INIT_MODES, "init") if "init" in top else "identity"
    if "rules" not in top:
        reader.fail(root, "missing 'rules:' (a list of rules)")
    rules_node = top["rules"][1]
    if not isinstance(rules_node, SequenceNode) or not rules_node.value:
        reader.fail(rules_node, "rules must be a non-empty list, one '- match: ...' item per rule")
    locations: dict[str, Location] = {}
    rules = [_rule(reader, item, number, init or default_init, locations)
             for number, item in enumerate(rules_node.value, start=1)]
    return RuleSet(_with_init(rules, init), file, locations)


def _with_init(rules: Sequence[Rule], init: str | None) -> list[Rule]:
    """``rules`` with every insert rule's ``init`` set to ``init`` (unchanged when ``None``; swaps have none)."""
    return [replace(rule, init=init) if init is not None and rule.op == "insert" else rule for rule in rules]


def _read_file(path: Path, shown: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise _error(Location(shown, 1, 1), f"file too large ({size:,} bytes; rules files are limited to "
                                                f"{MAX_BYTES:,})")
        with path.open("rb") as file:
            return file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _error(Location(shown, 1, 1), f"cannot read the rules file ({exc.strerror or exc})") from None


def load_rules(source: str | os.PathLike[str] | bytes | Mapping[str, Any] | Sequence[Rule], *,
               init: str | None = None, trust_code: bool = False) -> RuleSet:
    """Rules from a file path, a preset name (see :func:`list_presets`), YAML text, a parsed document (a dict), or
    a list of :class:`Rule` (returned as they are, with ``init`` applied).

    Raises:
        RuleError: no such file or preset, or anything wrong with the document (with its location).
    """
    if isinstance(source, bytes):
        return parse_rules(source, init=init, trust_code=trust_code)
    if isinstance(source, Mapping):
        try:
            text = yaml.safe_dump(dict(source), sort_keys=False)
        except yaml.YAMLError as exc:
            raise _error(Location("<dict>", 1, 1), f"not plain data: {str(exc).splitlines()[0]}") from None
        return parse_rules(text, "<dict>", init=init, trust_code=trust_code)
    if isinstance(source, Sequence) and not isinstance(source, str):
        if not all(isinstance(rule, Rule) for rule in source):
            raise TypeError("a list of rules must hold surgeon.match.Rule objects")
        return RuleSet(_with_init(source, init), "<rules>")
    text = os.fspath(source)
    if "\n" not in text and os.path.isfile(text):  # not Path.is_file: a long one-line document would raise
        return parse_rules(_read_file(Path(text), text), text, init=init, trust_code=trust_code)
    if "\n" in text or text.lstrip().startswith(("version:", "{")):
        return parse_rules(text, init=init, trust_code=trust_code)
    if "\n" not in text and os.path.isdir(text):
        raise _error(Location(text, 1, 1), "is a directory; give a rules file (.yaml) or a preset name")
    if text in list_presets():
        preset = PRESET_DIR / f"{text}.yaml"
        return parse_rules(_read_file(preset, f"rules/{text}.yaml"), f"rules/{text}.yaml", init=init,
                           trust_code=trust_code)
    close = difflib.get_close_matches(text, list_presets(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _error(Location(text, 1, 1), f"no such rules file or preset{hint}; presets: {', '.join(list_presets())}")


def locate(exc: SurgeonError, rules: Sequence[Rule]) -> SurgeonError:
    """Give a planning error (``rule 'x': ...`` from :func:`~surgeon.match.make_plan`) its rule's location.

    Returns a :class:`RuleError` starting with ``file:line:column: rule 'x':``, or ``exc`` itself when it names
    no rule of ``rules`` that has a location.
    """
    locations = getattr(rules, "locations", {})
    message = str(exc)
    for rule in rules:
        prefix = f"rule {rule.name!r}: "
        if message.startswith(prefix) and rule.name in locations:
            return _error(locations[rule.name], message[len(prefix):], rule.name)
    return exc


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file in torch's zip checkpoint format (as attn-surgeon writes them), or a framework's
    model directory (a Hugging Face ``save_pretrained`` directory)."""
    return (os.path.isfile(path) and zipfile.is_zipfile(path)) or framework_of_directory(path) is not None


def read_recipe(path: str | os.PathLike[str]) -> Recipe:
    """The recipe stored in a checkpoint written by attn-surgeon (read with ``weights_only=True``).

    Raises:
        CheckpointError: unreadable file, or a checkpoint without a recipe.
    """
    framework = framework_of_directory(path)
    if framework is not None:
        recipe = framework.read_recipe(Path(path))
        if recipe is None:
            raise CheckpointError(f"{path}: records no attn-surgeon recipe; only model directories written from a "
                                  "patched model do")
        return recipe
    data = read_checkpoint(path)
    candidates = [data, *(data.get(key) for key in CONTAINER_KEYS)] if isinstance(data, Mapping) else [data]
    for candidate in candidates:
        metadata = getattr(candidate, "_metadata", None)
        if isinstance(metadata, Mapping) and RECIPE_KEY in metadata:
            return Recipe.from_dict(metadata[RECIPE_KEY])
    raise CheckpointError(f"{path}: holds no attn-surgeon recipe; only checkpoints written by attn-surgeon do")


def rules_from_recipe(recipe: Recipe) -> RuleSet:
    """One rule per recorded step, selecting exactly the recorded site (by name, kind and channels), in order.

    Planned on the same base architecture, these rules give the recorded plan again, so the rewrite names every
    new module as recorded; a model without the recorded site (or with other channels there) fails to match.
    """
    rules = []
    for step in recipe.steps:
        channel_filter = {"in_channels" if step.position == "before" else "out_channels": IntFilter((step.channels,))}
        selector = Selector(kind=step.kind, regex=re.escape(step.site), **(channel_filter if step.channels else {}))
        rules.append(Rule(selector, step.block, step.op, step.position, dict(step.args), step.init,
                          step.rule or "recipe"))
    return RuleSet(rules, "<recipe>")
