"""Prompt templates: Jinja2, sandboxed, StrictUndefined."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from pipeline.core.errors import UserError

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


@functools.lru_cache(maxsize=256)
def _compiled(path: str, source: str):
    """A template compiled once per process for its exact source."""
    return _env.from_string(source)


def render(path: str, context: dict[str, Any]) -> str:
    """Render the template file at ``path``; errors name the file and line."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read template: {exc.strerror}", path=path,
                        fix="restore the file or remove the override") from None
    try:
        return _compiled(path, source).render(**context).strip() + "\n"
    except TemplateSyntaxError as exc:
        raise UserError(f"template syntax error on line {exc.lineno}: {exc.message}",
                        path=path, fix="fix the template") from None
    except UndefinedError as exc:
        raise UserError(f"template uses an undefined variable: {exc.message}", path=path,
                        fix=f"available: {', '.join(sorted(context))}") from None
    except TemplateError as exc:
        raise UserError(f"template error: {exc}", path=path, fix="fix the template") from None


def render_messages(system_path: str, phase_path: str, context: dict[str, Any]) -> list[dict]:
    """The chat messages of one phase: the system template, then the phase template."""
    return [
        {"role": "system", "content": render(system_path, context)},
        {"role": "user", "content": render(phase_path, context)},
    ]
