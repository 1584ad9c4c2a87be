"""Stage 3, candidate generation: N prompt drafts per scene from the LLM, rendered to text.

The model fills a structured draft (shot, description, per-character action and wardrobe,
environment, lighting, style keywords); the prompt text is rendered from it with the
canonical name and look of each character and the scene's place and time, so what the
model may get wrong is exactly what the rules and the continuity audit check.
"""

from __future__ import annotations

from typing import Any

from pipeline.llm import CallContext, LLMClient

from . import llm
from .contracts import SHOTS, PromptDraft

# Each candidate is asked from another angle, so the N requests (and answers) differ.
ANGLES = (
    "a wide establishing view of the whole place",
    "a medium shot on the characters and what they do",
    "a close-up on the detail that matters most",
    "a low or high camera angle that heightens the mood",
)


def candidate_id(sid: str, generation: int, index: int, kind: str = "initial") -> str:
    """``scene_003-c2``; ``scene_003-g1-c2`` from a partial rerun; ``-r1`` for a revision."""
    gen = f"-g{generation}" if generation else ""
    return f"{sid}{gen}-{'r' if kind == 'revision' else 'c'}{index}"


def draft_schema(ctx: dict, pins: dict | None = None) -> dict:
    """JSON Schema of the draft for this scene, narrowed to its cast, time and style.

    ``pins`` (from a revision) fixes fields to their canonical value:
    ``{"wardrobe": {character_id: text}, "style_keywords": [...]}``.
    """
    pins = pins or {}
    text = {"type": "string", "minLength": 1, "maxLength": 240}
    cast_props = {}
    for c in ctx["cast"]:
        wardrobe = dict(text)
        if c["id"] in pins.get("wardrobe", {}):
            wardrobe = {"type": "string", "enum": [pins["wardrobe"][c["id"]]]}
        cast_props[c["id"]] = {"type": "object",
                               "properties": {"action": dict(text), "wardrobe": wardrobe},
                               "required": ["action", "wardrobe"],
                               "additionalProperties": False}
    keywords = ctx["style"]["keywords"]
    style = {"type": "array", "items": {"type": "string", "enum": keywords},
             "minItems": 1, "maxItems": len(keywords)}
    if pins.get("style_keywords"):
        # A tuple of constants: every keyword, once, in order (decoders may repeat enums).
        pinned = pins["style_keywords"]
        style = {"type": "array", "prefixItems": [{"const": k} for k in pinned],
                 "items": False, "minItems": len(pinned), "maxItems": len(pinned)}
    return {
        "type": "object",
        "properties": {
            "shot": {"type": "string", "enum": list(SHOTS)},
            "description": {"type": "string", "minLength": 1, "maxLength": 400},
            "cast": {"type": "object", "properties": cast_props,
                     "required": [c["id"] for c in ctx["cast"]], "additionalProperties": False},
            "environment": dict(text),
            "time_of_day": {"type": "string", "enum": [ctx["scene"]["time_of_day"]]},
            "lighting": dict(text),
            "style_keywords": style,
        },
        "required": ["shot", "description", "cast", "environment", "time_of_day", "lighting",
                     "style_keywords"],
        "additionalProperties": False,
    }


def parse_draft(value: Any) -> PromptDraft:
    """Validate a draft; repeated style keywords are dropped (constrained decoders repeat)."""
    draft = PromptDraft.model_validate(value)
    draft.style_keywords = list(dict.fromkeys(draft.style_keywords))
    return draft


def _sentence(text: str) -> str:
    text = " ".join(text.split()).rstrip(" .,;")
    return text[:1].upper() + text[1:]


def render(ctx: dict, draft: PromptDraft) -> tuple[str, str]:
    """(prompt, negative prompt) of a draft in its scene context."""
    scene, style = ctx["scene"], ctx["style"]
    parts = [f"{_sentence(draft.shot)}: {_sentence(draft.description)}."]
    for c in ctx["cast"]:
        entry = draft.cast.get(c["id"])
        if entry is not None:
            parts.append(f"{c['name']}, {c['look']}, wearing {' '.join(entry.wardrobe.split())}, "
                         f"{' '.join(entry.action.split()).rstrip(' .')}.")
    where = f"{scene['location']}, {draft.time_of_day}"
    if scene["weather"]:
        where += f", {scene['weather']}"
    parts.append(f"Setting: {where}; {' '.join(draft.environment.split()).rstrip(' .')}.")
    parts.append(f"Mood: {scene['mood']}. Lighting: {' '.join(draft.lighting.split())}.")
    parts.append(f"Style: {', '.join(draft.style_keywords)}; aspect ratio "
                 f"{style['aspect_ratio']}.")
    return " ".join(parts), ", ".join(dict.fromkeys(style["negative"]))


def model_label(model: dict) -> str:
    return f"{model['provider']}:{model['model']}"


def make_candidate(ctx: dict, draft: PromptDraft, *, kind: str, index: int, generation: int,
                   angle: str, request_hash: str, model: dict) -> dict:
    """A candidate record (``contracts.Candidate``)."""
    sid = ctx["scene"]["scene_id"]
    prompt, negative = render(ctx, draft)
    return {"candidate_id": candidate_id(sid, generation, index, kind), "scene_id": sid,
            "kind": kind, "index": index, "generation": generation, "angle": angle,
            "draft": draft.model_dump(), "prompt": prompt, "negative_prompt": negative,
            "request_hash": request_hash, "model": model_label(model)}


def generate(ctx: dict, model: dict, n: int, generation: int, client: LLMClient,
             call: CallContext) -> list[dict]:
    """Ask the model for ``n`` candidates of the scene in ``ctx``."""
    schema = draft_schema(ctx)
    out = []
    for index in range(1, n + 1):
        angle = ANGLES[(index - 1) % len(ANGLES)]
        # N is not in the request: asking for more candidates asks only the new ones.
        msgs = llm.messages("candidate", {**ctx, "index": index, "angle": angle})
        response = llm.ask(client, llm.request(model, msgs, schema, generation), call,
                           parse_draft)
        out.append(make_candidate(ctx, response.data, kind="initial", index=index,
                                  generation=generation, angle=angle,
                                  request_hash=response.request_hash, model=model))
    return out
