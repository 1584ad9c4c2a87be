"""Prompt templates: Jinja2, sandboxed, StrictUndefined, bounded.

A template is a file a user may have been handed, so it can do nothing but turn its
context into text: no ``include``/``import``/``extends`` (they would read other files), and
its size, its loops, its arithmetic and its output are bounded, so a hostile or mistaken
template ends in one line instead of a traceback, a hang or an exhausted memory.
"""

from __future__ import annotations

import contextvars
import functools
import operator
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from pipeline.core.errors import UserError

MAX_TEMPLATE_BYTES = 256 * 1024  # the shipped ones are about 2 KB
MAX_OUTPUT_CHARS = 2_000_000  # a prompt far beyond any model's context
MAX_RANGE = 10_000  # one range()
MAX_RANGE_STEPS = 1_000_000  # all range() steps of one rendering (nested loops multiply)
MAX_POWER_BITS = 4096  # the size of an ``a ** b`` result


class _NoOtherFiles(BaseLoader):
    """Every ``include``, ``import`` and ``extends`` is refused: templates read no files."""

    def get_source(self, environment, template):
        raise TemplateNotFound(template, f"'{template}': a template may not include, import "
                                         "or extend another template")


_steps_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("range_steps")


class _CountedRange:
    """A ``range`` whose steps count against the rendering's budget (loops in loops)."""

    def __init__(self, rng: range):
        self._rng = rng

    def __len__(self) -> int:
        return len(self._rng)

    def __iter__(self):
        left = _steps_left.get(None)
        for value in self._rng:
            if left is not None:
                left[0] -= 1
                if left[0] < 0:
                    raise SecurityError(f"its loops took more than {MAX_RANGE_STEPS} steps")
            yield value


def _bounded_range(*args: int) -> _CountedRange:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() of {len(rng)} items (at most {MAX_RANGE})")
    return _CountedRange(rng)


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


class _BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, with repetition (``'x' * n``) and powers bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            count = right if _length(left) else left if _length(right) else None
            if isinstance(count, int) and (_length(left) or _length(right)) * count \
                    > MAX_OUTPUT_CHARS:
                raise SecurityError("a repetition ('x' * n) too large for a prompt")
            return operator.mul(left, right)
        if isinstance(left, int) and isinstance(right, int) and right > 0 \
                and abs(left).bit_length() * right > MAX_POWER_BITS:
            raise SecurityError("a power (a ** b) too large for a prompt")
        return operator.pow(left, right)


_env = _BoundedEnvironment(undefined=StrictUndefined, autoescape=False,
                           keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                           loader=_NoOtherFiles())
_env.globals["range"] = _bounded_range


@functools.lru_cache(maxsize=256)
def _compiled(path: str, source: str):
    """A template compiled once per process for its exact source."""
    return _env.from_string(source)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read template: {exc.strerror or exc}", path=path,
                        fix="restore the file or remove the override") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise UserError(f"template is larger than {MAX_TEMPLATE_BYTES // 1024} KB", path=path,
                        fix="a prompt template is text of a few KB: check the path")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"template is not UTF-8 text (byte {exc.start})", path=path,
                        fix="save it as UTF-8") from None


def _render_bounded(template, context: dict[str, Any]) -> str:
    parts: list[str] = []
    size = 0
    token = _steps_left.set([MAX_RANGE_STEPS])
    try:
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError(f"its output passed {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
    finally:
        _steps_left.reset(token)
    return "".join(parts)


def render(path: str, context: dict[str, Any]) -> str:
    """Render the template file at ``path``; errors name the file and line."""
    source = _read(path)
    try:
        return _render_bounded(_compiled(path, source), context).strip() + "\n"
    except TemplateSyntaxError as exc:
        raise UserError(f"template syntax error on line {exc.lineno}: {exc.message}",
                        path=path, fix="fix the template") from None
    except UndefinedError as exc:
        raise UserError(f"template uses an undefined variable: {exc.message}", path=path,
                        fix=f"available: {', '.join(sorted(context))}") from None
    except TemplateNotFound as exc:
        raise UserError(f"template error: {exc.message}", path=path,
                        fix="put the text in this template") from None
    except SecurityError as exc:
        raise UserError(f"template refused: {exc}", path=path,
                        fix="a prompt template only formats its context") from None
    except TemplateError as exc:
        raise UserError(f"template error: {exc}", path=path, fix="fix the template") from None
    except (ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        # e.g. 1/0, a filter given the wrong type, a macro calling itself
        raise UserError(f"template failed: {type(exc).__name__}: {exc}", path=path,
                        fix="fix the template") from None


def check_names(path: str, known: set[str], what: str) -> None:
    """Before anything is rendered: the template at ``path`` parses, and every variable it
    reads from its context is one of ``known`` (``what`` names that context in the error),
    so a broken template stops a run before its first paid call, in one line naming the
    file, the line and the name. Variables the template sets itself (``set``, ``for``,
    macros) are its own."""
    from jinja2 import meta, nodes

    source = _read(path)
    try:
        tree = _env.parse(source)
    except TemplateSyntaxError as exc:
        raise UserError(f"template syntax error on line {exc.lineno}: {exc.message}",
                        path=path, fix="fix the template") from None
    unknown = meta.find_undeclared_variables(tree) - known - set(_env.globals)
    if not unknown:
        return
    lines = {}
    for node in tree.find_all(nodes.Name):
        if node.name in unknown:
            lines.setdefault(node.name, node.lineno)
    name = min(unknown, key=lambda n: (lines.get(n, 0), n))
    raise UserError(f"template uses an undefined variable on line {lines.get(name, '?')}: "
                    f"'{name}' is undefined in {what}", path=path,
                    fix=f"available: {', '.join(sorted(known))}")


def render_messages(system_path: str, phase_path: str, context: dict[str, Any]) -> list[dict]:
    """The chat messages of one phase: the system template, then the phase template."""
    return [
        {"role": "system", "content": render(system_path, context)},
        {"role": "user", "content": render(phase_path, context)},
    ]
