"""The one score spec: weighted criteria with unique ids, the base of every family's rubric.

L7 scores candidate prompts with it (rules and judged criteria, thresholds); the scenario
judge scores visible answers with it (0-100 per criterion). Each family subclasses both
models to add its own fields and keeps its own JSON contract and messages; what they share
(an id, a positive weight, a description, ids unique in a spec, the weighted mean) is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from pipeline.core.models import StrictModel


class Criterion(StrictModel):
    """One weighted criterion of a score spec."""

    id: str
    weight: float = Field(gt=0)
    description: str = ""


class ScoreSpec(StrictModel):
    """Weighted criteria; a family subclass narrows ``criteria`` to its own Criterion."""

    # what a family says about a repeated id ({id} is filled in)
    duplicate_id_message: ClassVar[str] = "duplicate criterion id '{id}'"

    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> ScoreSpec:
        seen: set[str] = set()
        for c in self.criteria:
            if c.id in seen:
                raise ValueError(self.duplicate_id_message.format(id=c.id))
            seen.add(c.id)
        return self

    def weighted_mean(self, scores: Mapping[str, float]) -> float:
        """The weight-averaged score of ``scores`` (criterion id -> score, every id present)."""
        total = sum(c.weight for c in self.criteria)
        return sum(c.weight * scores[c.id] for c in self.criteria) / total


class DescribedCriterion(Criterion):
    """A criterion a judge model scores: an id it can name, and what it asks for."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1)


class Rubric(ScoreSpec):
    """A judge's rubric file (``score_specs/``): its name, what it judges, a ``$comment``,
    and criteria that say what they ask for; a family adds its model and thresholds."""

    model_config = ConfigDict(populate_by_name=True)
    duplicate_id_message: ClassVar[str] = "criteria ids must be unique"

    comment: str | list[str] = Field("", alias="$comment")
    name: str = Field(min_length=1)
    description: str = ""
    criteria: list[DescribedCriterion] = Field(min_length=1)


def judgement_schema(ids: list[str], scores: list[int], reason_chars: int = 300) -> dict:
    """JSON Schema of a judge's answer: per criterion id a score among ``scores`` and a
    one-sentence reason. The scores are an enum, not minimum/maximum: llama.cpp's grammars
    enforce enums only."""
    one = {"type": "object",
           "properties": {"score": {"type": "integer", "enum": list(scores)},
                          "reason": {"type": "string", "minLength": 1,
                                     "maxLength": reason_chars}},
           "required": ["score", "reason"], "additionalProperties": False}
    return {"type": "object", "properties": {i: one for i in ids},
            "required": list(ids), "additionalProperties": False}
