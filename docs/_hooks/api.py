"""MkDocs hook: the reference half of ``docs/python.md``, generated from ``surgeon.__all__`` at build time.

Each public name gets its signature and its Google-style docstring turned into Markdown (sections become bold
labels, argument entries a list, examples code), and ``surgeon.errors`` its classes, so the page cannot describe an
argument the code no longer takes.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any

from mkdocs.exceptions import PluginError

PAGE = "python.md"
MARKER = "<!-- generated: api -->"
_SECTIONS = ("Args", "Arguments", "Attributes", "Returns", "Yields", "Raises", "Example", "Examples", "Note")
_LISTED = ("Args", "Arguments", "Attributes", "Raises")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # Sphinx roles: :class:`~surgeon.match.Selector` -> `Selector`


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the marker of ``python.md`` with the reference; leave every other page alone."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}")
    return markdown.replace(MARKER, render())


def render() -> str:
    """One section per public name of ``surgeon`` (functions, then classes), then the error types."""
    import surgeon
    from surgeon import errors

    names = [name for name in surgeon.__all__
             if not name.startswith("_") and not inspect.ismodule(getattr(surgeon, name))]
    names.sort(key=lambda name: (isinstance(getattr(surgeon, name), type), name.lower()))
    lines: list[str] = []
    for name in names:
        obj = getattr(surgeon, name)
        lines += [f"### surgeon.{name}", "", "```python", f"{name}{_signature(obj)}", "```", "",
                  _markdown(inspect.getdoc(obj) or ""), ""]
    lines += ["### surgeon.errors", "", _markdown(inspect.getdoc(errors) or ""), "",
              "| error | raised for |", "|---|---|"]
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.SurgeonError) and cls.__module__ == errors.__name__:
            summary = " ".join(_markdown(inspect.getdoc(cls) or "").split("\n\n", 1)[0].split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {summary} |")
    return "\n".join(lines) + "\n"


class _Shown(str):
    """Text that a signature shows as it is: annotations (strings, under postponed evaluation) and function defaults."""

    def __repr__(self) -> str:
        return str(self)


def _signature(obj: Any) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    empty = inspect.Parameter.empty
    parameters = [parameter.replace(
        annotation=empty if parameter.annotation is empty else _Shown(_annotation(parameter.annotation)),
        default=_Shown(parameter.default.__name__) if inspect.isfunction(parameter.default) else parameter.default)
        for parameter in signature.parameters.values()]
    returns = empty if isinstance(obj, type) else signature.return_annotation  # a class's `-> None` says nothing
    return str(signature.replace(parameters=parameters, return_annotation=empty if returns is empty else
                                 _Shown(_annotation(returns))))


def _annotation(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _markdown(doc: str) -> str:
    """A Google-style docstring as Markdown."""
    out: list[str] = []
    section = ""
    body: list[str] = []

    def flush() -> None:
        if not section:
            out.extend(body)
        elif section in ("Example", "Examples"):
            code = textwrap.dedent("\n".join(body)).strip("\n")
            out.extend([f"**{section}:**", "", "```" + ("pycon" if ">>>" in code else "python"), code, "```"])
        elif section in _LISTED:
            out.extend([f"**{section}:**", ""] + _entries(body))
        else:
            out.extend([f"**{section}:** " + " ".join(" ".join(body).split())])
        body.clear()

    for line in _ROLE.sub(r"`\1`", doc).splitlines():
        header = line.rstrip()[:-1] if line.rstrip().endswith(":") else ""
        if header in _SECTIONS and not line.startswith(" "):
            flush()
            out.append("")
            section = header
        else:
            body.append(line)
    flush()
    return "\n".join(out).strip()


def _entries(body: list[str]) -> list[str]:
    """``name: text`` entries (continuations indented deeper) as a Markdown list."""
    items: list[str] = []
    for line in textwrap.dedent("\n".join(body)).splitlines():
        if not line.strip():
            continue
        if line.startswith(" ") and items:
            items[-1] += " " + line.strip()
            continue
        name, _, text = line.partition(":")
        items.append(f"- `{name.strip()}`: {text.strip()}")
    return items
