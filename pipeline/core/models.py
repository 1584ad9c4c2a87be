"""The strict pydantic base every family's models share: unknown fields are refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A model whose inputs may carry no field it does not declare (a typo is an error)."""

    model_config = ConfigDict(extra="forbid")
