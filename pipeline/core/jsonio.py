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

# No input of scenemake nests anywhere near this deep; a file that does is hostile or broken,
# and deeper values would exhaust the recursion of the validators and hashers that walk them.
MAX_DEPTH = 100


class JSONTooDeep(ValueError):
    """A JSON text nested deeper than :data:`MAX_DEPTH`."""


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Level by level, so that checking a deep value is not itself a recursion; only the
    # containers of a level are kept (a parsed value holds no other container types).
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list = []
        for item in level:
            below += [child for child in (item.values() if type(item) is dict else item)
                      if type(child) in (dict, list)]
        level = below
    return False


# No text field of an input needs more: a tenth of the longest prompt a template may render
# (pipeline/core/rendering.py, MAX_OUTPUT_CHARS), so a field too long is blamed on its file
# and field here, before any template renders it.
MAX_TEXT_CHARS = 200_000
_ID_KEYS = ("id", "scene_id", "step_id", "case_id", "scenario_id", "session_id")


def long_text(value: Any, limit: int = MAX_TEXT_CHARS) -> tuple[str, int, str | None] | None:
    """The first string in ``value`` longer than ``limit`` characters, as (its JSON path
    without the ``$.``, its length, the id of the nearest object around it that has one),
    or None."""
    stack: list[tuple[Any, str, str | None]] = [(value, "", None)]
    while stack:
        item, where, owner = stack.pop()
        if type(item) is str:
            if len(item) > limit:
                return where or "(top level)", len(item), owner
        elif type(item) is dict:
            own = next((item[k] for k in _ID_KEYS if type(item.get(k)) is str), owner)
            stack.extend((child, f"{where}.{key}" if where else str(key), own)
                         for key, child in reversed(item.items()))
        elif type(item) is list:
            stack.extend((child, f"{where}[{i}]", owner)
                         for i, child in reversed(list(enumerate(item))))
    return None


class JSONNotStandard(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's extension, not JSON."""


def _no_constants(name: str) -> Any:
    raise JSONNotStandard(f"{name} is not a JSON value")


def loads(text: str | bytes, allow_nan: bool = True) -> Any:
    """``json.loads`` that refuses a value nested deeper than :data:`MAX_DEPTH`.

    Raises ``json.JSONDecodeError`` for bad syntax and :class:`JSONTooDeep` for a nesting
    too deep (both are ``ValueError`` s), never ``RecursionError``; ``allow_nan=False``
    refuses ``NaN`` and ``Infinity`` (:class:`JSONNotStandard`).
    """
    try:
        value = json.loads(text, parse_constant=None if allow_nan else _no_constants)
    except RecursionError:
        raise JSONTooDeep(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise JSONTooDeep(f"nested more than {MAX_DEPTH} levels deep")
    return value


def display_path(path: str | os.PathLike) -> str:
    """A path as users see it: relative to the current folder when inside it."""
    p = os.path.abspath(path)
    rel = os.path.relpath(p)
    return p if rel.startswith("..") else rel


def read_json(path: str | os.PathLike, what: str, fix: str | None = None,
              max_text: int | None = MAX_TEXT_CHARS) -> Any:
    """Parse a JSON file, turning every failure into a one-line UserError.

    ``fix`` is the advice for a missing file (what the user should do). A text value longer
    than ``max_text`` characters is refused naming its field (None: no limit, for files
    scenemake wrote itself).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found", path=display_path(path), fix=fix) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text", path=display_path(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror or exc}",
                        path=display_path(path)) from None
    try:
        value = loads(text, allow_nan=False)
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                        path=display_path(path), fix="fix the JSON syntax") from None
    except JSONTooDeep as exc:
        raise UserError(f"{what} is {exc}", path=display_path(path),
                        fix="no input needs such nesting: fix the file") from None
    except JSONNotStandard as exc:
        raise UserError(f"invalid JSON: {exc}", path=display_path(path),
                        fix="write a number, or null") from None
    if max_text is not None and (found := long_text(value, max_text)) is not None:
        where, size, owner = found
        raise UserError(f"{size} characters{f' (in {owner})' if owner else ''}, more than a "
                        f"text field may hold (at most {max_text})", path=display_path(path),
                        field=where, fix="shorten it: it is sent to the model in a prompt")
    return value


def load_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; OSError / ValueError as they come (for callers that decide
    themselves what a missing or broken file means; :class:`JSONTooDeep` is a ValueError)."""
    return loads(Path(path).read_text(encoding="utf-8"))


def load_own_json(path: str | os.PathLike) -> Any:
    """JSON that scenemake wrote for its own use (the no-op stamp): parsed without the depth
    walk, which costs as much as the parse itself on a 26000-row stamp. A nesting too deep
    for the parser is still a :class:`JSONTooDeep`; OSError / ValueError as they come."""
    try:
        return json.loads(Path(path).read_bytes())
    except RecursionError:
        raise JSONTooDeep(f"nested more than {MAX_DEPTH} levels deep") from None


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
