"""The reference assistant's answer rules: ``workspace/scenarios/assistant_rules.json``.

Read on every request, so editing the file changes the next answer without a restart.
The rules are how an operator (or the repair loop's coder) makes the assistant answer
better or worse: every business-review finding maps onto one rule here.

| rule | default | effect when changed |
|---|---|---|
| ``direct_answer_first`` | true | false: a preamble line first, the answer after the details |
| ``state_data_date`` | true | false: the "Data as of <date>" line is dropped |
| ``show_route_ids`` | false | true: the internal route id and result set id are shown to the user |
| ``include_raw_json`` | false | true: the raw result entries are pasted as JSON into the answer |
| ``max_list_items`` | 5 | how many detail lines at most (the rest is summarised as "and N more") |
| ``layered_answer`` | true | false: answer, details and date run together on one line |
| ``follow_up_offer`` | true | false: no closing line offering a next question |
| ``model`` | offline | the LLM that chooses the wording (never the facts) |
| ``endpoint`` | none | how to reach an OpenAI-compatible model (see the book's ``endpoint``) |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from pipeline.core import schemas
from pipeline.core.jsonio import display_path, read_json
from pipeline.core.models import StrictModel
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides


class AnswerRules(StrictModel):
    """How answers are laid out; see the module docstring for each rule."""

    model_config = ConfigDict(populate_by_name=True)

    comment: str | list[str] = Field("", alias="$comment")
    direct_answer_first: bool = True
    state_data_date: bool = True
    show_route_ids: bool = False
    include_raw_json: bool = False
    max_list_items: int = Field(5, ge=1, le=1000)
    layered_answer: bool = True
    follow_up_offer: bool = True
    model: ModelSettings = ModelSettings(temperature=0.0, max_tokens=200)
    endpoint: Endpoint = Endpoint()


def load_rules(path: Path | None) -> AnswerRules:
    """The rules in ``path`` (defaults when the file does not exist); UserError when invalid.
    The wording model settles like a book's (the provider's defaults, ``SCENEMAKE_MODEL``)."""
    if path is None or not path.exists():
        rules, where = AnswerRules(), "assistant rules (defaults)"
    else:
        where = display_path(path)
        rules = schemas.parse(AnswerRules, read_json(path, "assistant rules"), where,
                              schema="assistant_rules")
    model, endpoint = apply_env_overrides(rules.model, rules.endpoint, where)
    return rules.model_copy(update={"model": model, "endpoint": endpoint})


# The file this family reads and its published schema (pipeline/schemas/; a test keeps it
# current; ``python -m pipeline.assistant.rules`` rewrites it).
SCHEMAS = {"assistant_rules": AnswerRules}

if __name__ == "__main__":  # pragma: no cover - a maintenance command
    for written in schemas.write(SCHEMAS):
        print(written)
