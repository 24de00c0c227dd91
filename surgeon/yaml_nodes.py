"""Reading YAML as nodes that remember where they were written, so that every error can point at its cause.

The text is composed into YAML nodes by PyYAML's safe loader (aliases refused, so no expansion bombs; documents
over :data:`MAX_BYTES` refused before parsing) and never constructed into Python objects wholesale: a
:class:`NodeReader` walks the nodes against a schema, one checked value at a time. Every error is a
:class:`~surgeon.errors.RuleError` whose message starts with ``file:line:column:`` (1-based) and, inside a rule,
``rule 'name':``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import RuleError

__all__ = ["MAX_BYTES", "Location", "NodeReader", "compose", "located_error"]

MAX_BYTES = 1 << 20
_MAX_DEPTH = 32
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")}


@dataclass(frozen=True)
class Location:
    """A place in a rules file; ``line`` and ``column`` count from 1."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def _text_location(file: str, text: str, index: int) -> Location:
    before = text[:index]
    return Location(file, before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1)


def located_error(where: Location, message: str, rule: str | None = None) -> RuleError:
    """``file:line:column: rule 'name': message`` as a :class:`RuleError`."""
    return RuleError(f"{where}: {f'rule {rule!r}: ' if rule else ''}{message}")


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases: rules never need them, and they are how expansion bombs are built."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in rules files",
                                       problem_mark=self.peek_event().start_mark)
        return super().compose_node(parent, index)


def compose(data: str | bytes, file: str) -> tuple[Node | None, yaml.SafeLoader]:
    """The document's root node (``None`` when empty) and the loader that constructs its scalars.

    Raises:
        RuleError: too large, not UTF-8, or not valid YAML, with the location.
    """
    if len(data) > MAX_BYTES:
        raise located_error(Location(file, 1, 1),
                            f"file too large ({len(data):,} bytes; rules files are limited to {MAX_BYTES:,})")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            where = _text_location(file, data[: exc.start].decode("utf-8", "replace"), exc.start)
            raise located_error(where, "not UTF-8 text") from None
    try:
        loader = _Loader(data)  # the reader checks for unprintable characters here already
        return loader.get_single_node(), loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        at = data[mark.index] if mark and mark.index < len(data) else ""
        hint = "; quote comparisons and ranges, e.g. \">=256\"" if at in ("<", ">", "!", "=") else ""
        raise located_error(where, f"invalid YAML: {exc.problem or exc.context}{hint}") from None
    except yaml.reader.ReaderError as exc:
        raise located_error(_text_location(file, data, exc.position),
                            f"invalid YAML: {exc.reason} (character {exc.character!r})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise located_error(Location(file, 1, 1), f"invalid YAML: {reason}") from None


class NodeReader:
    """Walks the composed nodes against the schema; ``rule`` names the rule being read, for messages."""

    def __init__(self, file: str, loader: yaml.SafeLoader, trust_code: bool) -> None:
        self.file, self.loader, self.trust_code = file, loader, trust_code
        self.rule: str | None = None

    def where(self, node: Node) -> Location:
        return Location(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: Node, message: str) -> NoReturn:
        raise located_error(self.where(node), message, self.rule)

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


