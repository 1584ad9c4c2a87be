"""Reading JSON inputs and reporting their problems: one line naming file, field and fix.

Every family reads its JSON through here, so every bad input reads the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.core.errors import UserError

if TYPE_CHECKING:  # pydantic loads only where a model is validated (not on a no-op doit)
    from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound="BaseModel")


def display_path(path: str | os.PathLike) -> str:
    """A path as users see it: relative to the current folder when inside it."""
    p = os.path.abspath(path)
    rel = os.path.relpath(p)
    return p if rel.startswith("..") else rel


def read_json(path: str | os.PathLike, what: str, fix: str | None = None) -> Any:
    """Parse a JSON file, turning every failure into a one-line UserError.

    ``fix`` is the advice for a missing file (what the user should do).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", path=display_path(path), fix=fix) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text", path=display_path(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", path=display_path(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                        path=display_path(path), fix="fix the JSON syntax") from None


def load_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; OSError / ValueError as they come (for callers that decide
    themselves what a missing or broken file means)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when absent or unreadable (never raises)."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


def json_path(loc: tuple | list) -> str:
    """A pydantic error location as a JSON path: ``$.scenarios[1].steps[0].question``."""
    out = "$"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("inline", "ref"):
            continue  # a union branch's tag: not part of the document
        else:
            out += f".{part}"
    return out


def validation_error(exc: ValidationError, path: str, *, within: str = "",
                     as_json_path: bool = False) -> UserError:
    """The first pydantic error as a one-line UserError naming the file and where in it.

    Two documented forms: ``field 'a.b'`` (the book, L7, the assistant) or, with
    ``as_json_path``, ``$.a.b: message`` (the scenario files). ``within`` is where the
    validated value sits in its file (``criteria[0].params``; ``$.steps[1]``).
    """
    err = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if as_json_path:
        where = json_path(err["loc"])
        if within:
            where = within + where[1:]
        msg = err["msg"].removeprefix("Value error, ")
        return UserError(f"{where}: {msg}{more}", path=display_path(path))
    loc = ".".join(str(p) for p in err["loc"])
    field = ".".join(p for p in (within, loc) if p) or "(top level)"
    return UserError(f"{err['msg']}{more}", path=path, field=field)


def parse_model(model: type[M], data: Any, path: str, *, within: str = "",
                as_json_path: bool = False) -> M:
    """Validate ``data`` with ``model``; errors name the file and field (see
    :func:`validation_error` for the two forms)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path, within=within, as_json_path=as_json_path) from None
