"""A scenario pack judged by a real instruct model, the rubric as shipped and
``SCENEMAKE_MODEL=local`` (SmolLM2 through the ``local`` provider): every answered step gets
a score and reasons from the model, through the one LLM client (cached: judging again pays
nothing)."""

from __future__ import annotations

import json

import pytest
from support.scenario import PACK, sproject  # noqa: F401  (fixture)
from support.smollm import LOCAL, require_smollm

pytestmark = [pytest.mark.llama, pytest.mark.slow]

SPEC = "score_specs/score_spec_answer.json"


def test_a_pack_is_judged_by_the_real_model(sproject):  # noqa: F811
    require_smollm()
    shipped = (sproject.root / SPEC).read_bytes()
    a = sproject.assistant()
    proc = sproject.cli("run-pack", "--pack", PACK, "--base-url", a.url, timeout=1800,
                        env=LOCAL)
    assert (sproject.root / SPEC).read_bytes() == shipped  # the rubric as shipped
    assert proc.returncode in (0, 1), proc.out[-3000:]  # accepted or not: a verdict
    assert "Traceback" not in proc.out
    run = next(p for p in sproject.runs.iterdir() if (p / "judge_review.json").exists())
    judge = json.loads((run / "judge_review.json").read_text())
    assert judge["model"].startswith("local/SmolLM2-135M-Instruct")
    scored = [s for s in judge["steps"] if s["score"] is not None]
    assert scored, judge
    for step in scored:
        assert 0 <= step["score"] <= 100
        assert all(0 <= c["score"] <= 100 and c["reason"].strip()
                   for c in step["criteria"].values())
    calls = [c for c in sproject.calls() if c["task"].startswith("review_judge:")]
    assert calls and all(c["provider"] == "local" and c["tokens_out"] > 0
                         for c in calls if c["cache"] == "miss")
    n = len(sproject.calls())
    sproject.cli("review-run", str(run), timeout=600, env=LOCAL)
    assert [c for c in sproject.calls()[n:] if c["cache"] == "miss"] == []
