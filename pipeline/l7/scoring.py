"""Stage 4, scoring: every candidate against every criterion of the score spec.

Rule criteria are computed here; judged criteria come from an LLM judge that scores each
candidate 1..5 per rubric. Every score is in [0, 1] and carries its reason. The weighted
score is sum(weight * score) / sum(weight); a hard criterion below its threshold, or a
weighted score below ``min_weighted_score``, makes a candidate ineligible.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import Field

from pipeline.core import score_spec
from pipeline.core.errors import UserError
from pipeline.core.jsonio import parse_model
from pipeline.core.models import StrictModel
from pipeline.llm import CallContext, LLMClient

from . import llm
from .contracts import TIMES, Criterion, PromptDraft, ScoreSpec

EPS = 1e-9
_STOP = {"the", "a", "an", "of", "on", "in", "at", "to", "and", "with", "small", "old", "great"}


class _Params(StrictModel):
    """A rule's params: a misspelt one is an error, not a silent default."""


class WordCountParams(_Params):
    min_words: int = Field(1, ge=0)
    max_words: int = Field(200, gt=0)


class StyleParams(_Params):
    required: list[str] | None = Field(None, description="default: all preset keywords")


class ForbiddenParams(_Params):
    terms: list[str] = []
    include_style_negative: bool = True


PARAMS: dict[str, type[_Params]] = {
    "word_count": WordCountParams, "style_keywords": StyleParams,
    "forbidden_terms": ForbiddenParams, "character_names": _Params, "setting_named": _Params,
    "time_of_day": _Params,
}


def check_params(spec: ScoreSpec, path: str) -> None:
    """Each rule's params are valid (one-line error naming criteria[i].params.field)."""
    for i, crit in enumerate(spec.criteria):
        if crit.kind != "rule" or crit.rule is None:
            continue
        params = parse_model(PARAMS[crit.rule], crit.params, path,
                             within=f"criteria[{i}].params")
        if isinstance(params, WordCountParams) and params.min_words > params.max_words:
            raise UserError("min_words is above max_words", path=path,
                            field=f"criteria[{i}].params")


def has_phrase(text: str, phrase: str) -> bool:
    """True if ``phrase`` occurs in ``text`` as whole words, ignoring case."""
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def model_text(draft: PromptDraft) -> str:
    """The parts of a prompt the model wrote itself (not the canonical anchors)."""
    actions = " ".join(e.action for e in draft.cast.values())
    return " ".join([draft.description, draft.environment, draft.lighting, actions])


# -- rules: (params, ctx, draft, prompt) -> (score, reason) -----------------------------
def _word_count(p: WordCountParams, ctx: dict, draft: PromptDraft, prompt: str):
    n = len(prompt.split())
    if p.min_words <= n <= p.max_words:
        return 1.0, f"{n} words, within {p.min_words}..{p.max_words}"
    if n < p.min_words:
        return n / p.min_words, f"{n} words, below the minimum of {p.min_words}"
    return max(0.0, 1 - (n - p.max_words) / p.max_words), \
        f"{n} words, above the maximum of {p.max_words}"


def _style_keywords(p: StyleParams, ctx: dict, draft: PromptDraft, prompt: str):
    wanted = p.required or ctx["style"]["keywords"]
    have = [k for k in wanted if k in draft.style_keywords or has_phrase(prompt, k)]
    missing = [k for k in wanted if k not in have]
    reason = f"carries {len(have)} of {len(wanted)} style keywords"
    if missing:
        reason += "; missing: " + ", ".join(f"'{k}'" for k in missing)
    return len(have) / len(wanted), reason


def _forbidden_terms(p: ForbiddenParams, ctx: dict, draft: PromptDraft, prompt: str):
    terms = list(p.terms) + (ctx["style"]["negative"] if p.include_style_negative else [])
    found = [t for t in dict.fromkeys(terms) if has_phrase(prompt, t)]
    if found:
        return 0.0, "contains forbidden term(s): " + ", ".join(f"'{t}'" for t in found)
    return 1.0, f"none of {len(set(terms))} forbidden terms present"


def _character_names(p: _Params, ctx: dict, draft: PromptDraft, prompt: str):
    names = [c["name"] for c in ctx["cast"]]
    if not names:
        return 1.0, "no characters in this scene"
    named = [n for n in names if has_phrase(draft.description, n)]
    missing = [n for n in names if n not in named]
    reason = f"description names {len(named)} of {len(names)} characters"
    if missing:
        reason += "; missing: " + ", ".join(missing)
    return len(named) / len(names), reason


