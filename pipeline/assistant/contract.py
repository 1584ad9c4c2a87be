"""The assistant HTTP API contract: ``pipeline/schemas/assistant_api.json`` (JSON Schema).

Shared by the reference assistant (checks requests) and the scenario runner (checks
answers), so both sides hold the same contract.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from jsonschema import Draft202012Validator


@functools.cache
def api_schema() -> dict:
    """The assistant API contract (JSON Schema, draft 2020-12)."""
    text = resources.files("pipeline").joinpath("schemas/assistant_api.json").read_text("utf-8")
    return json.loads(text)


def contract_validator(name: str) -> Draft202012Validator:
    """A validator for one ``$defs`` entry of the contract (e.g. ``message_response``)."""
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": api_schema()["$defs"]})
