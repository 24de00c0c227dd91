"""Rules files: a small YAML language for surgery plans, read into :class:`~surgeon.match.Rule` objects.

The language is documented in ``rules/README.md``. The reader never builds arbitrary Python objects: the text is
composed into YAML nodes (:mod:`surgeon.yaml_nodes`), and every node is checked against the schema here, so each
error can point at the node that caused it. Every error is a :class:`~surgeon.errors.RuleError` whose message
starts with ``file:line:column:`` (1-based) and, inside a rule, ``rule 'name':``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node, SequenceNode

from .blocks import INIT_MODES, BlockInfo, check_init, get_block, list_blocks, validate_block_args
from .errors import BlockError, SelectorError, SurgeonError
from .match import POSITIONS, RANGE, SITE_KINDS, Rule, Selector, dotted_glob, parse_int_filter
from .yaml_nodes import MAX_BYTES, Location, NodeReader, compose, located_error

__all__ = [
    "MAX_BYTES",
    "PRESET_DIR",
    "Location",
    "RuleSet",
    "list_presets",
    "load_rules",
    "locate",
    "parse_rules",
]

PRESET_DIR = Path(__file__).resolve().parent.parent / "rules"
_MAX_RANGE = 4096
_TOP_KEYS = ("version", "description", "init", "rules")
_RULE_KEYS = ("name", "match", "insert", "replace", "allow_empty")
_INSERT_KEYS = ("block", "position", "args", "init")
_REPLACE_KEYS = ("block", "args")
_INT_FILTERS = ("kernel", "stride", "groups", "dilation", "in_channels", "out_channels", "stage", "index")
_SELECTOR_KEYS = ("kind", "class", "name", "regex", *_INT_FILTERS, "every", "offset", "exclude")
_CONV_ONLY = ("kernel", "groups", "dilation")
_RULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,63}")


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


def _int_filter(reader: NodeReader, node: Node, key: str) -> Any:
    value = reader.plain(node, key)
    ranged = RANGE.fullmatch(value) if isinstance(value, str) else None
    if ranged and int(ranged.group(2)) - int(ranged.group(1)) > _MAX_RANGE:
        reader.fail(node, f"{key}: range {value!r} is too wide; use a comparison such as '>={ranged.group(1)}'")
    try:
        return parse_int_filter(value, key)
    except SelectorError as exc:
        reader.fail(node, str(exc))


def _selector(reader: NodeReader, node: Node, what: str = "match", depth: int = 0) -> Selector:
    fields = reader.mapping(node, _SELECTOR_KEYS, what)
    if not fields:
        reader.fail(node, f"{what} is empty and would select every site; give at least one key such as 'kind: block'")
    values: dict[str, Any] = {}
    kind = None
    if "kind" in fields:
        kind = values["kind"] = reader.choice(fields["kind"][1], SITE_KINDS, "kind")
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


def _block(reader: NodeReader, node: Node, op: str) -> BlockInfo:
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
    return info


def _args(reader: NodeReader, node: Node, info: BlockInfo) -> dict[str, Any]:
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


def _rule(reader: NodeReader, node: Node, number: int, default_init: str, taken: dict[str, Location]) -> Rule:
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
    if op == "replace" and info.kind == "swap" and selector.kind in ("block", "module"):
        reader.fail(fields["match"][1], f"replace swaps conv units, and this rule matches {selector.kind} sites; "
                                        "use kind: conv")
    if op == "replace" and info.kind == "insert" and selector.kind != "module":
        reader.fail(action["block"][1], f"{info.name!r} is an insert block; use 'insert:' instead of 'replace:', or "
                                        "match the attention module it replaces (kind: module, class: "
                                        "SqueezeExcitation)")
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
    if init is not None:
        check_init(init)  # a BlockError, which is a ValueError: the caller passed it, there is no node to point at
    root, loader = compose(data, file)
    if root is None:
        raise located_error(Location(file, 1, 1), "empty rules file; it needs 'version: 1' and 'rules:'")
    reader = NodeReader(file, loader, trust_code)
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
            raise located_error(Location(shown, 1, 1),
                                f"file too large ({size:,} bytes; rules files are limited to {MAX_BYTES:,})")
        with path.open("rb") as file:
            return file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise located_error(Location(shown, 1, 1), f"cannot read the rules file ({exc.strerror or exc})") from None


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
            raise located_error(Location("<dict>", 1, 1), f"not plain data: {str(exc).splitlines()[0]}") from None
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
        raise located_error(Location(text, 1, 1), "is a directory; give a rules file (.yaml) or a preset name")
    if text in list_presets():
        preset = PRESET_DIR / f"{text}.yaml"
        return parse_rules(_read_file(preset, f"rules/{text}.yaml"), f"rules/{text}.yaml", init=init,
                           trust_code=trust_code)
    close = difflib.get_close_matches(text, list_presets(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise located_error(Location(text, 1, 1),
                        f"no such rules file or preset{hint}; presets: {', '.join(list_presets())}")


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
            return located_error(locations[rule.name], message[len(prefix):], rule.name)
    return exc
