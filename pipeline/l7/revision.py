"""Stage 7, selective revision: a scene with continuity findings is revised by the LLM,
rescored and reselected; a scene without findings is left exactly as selected.

The revision request pins what the audit checks to its canonical value in the output
schema (every character's wardrobe, the style preset's keywords), so a constrained
decoder, or the offline model, cannot drift again.
"""

from __future__ import annotations

from pipeline.llm import CallContext, LLMClient

from . import candidates, llm, scoring, selection
from .continuity import check_side
from .contracts import ScoreSpec


def pins(ctx: dict) -> dict:
    """Schema pins for a revision: every field the continuity audit checks, canonical.

    Pinning only the fields named by findings would let the model drift on the others
    (a revised wardrobe, then a dropped style keyword); pinning all of them makes the
    revised candidate continuity-clean by construction.
    """
    return {"wardrobe": {c["id"]: c["wardrobe"] for c in ctx["cast"]},
            "style_keywords": list(ctx["style"]["keywords"])}


def revise(ctx: dict, current: dict, findings: list[dict], model: dict, generation: int,
           client: LLMClient, call: CallContext) -> dict:
    """One revised candidate for the scene (``kind`` ``revision``).

    The request holds the scene, its current prompt and its findings, not the neighbours'
    prompts: the pins already carry what continuity needs, and a neighbour's new wording
    then never makes this scene's revision be asked again.
    """
    schema = candidates.draft_schema(ctx, pins(ctx))
    msgs = llm.messages("revise", {**ctx, "prompt": current["prompt"], "findings": findings})
    response = llm.ask(client, llm.request(model, msgs, schema, generation), call,
                       candidates.parse_draft)
    return candidates.make_candidate(ctx, response.data, kind="revision", index=1,
                                     generation=generation,
                                     angle="revision of " + current["candidate_id"],
                                     request_hash=response.request_hash, model=model)


def blocked_by_continuity(ctx: dict, cands: list[dict], evals: list[dict],
                          neighbour_ctxs: list[dict]) -> dict[str, str]:
    """Candidates that would still have an error finding next to these neighbours."""
    blocked = {}
    by_id = {e["candidate_id"]: e for e in evals}
    for cand in cands:
        view = selection.view(cand, by_id[cand["candidate_id"]])
        errors = [f for other in neighbour_ctxs
                  for f in check_side(ctx, view, other, "recheck") if f["severity"] == "error"]
        if errors:
            blocked[cand["candidate_id"]] = ("continuity: " + "; ".join(
                sorted({f["category"] for f in errors})) + " finding(s) with its neighbours")
    return blocked


def reselect(ctx: dict, cands: list[dict], evals: list[dict], revised: dict,
             revised_eval: dict, neighbour_ctxs: list[dict]) -> dict:
    """The revision round: every candidate, revised one included, without continuity errors."""
    pool, pool_evals = [*cands, revised], [*evals, revised_eval]
    blocked = blocked_by_continuity(ctx, pool, pool_evals, neighbour_ctxs)
    return selection.select(pool_evals, "revision", blocked)


def rescore(spec: ScoreSpec, ctx: dict, revised: dict, criteria: list[dict], model: dict,
            client: LLMClient, call: CallContext) -> dict:
    """Judge and evaluate the revised candidate."""
    judgement = scoring.judge(ctx, revised, criteria, model, client, call)
    return scoring.evaluate(spec, ctx, revised, judgement)
