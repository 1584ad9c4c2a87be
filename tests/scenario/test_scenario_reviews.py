"""Reviews, business-first: findings when the assistant answers badly, waivers, the judge
through the call log, and the GUI run review bridge on a saved run."""

from __future__ import annotations

import json

import pytest
from support.scenario import one_line_error, sproject  # noqa: F401

from pipeline.scenario.business_review import review_answer

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

BAD_RULES = {"direct_answer_first": False, "state_data_date": False, "show_route_ids": True,
             "include_raw_json": True, "layered_answer": False, "max_list_items": 50}


def _codes(findings, severity=None):
    return {f["code"] for f in findings if severity is None or f["severity"] == severity}


def test_business_checks_on_visible_text():
    clean = ("3 items are below their reorder level: Packing Tape, Safety Gloves and Forklift "
             "Battery.\n\nDetails:\n- Packing Tape: 130 on hand\n\nData as of 2024-06-30.")
    entries = [{"item": "Packing Tape", "on_hand": 130}, {"item": "Safety Gloves"},
               {"item": "Forklift Battery"}]
    assert review_answer("q", clean, entries) == []
    assert _codes(review_answer("q", "Sure! Here is what I found.\n" + clean, entries),
                  "P0") == {"missing_direct_answer"}
    assert _codes(review_answer("q", "The warehouse is busy.\nData as of 2024-06-30.",
                                entries), "P0") == {"missing_direct_answer"}
    garbage = clean + "\nTraceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'a'"
    assert "technical_garbage" in _codes(review_answer("q", garbage, entries), "P0")
    assert "technical_garbage" in _codes(review_answer("q", clean + " {{step_01.x}}", entries))
    noisy = clean + '\n[{"item": "Packing Tape"}]\nroute_id: route:inventory.low_stock:v1'
    assert _codes(review_answer("q", noisy, entries), "P1") == {"raw_json", "route_ids"}
    undated = clean.replace("Data as of 2024-06-30.", "")
    assert _codes(review_answer("q", undated, entries)) == {"missing_data_date"}
    broad = clean + "\n" + "\n".join(f"- row {i}" for i in range(12))
    assert "over_broad" in _codes(review_answer("q", broad, entries), "P1")
    flat = " ".join(clean.split())
    assert "not_layered" in _codes(review_answer("q", flat, entries), "P1")
    assert _codes(review_answer("q", "I can't answer that yet: no forecasts.", [],
                                "unsupported")) == set()
    assert _codes(review_answer("q", "Forecasts are fun.", [], "unsupported")) == {
        "missing_direct_answer"}
    assert _codes(review_answer("q", "   ", [])) == {"empty_answer"}


