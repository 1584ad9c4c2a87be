"""Stage 6, continuity audit: what adjacent scenes share must look the same in both prompts.

For each pair of adjacent scenes: every character in both is named and keeps the
session's look and the scene's wardrobe; a place in both is named in both; each prompt
keeps its scene's time of day and the style preset's core keywords; and a prompt does not
name the neighbour's characters that are not in its own scene (a warning).

Every check compares a prompt with the canonical facts of its own scene, never with the
neighbour's prompt: fixing one scene can then never create a finding in another, so one
round of revision is enough.
"""

from __future__ import annotations

import re

from .contracts import PromptDraft
from .scoring import model_text


def norm(text: str) -> str:
    """Lowercase, punctuation to spaces, single spaces: how texts are compared."""
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def _contains(text: str, phrase: str) -> bool:
    return f" {norm(phrase)} " in f" {norm(text)} "


def check_side(ctx: dict, view: dict | None, other: dict, pair: str) -> list[dict]:
    """Findings against one scene (``ctx``, its selected ``view``) of a pair."""
    if view is None:
        return []  # a rejected scene has no prompt; Gate-Out reports it
    sid = ctx["scene"]["scene_id"]
    draft = PromptDraft.model_validate(view["draft"])
    prompt = view["prompt"]
    found: list[dict] = []

    def add(category: str, message: str, key: str = "", *, expected: str | None = None,
            got: str | None = None, severity: str = "error") -> None:
        fid = f"{pair}:{sid}:{category}" + (f":{key}" if key else "")
        found.append({"finding_id": fid, "scene_id": sid, "category": category,
                      "severity": severity, "message": message, "expected": expected,
                      "found": got})

    own = {c["id"]: c for c in ctx["cast"]}
    theirs = {c["id"]: c for c in other["cast"]}
    for cid in [c for c in own if c in theirs]:
        c = own[cid]
        if cid not in draft.cast or not _contains(prompt, c["name"]):
            add("character_name", f"{c['name']} is in both scenes but the {sid} prompt does "
                f"not name them", cid, expected=c["name"])
        if not _contains(prompt, c["look"]):
            add("character_look", f"the {sid} prompt lost {c['name']}'s look", cid,
                expected=c["look"])
        worn = draft.cast[cid].wardrobe if cid in draft.cast else ""
        if not _contains(worn, c["wardrobe"]):
            add("wardrobe", f"wardrobe drift: {sid} dresses {c['name']} in '{worn}'", cid,
                expected=c["wardrobe"], got=worn)
    if norm(ctx["scene"]["location"]) == norm(other["scene"]["location"]) \
            and not _contains(prompt, ctx["scene"]["location"]):
        add("setting", f"both scenes are at {ctx['scene']['location']} but the {sid} prompt "
            "does not say so", expected=ctx["scene"]["location"])
    if draft.time_of_day != ctx["scene"]["time_of_day"]:
        add("time_of_day", f"{sid} is at {ctx['scene']['time_of_day']}, its prompt says "
            f"{draft.time_of_day}", expected=ctx["scene"]["time_of_day"], got=draft.time_of_day)
    core = ctx["style"]["core_keywords"]
    missing = [k for k in core if k not in draft.style_keywords]
    if missing:
        add("style", f"style drift: the {sid} prompt leaves out core keyword(s) "
            + ", ".join(f"'{k}'" for k in missing), expected=", ".join(core),
            got=", ".join(draft.style_keywords))
    text = model_text(draft)
    for cid, c in theirs.items():
        if cid not in own and re.search(rf"(?<!\w){re.escape(c['name'])}(?!\w)", text):
            add("character_name", f"the {sid} prompt names {c['name']}, who is only in the "
                f"neighbouring scene", cid, got=c["name"], severity="warning")
    return found


def audit_pair(ctx_a: dict, view_a: dict | None, ctx_b: dict, view_b: dict | None) -> dict:
    """The audit of adjacent scenes a, b: ``{"pair": [a, b], "findings": [...]}``."""
    a, b = ctx_a["scene"]["scene_id"], ctx_b["scene"]["scene_id"]
    pair = f"{a}+{b}"
    return {"pair": [a, b], "findings": check_side(ctx_a, view_a, ctx_b, pair)
            + check_side(ctx_b, view_b, ctx_a, pair)}


def scene_findings(pairs: list[dict], sid: str) -> list[dict]:
    """The findings against scene ``sid`` in the given pair audits."""
    return [f for p in pairs for f in p["findings"] if f["scene_id"] == sid]
