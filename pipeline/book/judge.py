"""The judge of ``doit compare``: a scene's final prose scored against a weighted rubric.

The rubric is a score spec in ``score_specs/`` (``score_spec_scene.json``: weighted criteria
with unique ids, the base every family's rubric shares, pipeline/core/score_spec.py). The
model scores each criterion 1-5 with a reason (structured output, validated); the scene's
score is the weighted mean. The model settles like a book's (``SCENEMAKE_MODEL`` overrides
it); the spec's ``local`` (the shipped SmolLM2) falls back to the offline stand-in when it is
not installed, and says so: the stand-in's scores are placeholders, not a judgement.
Calls go through the one LLM client: cached by content (a second compare pays nothing) and
logged as ``judge:SCENE``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core import score_spec
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, parse_model, read_json
from pipeline.llm import CallContext, LLMClient, LLMRequest
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides

SPEC = Path("score_specs") / "score_spec_scene.json"
SCORES = [1, 2, 3, 4, 5]
STAND_IN = ("the offline stand-in (not a language model: its scores are placeholders, not a "
            "judgement)")


class SceneSpec(score_spec.Rubric):
    """The scene rubric (criteria scored 1-5) and the model that applies it."""

    model: ModelSettings = ModelSettings(provider="local", temperature=0.0, max_tokens=500)
    endpoint: Endpoint = Endpoint()


@dataclass
class Judge:
    """A loaded rubric with its settled model; ``label`` says which model scores."""

    spec: SceneSpec
    model: ModelSettings
    endpoint: Endpoint
    label: str
    stand_in: bool
    path: str


@dataclass
class Judgement:
    """One prose's scores: the weighted mean (1-5) and each criterion's score and reason."""

    score: float | None
    criteria: dict[str, dict] = field(default_factory=dict)
    error: str = ""


def _local_ready() -> str:
    """'' when the local provider's server can start here, else what is missing."""
    from pipeline.llm.providers import local

    missing = local._missing_server_modules()
    return f"llama.cpp's server is not installed ({', '.join(missing)})" if missing else ""


def load(path: Path = SPEC) -> Judge | None:
    """The judge of ``path`` (None when the file is not there: compare shows no scores);
    a broken spec is one UserError naming its field."""
    if not path.exists():
        return None
    shown = display_path(path)
    spec = parse_model(SceneSpec, read_json(path, "score spec"), shown)
    env = os.environ.get("SCENEMAKE_MODEL")
    try:
        model, endpoint = apply_env_overrides(spec.model, spec.endpoint, shown)
        why_not = _local_ready() if model.provider == "local" and not env else ""
        if why_not:
            raise UserError(why_not)
    except UserError as exc:
        if env or spec.model.provider != "local":
            raise
        stand_in = spec.model.model_copy(update={"provider": "offline", "model": "offline-1"})
        return Judge(spec, stand_in, spec.endpoint,
                     f"{STAND_IN}; the local model is not available here ({exc.bare})",
                     True, shown)
    if model.provider == "offline":
        return Judge(spec, model, endpoint, STAND_IN, True, shown)
    name = model.model.partition("@")[0]
    return Judge(spec, model, endpoint, f"{model.provider} {name}", False, shown)


def request_for(judge: Judge, book_style: dict, scene: dict, card: dict | None,
                prose: str) -> LLMRequest:
    """The judge's request for one prose (its content address decides cache hits)."""
    rubric = "\n".join(f"- {c.id} (weight {c.weight:g}): {c.description}"
                       for c in judge.spec.criteria)
    system = ("You review one scene of a novel for its writer. Score each criterion from 1 "
              "(poor) to 5 (excellent) and give a one-sentence reason. Judge only the prose "
              "against what the scene asks for. Answer with JSON only.")
    asked = {"style": book_style, "scene": {k: scene.get(k) for k in
                                            ("title", "brief", "characters", "location")}}
    if card:
        asked["card"] = {k: card.get(k) for k in ("goal", "conflict", "outcome", "beats")}
    user = (f"Rubric '{judge.spec.name}':\n{rubric}\n\nWhat the scene asks for:\n"
            f"{json.dumps(asked, ensure_ascii=False, indent=1)}\n\nThe prose:\n{prose}")
    m = judge.model
    schema = score_spec.judgement_schema([c.id for c in judge.spec.criteria], SCORES, 200)
    return LLMRequest(provider=m.provider, model=m.model,
                      messages=({"role": "system", "content": system},
                                {"role": "user", "content": user}),
                      params={"temperature": m.temperature, "max_tokens": m.max_tokens,
                              "seed": m.seed},
                      output_schema=schema)


def score(judge: Judge, client: LLMClient, ctx: CallContext, book_style: dict, scene: dict,
          card: dict | None, prose: str) -> Judgement:
    """Score one prose; a model that gives no valid answer is a Judgement with its error."""
    try:
        answer = client.complete(request_for(judge, book_style, scene, card, prose), ctx)
    except UserError as exc:
        return Judgement(None, error=exc.bare)
    data: Any = answer.data
    criteria = {c.id: data[c.id] for c in judge.spec.criteria}
    mean = judge.spec.weighted_mean({i: float(v["score"]) for i, v in criteria.items()})
    return Judgement(round(mean, 2), criteria)
