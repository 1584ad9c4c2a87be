"""L7 domain logic in-process: schema files, rule criteria, weighted scoring, selection,
continuity checks and the pinned revision."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.l7 import candidates, continuity, revision, scoring, selection
from pipeline.l7.contracts import SCHEMAS, PromptDraft, ScoreSpec, build_schema, schema_path
from pipeline.llm import CallContext, build_client
from pipeline.llm.schemafill import Vocabulary, fill_valid

STYLE = {"id": "ink", "description": "", "keywords": ["ink wash", "teal palette", "film grain"],
         "core_keywords": ["ink wash"], "negative": ["watermark"], "aspect_ratio": "16:9"}


def ctx(sid: str = "s1", cast=("mara",), location: str = "the old pier", time: str = "dawn",
        wardrobe: str = "grey coat") -> dict:
    people = {"mara": ("Mara", "tall woman with cropped black hair"),
              "tomas": ("Tomas", "old sailor with a white beard")}
    return {"session_title": "T",
            "scene": {"scene_id": sid, "title": "A scene", "action": "Mara waits",
                      "mood": "quiet", "location": location, "time_of_day": time,
                      "weather": ""},
            "cast": [{"id": c, "name": people[c][0], "look": people[c][1],
                      "wardrobe": wardrobe} for c in cast],
            "style": STYLE}


def draft(**kw) -> PromptDraft:
    base = {"shot": "medium shot", "description": "Mara waits on the old pier",
            "cast": {"mara": {"action": "leans on a post", "wardrobe": "grey coat"}},
            "environment": "wet planks of the pier", "time_of_day": "dawn",
            "lighting": "cold blue light", "style_keywords": ["ink wash", "teal palette"]}
    base.update(kw)
    return PromptDraft.model_validate(base)


def candidate(c: dict, d: PromptDraft, cid: str = "s1-c1") -> dict:
    prompt, negative = candidates.render(c, d)
    return {"candidate_id": cid, "scene_id": c["scene"]["scene_id"], "draft": d.model_dump(),
            "prompt": prompt, "negative_prompt": negative, "generation": 0}


def spec(*criteria: dict, min_weighted_score: float = 0.0) -> ScoreSpec:
    return ScoreSpec.model_validate({"schema_version": "l7.score_spec.v1", "spec_id": "t",
                                     "version": "1", "min_weighted_score": min_weighted_score,
                                     "criteria": list(criteria)})


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_files_are_generated_from_the_models(name):
    # regenerate with: python -m pipeline.l7.contracts
    assert json.loads(schema_path(name).read_text()) == build_schema(name)


def test_render_puts_canonical_name_and_look_beside_the_model_wardrobe():
    prompt, negative = candidates.render(ctx(), draft())
    assert prompt.startswith("Medium shot: Mara waits on the old pier.")
    assert "Mara, tall woman with cropped black hair, wearing grey coat, leans on a post." in prompt
    assert "Setting: the old pier, dawn;" in prompt and "Style: ink wash, teal palette;" in prompt
    assert negative == "watermark"


@pytest.mark.parametrize("rule, params, d, expect", [
    ("word_count", {"min_words": 5, "max_words": 500}, draft(), 1.0),
    ("word_count", {"min_words": 400, "max_words": 500}, draft(), None),  # below: partial
    ("style_keywords", {}, draft(), 2 / 3),
    ("style_keywords", {"required": ["ink wash"]}, draft(), 1.0),
    ("forbidden_terms", {"terms": ["pier"]}, draft(), 0.0),
    ("forbidden_terms", {"terms": ["pie"]}, draft(), 1.0),  # whole words only
    ("forbidden_terms", {}, draft(lighting="watermark glow"), 0.0),  # the style's negatives
    ("character_names", {}, draft(description="Someone waits"), 0.0),
    ("character_names", {}, draft(), 1.0),
    ("setting_named", {}, draft(description="x", environment="wet planks"), 0.0),
    ("setting_named", {}, draft(), 1.0),
    ("time_of_day", {}, draft(lighting="night glow"), 0.0),
    ("time_of_day", {}, draft(), 1.0),
])
def test_rule_criteria(rule, params, d, expect):
    c = ctx()
    crit = {"id": "r", "kind": "rule", "rule": rule, "params": params, "weight": 1}
    ev = scoring.evaluate(spec(crit), c, candidate(c, d), {})
    score = ev["criteria"][0]["score"]
    assert ev["criteria"][0]["reason"]
    if expect is None:
        assert 0 < score < 1
    else:
        assert score == pytest.approx(expect, abs=1e-4)


def test_weighted_score_thresholds_and_hard_constraints():
    c = ctx()
    s = spec({"id": "style", "kind": "rule", "rule": "style_keywords", "weight": 3,
              "threshold": 0.9},
             {"id": "words", "kind": "rule", "rule": "word_count", "weight": 1, "hard": True,
              "params": {"min_words": 1, "max_words": 500}},
             {"id": "look", "kind": "judge", "rubric": "r", "weight": 2, "threshold": 0.5},
             min_weighted_score=0.5)
    ev = scoring.evaluate(s, c, candidate(c, draft()),
                          {"look": {"score": 5, "reason": "clear"}})
    # (3 * 2/3 + 1 * 1 + 2 * 1) / 6
    assert ev["weighted_score"] == pytest.approx(5 / 6, abs=1e-4)
    assert ev["eligible"] and ev["soft_thresholds_met"] == 1  # style below 0.9, look above
    assert ev["criteria"][2]["reason"] == "judge 5/5: clear"
    ev = scoring.evaluate(s, c, candidate(c, draft()), {"look": {"score": 1, "reason": "no"}})
    assert ev["weighted_score"] == pytest.approx(3 / 6, abs=1e-4) and ev["eligible"]
    hard = spec({"id": "words", "kind": "rule", "rule": "word_count", "weight": 1,
                 "hard": True, "threshold": 1.0, "params": {"min_words": 900,
                                                             "max_words": 1000}})
    ev = scoring.evaluate(hard, c, candidate(c, draft()), {})
    assert not ev["eligible"] and not ev["hard_constraints_passed"]
    assert ev["failed_hard_constraints"] == ["words"]


def _ev(cid: str, score: float, soft: int = 0, eligible: bool = True) -> dict:
    return {"candidate_id": cid, "scene_id": "s1", "weighted_score": score,
            "soft_thresholds_met": soft, "eligible": eligible, "hard_constraints_passed": eligible,
            "failed_hard_constraints": [] if eligible else ["words"],
            "criteria": [{"criterion_id": "words", "reason": "3 words, below the minimum"}]}


def test_selection_is_deterministic_and_explains_every_candidate():
    rnd = selection.select([_ev("c1", 0.7), _ev("c2", 0.9, eligible=False), _ev("c3", 0.8)])
    assert rnd["winner"] == "c3" and rnd["status"] == "selected"
    reasons = {e["candidate_id"]: e["reason"] for e in rnd["ranking"]}
    assert reasons["c3"].startswith("won: highest weighted score 0.800 among 2")
    assert reasons["c1"] == "lost: weighted score 0.700 below the winner's 0.800"
    assert reasons["c2"].startswith("lost: failed hard constraint(s): words (3 words")
    # ties: more soft thresholds first, then candidate order
    rnd = selection.select([_ev("c1", 0.8, 1), _ev("c2", 0.8, 2), _ev("c3", 0.8, 2)])
    assert rnd["winner"] == "c2" and "tie broken by candidate order" in rnd["ranking"][0]["reason"]
    reasons = {e["candidate_id"]: e["reason"] for e in rnd["ranking"]}
    assert "meets more soft thresholds" in reasons["c1"]
    assert "comes first in candidate order" in reasons["c3"]
    assert selection.select([_ev("c1", 0.9, eligible=False)])["status"] == "rejected"
    blocked = selection.select([_ev("c1", 0.9), _ev("c2", 0.5)], "revision",
                               {"c1": "continuity: wardrobe finding(s)"})
    assert blocked["winner"] == "c2" and blocked["ranking"][0]["reason"] == \
        "lost: continuity: wardrobe finding(s)"


def test_continuity_checks_what_adjacent_scenes_share():
    a, b = ctx("s1", ("mara",)), ctx("s2", ("mara", "tomas"), location="the old pier")
    good_a = candidate(a, draft())
    drift = draft(description="Mara and Tomas talk",
                  cast={"mara": {"action": "talks", "wardrobe": "red dress"},
                        "tomas": {"action": "listens", "wardrobe": "anything"}},
                  style_keywords=["teal palette"])
    audit = continuity.audit_pair(a, selection.view(good_a, {"weighted_score": 1,
                                                             "hard_constraints_passed": True}),
                                  b, selection.view(candidate(b, drift, "s2-c1"),
                                                    {"weighted_score": 1,
                                                     "hard_constraints_passed": True}))
    found = {(f["scene_id"], f["category"], f["severity"]) for f in audit["findings"]}
    # Tomas is only in s2: his wardrobe is not a continuity matter between s1 and s2
    assert found == {("s2", "wardrobe", "error"), ("s2", "style", "error")}
    wardrobe = next(f for f in audit["findings"] if f["category"] == "wardrobe")
    assert wardrobe["expected"] == "grey coat" and wardrobe["found"] == "red dress"
    # a prompt that names the neighbour's character who is not in its own scene: a warning
    bleed = draft(description="Mara waits for Tomas on the old pier")
    audit = continuity.audit_pair(a, selection.view(candidate(a, bleed), {
        "weighted_score": 1, "hard_constraints_passed": True}), b, None)
    assert [(f["category"], f["severity"]) for f in audit["findings"]] == \
        [("character_name", "warning")]


def test_revision_pins_make_the_revised_candidate_continuity_clean(tmp_path):
    a, b = ctx("s1", ("mara",)), ctx("s2", ("mara",))
    schema = candidates.draft_schema(b, revision.pins(b))
    for seed in range(20):  # any sample of the pinned schema is clean
        value = fill_valid(schema, random.Random(seed), Vocabulary.from_texts(["Mara waits."]))
        d = candidates.parse_draft(value)
        assert d.cast["mara"].wardrobe == "grey coat"
        assert d.style_keywords == STYLE["keywords"]
        assert [f for f in continuity.check_side(b, {"draft": d.model_dump(), "prompt":
                                                     candidates.render(b, d)[0]}, a, "p")
                if f["severity"] == "error"] == []
    client = build_client(tmp_path)
    model = {"provider": "offline", "model": "offline-1", "temperature": 0.7,
             "max_tokens": 500, "seed": 7}
    current = candidate(b, draft(cast={"mara": {"action": "x", "wardrobe": "red"}}), "s2-c1")
    findings = continuity.check_side(b, current, a, "s1+s2")
    assert [f["category"] for f in findings] == ["wardrobe"]
    revised = revision.revise(b, current, findings, model, 0, client,
                              CallContext(run="t", task="l7_revise:s2", unit="s2",
                                          step="revision"))
    assert revised["candidate_id"] == "s2-r1" and revised["kind"] == "revision"
    assert continuity.check_side(b, revised, a, "s1+s2") == []


def test_offline_drafts_fit_the_scene_schema():
    c = ctx("s2", ("mara", "tomas"))
    schema = candidates.draft_schema(c)
    for seed in range(10):
        d = candidates.parse_draft(fill_valid(schema, random.Random(seed),
                                              Vocabulary.from_texts(["Mara waits."])))
        assert set(d.cast) == {"mara", "tomas"} and d.time_of_day == "dawn"
        assert set(d.style_keywords) <= set(STYLE["keywords"])
    assert candidates.candidate_id("scene_003", 0, 2) == "scene_003-c2"
    assert candidates.candidate_id("scene_003", 1, 2) == "scene_003-g1-c2"
    assert candidates.candidate_id("scene_003", 1, 1, "revision") == "scene_003-g1-r1"
