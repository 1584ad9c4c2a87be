"""LLM judge: each visible answer scored 0-100 against a weighted rubric in ``score_specs/``.

The rubric (``score_specs/score_spec_answer.json``) names weighted criteria; the model
scores each 0-100 with a reason (structured output, validated), and a step's score is the
weighted mean. Calls go through the one LLM client: cached by content, logged with the
task ``review_judge:<run_id>``, and made at all only when the review task is stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline.core import score_spec
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json
from pipeline.llm import CallContext, LLMClient, LLMRequest
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides

from .contracts import parse
from .layout import RunLayout, StepRef


class Criterion(score_spec.DescribedCriterion):
    """A criterion the judge scores 0-100; it must say what it asks for."""


class ScoreSpec(score_spec.Rubric):
    """A weighted rubric and the model that applies it."""

    pass_score: float = Field(80, ge=0, le=100)
    model: ModelSettings = ModelSettings(temperature=0.0, max_tokens=600)
    endpoint: Endpoint = Endpoint()
    criteria: list[Criterion] = Field(min_length=1)


def load_score_spec(path: Path) -> ScoreSpec:
    """The rubric at ``path``; UserError naming the file and field when invalid. Its model
    settles like a book's: the provider's own defaults (``local``: the shipped model), and
    ``SCENEMAKE_MODEL`` / ``SCENEMAKE_BASE_URL`` override it."""
    spec = parse(ScoreSpec, read_json(path, "score spec"), path, schema="judge_score_spec")
    model, endpoint = apply_env_overrides(spec.model, spec.endpoint, display_path(path))
    return spec.model_copy(update={"model": model, "endpoint": endpoint})


def output_schema(spec: ScoreSpec) -> dict:
    """The JSON Schema of the judge's answer: a score and a reason per criterion."""
    one = {"type": "object",
           "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100},
                          "reason": {"type": "string", "minLength": 1, "maxLength": 400}},
           "required": ["score", "reason"], "additionalProperties": False}
    return {"type": "object", "properties": {c.id: one for c in spec.criteria},
            "required": [c.id for c in spec.criteria], "additionalProperties": False}


def request_for(spec: ScoreSpec, question: str, reply: str, capability: str) -> LLMRequest:
    """The judge request of one answer (its content address decides cache hits)."""
    rubric = "\n".join(f"- {c.id} (weight {c.weight:g}): {c.description}"
                       for c in spec.criteria)
    system = ("You review a business assistant's visible answer for a business user. Score "
              "each criterion from 0 to 100 and give a one-sentence reason. Judge only what "
              "the user sees. Answer with JSON only.")
    user = (f"Rubric '{spec.name}':\n{rubric}\n\nQuestion:\n{question}\n\n"
            f"Assistant capability status: {capability}\n\nVisible answer:\n{reply}")
    m = spec.model
    return LLMRequest(provider=m.provider, model=m.model,
                      messages=({"role": "system", "content": system},
                                {"role": "user", "content": user}),
                      params={"temperature": m.temperature, "max_tokens": m.max_tokens,
                              "seed": m.seed},
                      output_schema=output_schema(spec))


def judge_step(client: LLMClient, spec: ScoreSpec, step: StepRef, run_id: str) -> dict:
    """Score one captured step (``score`` None when it has no answer)."""
    row: dict[str, Any] = {"scenario_id": step.scenario_id, "step_id": step.step_id}
    response = step.response()
    if response is None:
        row.update(score=None, status="not_judged", reason="no captured answer")
        return row
    state = step.state() or {}
    request = request_for(spec, state.get("question") or step.spec.get("question", ""),
                          str(response.get("reply", "")),
                          (response.get("capability") or {}).get("status", "answered"))
    ctx = CallContext(run=f"scenario:{run_id}", task=f"review_judge:{run_id}",
                      unit=step.key, step="judge")
    answer = client.complete(request, ctx)
    data = answer.data
    score = spec.weighted_mean({c.id: data[c.id]["score"] for c in spec.criteria})
    row.update(score=round(score, 1), status="pass" if score >= spec.pass_score else "below",
               criteria={c.id: data[c.id] for c in spec.criteria},
               request_hash=answer.request_hash, cache=answer.cache)
    return row


def build(layout: RunLayout, client: LLMClient, spec: ScoreSpec, spec_path: str) -> dict:
    """``judge_review.json`` for a run."""
    steps = []
    for step in layout.steps():
        try:
            steps.append(judge_step(client, spec, step, layout.run_id))
        except UserError as exc:  # the model gave no valid score: say so, keep the others
            steps.append({"scenario_id": step.scenario_id, "step_id": step.step_id,
                          "score": None, "status": "error", "reason": str(exc)})
    scores = [s["score"] for s in steps if s["score"] is not None]
    score = round(sum(scores) / len(scores), 1) if scores else None
    return {"kind": "judge_review", "run_id": layout.run_id, "score_spec": spec_path,
            "rubric": spec.name, "pass_score": spec.pass_score,
            "model": f"{spec.model.provider}/{spec.model.model}",
            "score": score, "steps_judged": len(scores),
            "status": "not_judged" if score is None else
                      ("pass" if score >= spec.pass_score else "below"),
            "steps": steps}


def render_md(review: dict) -> str:
    """``judge_review.md``."""
    lines = [f"# Judge review: {review['run_id']}", "",
             f"**Score: {review['score']}** (rubric `{review['rubric']}`, pass at "
             f"{review['pass_score']:g}, model {review['model']}); "
             f"{review['steps_judged']} step(s) judged.", ""]
    for s in review["steps"]:
        lines.append(f"## {s['scenario_id']}/{s['step_id']}: {s['score']}")
        if s.get("reason"):
            lines.append(f"- {s['reason']}")
        for cid, c in (s.get("criteria") or {}).items():
            lines.append(f"- {cid}: {c['score']}: {c['reason']}")
        lines.append("")
    return "\n".join(lines)
