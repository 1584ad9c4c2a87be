"""The published JSON Schemas of scenemake's files (``pipeline/schemas/``), and reading an
input file against its own.

Each format is a pydantic model; its schema file is generated from the model (a test holds
every file to its model, and each family rewrites its own: ``write``). An input is valid when
its published schema accepts it *and* its model does (the model adds what a schema cannot
say: unique ids, references between fields). Nothing is coerced past the schema: ``"3"`` is
not an integer, ``"true"`` not a boolean. The common case costs one strict parse: a document
the model accepts in strict mode (JSON types exactly) is one the schema accepts too; only a
document it refuses is checked against the schema file, for the error to name.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, load_json, parse_model

if TYPE_CHECKING:  # pydantic and jsonschema load only where a file is validated
    from jsonschema import Draft202012Validator
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_path(name: str) -> Path:
    """The published schema ``name`` (its file name without ``.json``)."""
    return SCHEMA_DIR / f"{name}.json"


def generate(model: type[BaseModel], schema_id: str | None = None) -> dict:
    """The JSON Schema (Draft 2020-12) of ``model``, as its file is published."""
    doc = model.model_json_schema(by_alias=True)
    head: dict[str, Any] = {"$schema": DIALECT}
    if schema_id:
        head["$id"] = schema_id
    return {**head, **doc}


def write(formats: dict[str, type[BaseModel]]) -> list[Path]:
    """Rewrite the schema file of each format (name -> model); returns the files."""
    from pipeline.core.store import atomic_write_json

    written = []
    for name, model in formats.items():
        atomic_write_json(schema_path(name), generate(model, f"{name}.json"))
        written.append(schema_path(name))
    return written


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator for the published schema ``name`` (read once per process)."""
    from jsonschema import Draft202012Validator

    path = schema_path(name)
    try:
        schema = load_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"schema file is missing or broken ({exc})", path=str(path),
                        fix="reinstall scenemake") from None
    return Draft202012Validator(schema)


def first_error(data: Any, name: str) -> tuple[str, str] | None:
    """(JSON path, message) of the most relevant violation of schema ``name``, or None."""
    from jsonschema.exceptions import best_match

    error = best_match(validator(name).iter_errors(data))
    if error is None:
        return None
    message = " ".join(error.message.split())
    if len(message) > 200:
        message = message[:197] + "..."
    return error.json_path, message


def parse(model: type[M], data: Any, path: str | Path, *, schema: str, within: str = "",
          as_json_path: bool = False) -> M:
    """``data`` of the file ``path`` as ``model``, valid against the published ``schema``
    and the model; the error names the file and where in it (the two forms of
    :func:`pipeline.core.jsonio.validation_error`; ``within``: where ``data`` sits in it)."""
    from pydantic import ValidationError

    try:  # JSON types exactly as the model declares them: the schema says the same
        return model.model_validate_json(json.dumps(data), strict=True)
    except (ValidationError, TypeError, ValueError):
        pass
    # The model's own error first, in its family's words; then what the model would have
    # coerced but the schema refuses ("3" for an integer); 3.0 for an integer is one to JSON
    # Schema and is taken.
    parsed = parse_model(model, data, str(path), within=within, as_json_path=as_json_path)
    err = first_error(data, schema)
    if err is None:
        return parsed
    where, message = err
    if as_json_path:
        where = (within + where[1:]) if within else where
        raise UserError(f"{where}: {message}", path=display_path(path),
                        fix=f"see pipeline/schemas/{schema}.json")
    field = ".".join(p for p in (within, where.removeprefix("$").lstrip(".")) if p)
    raise UserError(message, path=str(path), field=field or "(top level)",
                    fix=f"see pipeline/schemas/{schema}.json")
