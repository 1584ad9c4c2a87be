"""Placeholders in scenario questions: ``{{step_01_inventory.entries[0].item}}``.

The grammar is a path and nothing else: a name, then ``.name`` or ``[integer]`` parts.
Names are ``[A-Za-z_][A-Za-z0-9_-]*``; indexes are non-negative integers. There are no
expressions, filters, calls or defaults: a placeholder either names one captured value
or the step is blocked with a message saying what was there instead.

Roots: the id of an earlier step of the same scenario (its captured assistant answer:
``reply``, ``entries``, ``result``, ``semantic_memory``, ``debug``, ``session_id``, ...),
``semantic_memory`` (the latest captured answer's) and ``session_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.S)
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PART_RE = re.compile(rf"\.({_NAME})|\[(\d+)\]")
_HEAD_RE = re.compile(_NAME)
SPECIAL_ROOTS = ("semantic_memory", "session_id")

Path = tuple[str | int, ...]


class PlaceholderSyntaxError(ValueError):
    """A ``{{ ... }}`` that is not a path of the grammar (or a stray brace pair)."""


@dataclass(frozen=True)
class Placeholder:
    """One placeholder of a question: its text as written and its parsed path."""

    raw: str  # the whole ``{{ ... }}``
    path: Path

    @property
    def root(self) -> str:
        return str(self.path[0])

    @property
    def text(self) -> str:
        return format_path(self.path)


class Unresolved(Exception):
    """A placeholder that names no value; ``message`` says what was available."""

    def __init__(self, placeholder: Placeholder, reason: str, available: list[str]):
        self.placeholder = placeholder
        self.reason = reason
        self.available = available
        shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
        super().__init__(f"unresolved placeholder {placeholder.raw}: {reason}"
                         + (f" (available: {shown})" if available else " (nothing available)"))


def format_path(path: Path) -> str:
    """``("a", "b", 0, "c")`` -> ``a.b[0].c``."""
    out = str(path[0])
    for part in path[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_path(text: str) -> Path:
    """Parse ``name(.name|[int])*``; PlaceholderSyntaxError otherwise."""
    text = text.strip()
    head = _HEAD_RE.match(text)
    if not head:
        raise PlaceholderSyntaxError(f"'{text}' does not start with a name")
    parts: list[str | int] = [head.group(0)]
    pos = head.end()
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        if not m:
            raise PlaceholderSyntaxError(
                f"'{text}': unexpected '{text[pos:]}' (only .name and [integer] parts)")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return tuple(parts)


def find(template: str) -> list[Placeholder]:
    """Every placeholder of ``template`` in order; PlaceholderSyntaxError if one is bad."""
    found = []
    for m in _PLACEHOLDER_RE.finditer(template):
        try:
            found.append(Placeholder(m.group(0), parse_path(m.group(1))))
        except PlaceholderSyntaxError as exc:
            raise PlaceholderSyntaxError(f"bad placeholder {m.group(0)}: {exc}") from None
    rest = _PLACEHOLDER_RE.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise PlaceholderSyntaxError("unbalanced '{{' or '}}' (a placeholder is {{path}})")
    return found


def _describe(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        return [f"{where}.{k}" for k in value]
    if isinstance(value, list):
        return [f"{where}[0..{len(value) - 1}]"] if value else [f"{where} (empty list)"]
    return [where]


def lookup(context: dict[str, Any], ph: Placeholder) -> Any:
    """The value ``ph`` names in ``context``; Unresolved with what was there otherwise."""
    root = ph.root
    if root in SPECIAL_ROOTS and context.get(root) is None:
        raise Unresolved(ph, f"no earlier step of this scenario has an answer, so there is no "
                             f"{root} yet", sorted(k for k in context if context[k] is not None))
    if root not in context:
        raise Unresolved(ph, f"'{root}' is not an earlier captured step",
                         sorted(k for k in context if context[k] is not None))
    value = context[root]
    if value is None:
        raise Unresolved(ph, f"'{root}' has no captured answer",
                         sorted(k for k in context if context[k] is not None))
    where = root
    for part in ph.path[1:]:
        if isinstance(part, int):
            if not isinstance(value, list):
                raise Unresolved(ph, f"{where} is not a list", _describe(value, where))
            if part >= len(value):
                raise Unresolved(ph, f"{where} has {len(value)} item(s), no index {part}",
                                 _describe(value, where))
            value = value[part]
            where = f"{where}[{part}]"
        else:
            if not isinstance(value, dict):
                raise Unresolved(ph, f"{where} is not an object", _describe(value, where))
            if part not in value:
                raise Unresolved(ph, f"{where} has no field '{part}'", _describe(value, where))
            value = value[part]
            where = f"{where}.{part}"
    if value is None:
        raise Unresolved(ph, f"{where} is null", [])
    if isinstance(value, dict | list):
        raise Unresolved(ph, f"{where} is {'an object' if isinstance(value, dict) else 'a list'}"
                             ", not a single value", _describe(value, where))
    return value


def to_text(value: Any) -> str:
    """How a resolved value is written into the question."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve(template: str, context: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(question with every placeholder replaced, {placeholder path: value}).

    Raises Unresolved for the first placeholder that names no value.
    """
    values: dict[str, Any] = {}
    for ph in find(template):
        values[ph.text] = lookup(context, ph)

    def sub(m: re.Match) -> str:
        return to_text(values[format_path(parse_path(m.group(1)))])

    return _PLACEHOLDER_RE.sub(sub, template), values