def _setting_named(p: _Params, ctx: dict, draft: PromptDraft, prompt: str):
    words = [w for w in re.findall(r"[a-z]+", ctx["scene"]["location"].lower())
             if w not in _STOP and len(w) > 2]
    if not words:
        return 1.0, "the location has no distinctive words"
    text = f"{draft.description} {draft.environment}"
    have = [w for w in words if has_phrase(text, w)]
    reason = f"description/environment mention {len(have)} of {len(words)} location words"
    if len(have) < len(words):
        reason += " (" + ", ".join(w for w in words if w not in have) + " missing)"
    return len(have) / len(words), reason


def _time_of_day(p: _Params, ctx: dict, draft: PromptDraft, prompt: str):
    want = ctx["scene"]["time_of_day"]
    other = [t for t in TIMES if t != want and has_phrase(model_text(draft), t)]
    if other:
        return 0.0, f"the scene is at {want} but the text says {', '.join(other)}"
    return 1.0, f"no time of day other than {want} in the text"


RULES: dict[str, Callable] = {
    "word_count": _word_count, "style_keywords": _style_keywords,
    "forbidden_terms": _forbidden_terms, "character_names": _character_names,
    "setting_named": _setting_named, "time_of_day": _time_of_day,
}


# -- the judge ------------------------------------------------------------------------
def rubric(spec: ScoreSpec) -> list[dict]:
    """The judged criteria as the rubric file holds them: id and rubric, no weights."""
    return [{"id": c.id, "rubric": c.rubric} for c in spec.criteria if c.kind == "judge"]


def judge_schema(criteria: list[dict]) -> dict:
    """JSON Schema of a judgement: per criterion an integer 1..5 and a reason."""
    return score_spec.judgement_schema([c["id"] for c in criteria], [1, 2, 3, 4, 5], 300)


def _judgement_ok(value):
    if not isinstance(value, dict):
        raise ValueError("a judgement is an object")
    return value


def judge(ctx: dict, candidate: dict, criteria: list[dict], model: dict, client: LLMClient,
          call: CallContext) -> dict:
    """{criterion id: {score 1..5, reason}} for one candidate ({} without judged criteria)."""
    if not criteria:
        return {}
    msgs = llm.messages("judge", {**ctx, "prompt": candidate["prompt"], "criteria": criteria})
    # The judge is never resampled: the same prompt text always gets the same judgement.
    response = llm.ask(client, llm.request(model, msgs, judge_schema(criteria), 0), call,
                       _judgement_ok)
    return response.data


# -- evaluation ------------------------------------------------------------------------
def _criterion(crit: Criterion, ctx: dict, candidate: dict, judgement: dict):
    if crit.kind == "rule":
        assert crit.rule is not None
        params = PARAMS[crit.rule].model_validate(crit.params)
        draft = PromptDraft.model_validate(candidate["draft"])
        score, reason = RULES[crit.rule](params, ctx, draft, candidate["prompt"])
    else:
        got = judgement.get(crit.id)
        if got is None:
            raise UserError(f"judgement of {candidate['candidate_id']} has no '{crit.id}'",
                            fix="rerun: the judge stage reruns when the rubric changes")
        score, reason = (int(got["score"]) - 1) / 4, f"judge {got['score']}/5: {got['reason']}"
    score = round(min(1.0, max(0.0, score)), 4)
    return {"criterion_id": crit.id, "kind": crit.kind, "weight": crit.weight, "score": score,
            "threshold": crit.threshold, "hard": crit.hard,
            "passed": score + EPS >= crit.threshold, "reason": reason}


def evaluate(spec: ScoreSpec, ctx: dict, candidate: dict, judgement: dict) -> dict:
    """The evaluation of one candidate (``contracts.Evaluation``)."""
    scores = [_criterion(c, ctx, candidate, judgement) for c in spec.criteria]
    total_weight = sum(s["weight"] for s in scores)
    weighted = round(sum(s["weight"] * s["score"] for s in scores) / total_weight, 4)
    failed = [s["criterion_id"] for s in scores if s["hard"] and not s["passed"]]
    hard_ok = not failed
    if weighted + EPS < spec.min_weighted_score:
        failed.append("min_weighted_score")
    return {"candidate_id": candidate["candidate_id"], "scene_id": candidate["scene_id"],
            "criteria": scores, "weighted_score": weighted, "hard_constraints_passed": hard_ok,
            "failed_hard_constraints": failed,
            "soft_thresholds_met": sum(1 for s in scores if not s["hard"] and s["passed"]),
            "eligible": not failed}
