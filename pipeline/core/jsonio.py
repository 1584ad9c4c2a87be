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


def validation_error(exc: ValidationError, path: str) -> UserError:
    """The first pydantic error as a one-line UserError naming the field."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return UserError(f"{err['msg']}{more}", path=path, field=loc)


def parse_model(model: type[M], data: Any, path: str) -> M:
    """Validate ``data`` with ``model``; errors name the file and field."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path) from None