def test_bad_answers_become_findings_partial_steps_and_a_failed_gate(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(**BAD_RULES)
    proc = sproject.cli("run-scenario", "--scenario", "workspace/scenarios/low_stock_chain.json",
                        "--base-url", a.url)
    assert proc.returncode == 1, proc.out
    run = sproject.runs / "scenario-low_stock_chain"
    review = json.loads((run / "business_review.json").read_text())
    assert review["overall_business_status"] == "fail"
    assert _codes(review["findings"], "P0") == {"missing_direct_answer"}
    assert {"missing_data_date", "route_ids", "raw_json", "not_layered"} <= _codes(
        review["findings"], "P1")
    summary = review["summary"]
    assert summary["unresolved_p0"] == 3 and summary["business_answer_failures"] == 3
    assert not summary["flags"]["direct_answer"] and not summary["flags"]["temporal_honesty"]
    rules = {f["code"]: f["rule"] for f in review["findings"]}
    assert rules["missing_direct_answer"] == "direct_answer_first"
    assert rules["route_ids"] == "show_route_ids"
    md = (run / "business_review.md").read_text()
    assert md.index("**P0**") < md.index("**P1**")  # worst first
    # the facts are still right: truth passes, the presentation does not
    assert json.loads((run / "truth_review.json").read_text())["summary"][
        "overall_status"] == "pass"
    state = json.loads((run / "scenario_state.json").read_text())
    assert state["final_status"] == "partial" and state["acceptance_gate_passed"] is False
    assert all(s["status"] == "partial" and s["capture_status"] == "accepted"
               for s in state["steps"])
    assert any("presentation hardening: P0 missing_direct_answer" in r
               for r in state["steps"][0]["reasons"])


def test_waived_findings_are_resolved(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(state_data_date=False)
    sproject.write("workspace/scenarios/packs/waived.json", {
        "pack_id": "waived", "scenarios": [{"path": "../supplier_overview.json"}],
        "business_waivers": [
            {"scenario_id": "supplier_overview", "step_id": step, "code": "missing_data_date",
             "reason": "supplier master data has no snapshot date"}
            for step in ("step_01_suppliers", "step_02_item", "step_03_depot")]})
    proc = sproject.cli("run-pack", "--pack", "workspace/scenarios/packs/waived.json",
                        "--base-url", a.url)
    assert proc.returncode == 0, proc.out
    review = json.loads((sproject.runs / "pack-waived" / "business_review.json").read_text())
    assert review["overall_business_status"] == "pass"
    assert review["summary"]["p1"] == 3 and review["summary"]["unresolved_p1"] == 0
    assert all(f["resolved"] and f["waiver_reason"] for f in review["findings"])


def test_judge_scores_through_the_llm_client_once(sproject):  # noqa: F811
    a = sproject.assistant()
    args = ("run-case", "--case", "workspace/scenarios/cases/tape_stock.json", "--base-url",
            a.url)
    sproject.cli(*args, check=True)
    judge = json.loads((sproject.runs / "case-tape_stock" / "judge_review.json").read_text())
    step = judge["steps"][0]
    assert set(step["criteria"]) == {"direct_answer", "grounded_facts", "temporal_honesty",
                                     "focus", "layering"}
    assert all(0 <= c["score"] <= 100 and c["reason"] for c in step["criteria"].values())
    assert judge["score"] == step["score"]
    calls = [c for c in sproject.calls() if c["task"] == "review_judge:case-tape_stock"]
    assert len(calls) == 1 and calls[0]["scene"] == "tape_stock/step_01"
    # a new rubric is a new judge task input: it reruns, and only the judge does
    spec = json.loads((sproject.root / "score_specs/score_spec_answer.json").read_text())
    spec["criteria"][0]["weight"] = 0.5
    (sproject.root / "score_specs/score_spec_answer.json").write_text(json.dumps(spec))
    proc = sproject.cli(*args, check=True)
    assert "reviews: 1 ran, 2 up to date" in proc.out
    n = len(a.requests())
    sproject.write("score_specs/score_spec_answer.json", '{"name": "x", "criteria": []}')
    one_line_error(sproject.cli(*args), "score_spec_answer.json", "$.criteria")
    assert len(a.requests()) == n  # refused before asking anything


def _gui_run(sproject, run_id):  # noqa: F811
    """A saved GUI-style run: two sessions, one clean, one with bad rules and a gap."""
    a = sproject.assistant(run_id=run_id)
    first = a.ask("Which items are below their reorder level?").json()
    a.ask("Who supplies those?", first["session_id"])
    a.ask("What would it cost to reorder them?", first["session_id"])
    sproject.rules(direct_answer_first=False, show_route_ids=True)
    second = a.ask("How many Safety Gloves do we have on hand?").json()
    a.ask("What will demand be next quarter?", second["session_id"])
    a.ask("How many Safety Gloves do we have on hand?", second["session_id"])
    a.stop()


def test_review_bridge_turns_a_saved_run_into_review_files(sproject):  # noqa: F811
    _gui_run(sproject, "assistant-stage1-gui01")
    proc = sproject.cli("review", "assistant-stage1-gui01", "--print-summary")
    assert proc.returncode == 0, proc.out
    out = sproject.runs / "gui_run_reviews" / "assistant-stage1-gui01"
    assert {p.name for p in out.iterdir() if p.is_file()} >= {
        "run_review.json", "run_review.md", "conversation_pairs.json",
        "question_quality_review.json", "repair_targets.json"}
    assert "next action: continue_repair_from_gui_review_p0" in proc.stdout
    assert "6 answers in 2 session(s)" in proc.stdout

    pairs = json.loads((out / "conversation_pairs.json").read_text())["pairs"]
    assert [p["question"] for p in pairs][:2] == ["Which items are below their reorder level?",
                                                  "Who supplies those?"]
    review = json.loads((out / "run_review.json").read_text())
    assert review["summary"]["overall_business_status"] == "fail"
    assert [p["business_status"] for p in review["pairs"]][:3] == ["pass"] * 3
    codes = {(f["pair"], f["code"]) for f in review["findings"]}
    assert {(4, "missing_direct_answer"), (4, "route_ids"), (5, "capability_gap")} <= codes

    quality = json.loads((out / "question_quality_review.json").read_text())
    m = quality["metrics"]
    assert m["duplicates"]["value"] == 1 and not m["duplicates"]["passed"]
    assert m["follow_up_density"]["count"] == 2
    assert m["domain_diversity"]["value"] >= 3 and m["weak_business_anchors"]["passed"]
    assert quality["overall"] == "needs_work"

    targets = json.loads((out / "repair_targets.json").read_text())["targets"]
    assert targets[0]["priority"] == "P0" and targets[0]["code"] == "missing_direct_answer"
    assert targets[0]["suggested_change"] == {"direct_answer_first": True}
    assert targets[0]["candidate_files"] == ["workspace/scenarios/assistant_rules.json"]
    route = next(t for t in targets if t["code"] == "route_ids")
    assert route["suggested_change"] == {"show_route_ids": False}

    # reviewing the same saved run again is a no-op; a new answer makes it stale
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = sproject.cli("review", "gui01", check=True)  # the prefix is optional
    assert "continue_repair_from_gui_review_p0" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_review_bridge_on_a_clean_run_says_close_the_stage(sproject):  # noqa: F811
    a = sproject.assistant(run_id="assistant-stage1-clean")
    first = a.ask("Which items are below their reorder level?").json()
    a.ask("Who supplies those?", first["session_id"])
    a.ask("How much stock does the South Depot hold?", first["session_id"])
    a.stop()
    proc = sproject.cli("review", "assistant-stage1-clean", "--print-summary", check=True)
    assert "business: pass" in proc.stdout
    assert "next action: manual_gui_confirmation_or_stage_close" in proc.stdout
    # the report alone is not enough to tell run ids apart: a longer id is another run
    one_line_error(sproject.cli("review", "assistant-stage1-cle"), "no saved run")
