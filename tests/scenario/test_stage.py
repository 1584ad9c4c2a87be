"""The stage-level AGENT loop: plan, run (pack loop under the stage gate, save), GUI run
ingest, prepare-repair, run-repair (--dry-run), the closing gate until a validation run,
read-only status, summarize; bad manifests are one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support.loop import MANIFEST, RULES, stage_dir, stage_manifest, summary
from support.scenario import REPO, one_line_error, snapshot, sproject  # noqa: F401

from pipeline.scenario import stage_manifest as sm

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

QUESTIONS = ["Which items are below their reorder level?", "Who supplies those?",
             "How many Safety Gloves do we have on hand?"]
TEMPLATES = {"plan", "run", "ingest_gui_run", "prepare_repair", "run_repair_dry_run",
             "run_repair", "status", "summarize"}


def _stage(project, step, *extra):
    return project.cli("stage", step, "--manifest", MANIFEST, *extra)


def _gui_run(project, run_id):
    a = project.assistant(run_id=run_id)
    session = None
    for q in QUESTIONS:
        session = a.ask(q, session).json()["session_id"]
    a.stop()


def test_schema_file_is_generated_from_the_model():
    assert sm.SCHEMA_PATH.read_text() == sm.schema_text()
    example = json.loads((REPO / "workspace/orchestration/stage1_warehouse.json").read_text())
    assert sm.StageManifest.model_validate(example).stage_id == "stage1_warehouse"


def test_stage_loop_from_run_to_a_validated_repair(sproject):  # noqa: F811
    a = sproject.assistant()
    stage_manifest(sproject, a.url)
    sproject.rules(state_data_date=False)
    sd = stage_dir(sproject)

    plan = _stage(sproject, "plan")
    assert plan.returncode == 0, plan.out
    assert "3 scenario(s), 9 step(s)" in plan.out and "next action: run_stage_loop" in plan.out
    assert json.loads((sd / "stage_loop_plan.json").read_text())["stage_gate"][
        "target_score"] == 88

    # run: the pack loop fails the stage gate once (no data date), patches, passes, is saved
    run = _stage(sproject, "run")
    assert run.returncode == 0, run.out
    s = summary(sproject)
    assert s["loop"]["status"] == "accepted" and s["loop"]["iterations"] == 2
    assert s["loop"]["loop_patches"] == [1] and s["loop_accepted_gate"] is True
    assert s["accepted_gate"] is True and s["stage_closing_gate"]["status"] == "passed"
    assert s["next_action"] == "manual_gui_confirmation_or_stage_close"
    assert set(s["next_step_guidance"]["command_templates"]) == TEMPLATES
    assert s["next_step_guidance"]["command_templates"]["ingest_gui_run"].endswith(
        "--run-id assistant-stage1-<id>")
    verdict1 = json.loads((sd / "pack_loop/iterations/1/analyst_verdict.json").read_text())
    assert verdict1["target_score"] == 88 and not verdict1["flags"]["temporal_honesty"]
    assert any(c["name"] == "flag_temporal_honesty" and not c["passed"]
               for c in verdict1["gate"]["conditions"])
    assert s["saved_autorun"]["validated"] is True
    assert (sproject.ws / "llm_normalizer/data/autoruns/stage-stage_test-it2/autorun.json"
            ).exists()
    assert "ready for visual confirmation" in (sd / "stage_loop_handoff.md").read_text()

    # a GUI run that regressed: business-wrong first lines -> repair from P0
    sproject.rules(direct_answer_first=False)
    _gui_run(sproject, "assistant-stage1-gui1")
    ingest = _stage(sproject, "ingest-gui-run", "--run-id", "assistant-stage1-gui1")
    assert ingest.returncode == 0, ingest.out
    review_dir = sd / "gui_run_reviews" / "assistant-stage1-gui1"
    assert {"run_review.json", "run_review.md", "repair_targets.json",
            "conversation_pairs.json", "question_quality_review.json",
            "ingest_record.json"} <= {p.name for p in review_dir.iterdir()}
    s = summary(sproject)
    assert s["next_action"] == "continue_repair_from_gui_review_p0"
    assert s["latest_gui_run"]["run_id"] == "assistant-stage1-gui1"
    assert s["accepted_gate"] is False and s["stage_closing_gate"]["status"] == \
        "blocked_by_gui_review"
    # running the accepted stage loop again changes nothing: the GUI review stays newest
    asked = len(a.requests())
    rerun = _stage(sproject, "run")
    assert rerun.returncode == 1 and "already accepted" in rerun.out, rerun.out
    assert len(a.requests()) == asked
    assert summary(sproject)["next_action"] == "continue_repair_from_gui_review_p0"
    index = sproject.ws / "llm_normalizer/data/autoruns/index.jsonl"
    assert len(index.read_text().splitlines()) == 1  # saved once

    prep = _stage(sproject, "prepare-repair")
    assert prep.returncode == 0, prep.out
    it1 = sd / "repair_iterations" / "1"
    plan = json.loads((it1 / "repair_iteration_plan.json").read_text())
    assert plan["source"] == {"kind": "gui_run", "run_id": "assistant-stage1-gui1",
                              "review": plan["source"]["review"]}
    assert [t["code"] for t in plan["targets"]] == ["missing_direct_answer"]
    assert RULES in plan["targets"][0]["candidate_files"]
    assert (it1 / "repair_prompt.md").exists() and (it1 / "repair_checklist.md").exists()
    handoff = json.loads((sd / "stage_repair_handoff.json").read_text())
    assert handoff["primary_repair_targets"][0]["code"] == "missing_direct_answer"
    assert handoff["sample_failures"][0]["first_line"].startswith("Let me check")
    assert summary(sproject)["next_action"] == "run_repair"

    # --dry-run: the command is written and printed, no code changes
    before = snapshot(sproject.root / "workspace" / "scenarios")
    dry = _stage(sproject, "run-repair", "--dry-run")
    assert dry.returncode == 0, dry.out
    command = (it1 / "repair_coder.command.txt").read_text()
    assert "loop_coder.py" in command and str(it1 / "repair_prompt.md") in command
    assert "loop_coder.py" in dry.out and "nothing executed" in dry.out
    assert snapshot(sproject.root / "workspace" / "scenarios") == before
    assert not (it1 / "repair_coder_result.json").exists()
    assert json.loads((it1 / "repair_execution_summary.json").read_text())["mode"] == "dry_run"
    s = summary(sproject)
    assert s["latest_repair_coder"]["status"] == "dry_run"
    assert s["next_step_guidance"]["recommended_command"] == \
        s["next_step_guidance"]["command_templates"]["run_repair"]

    # the real run patches: the stage is blocked until a validation run
    fix = _stage(sproject, "run-repair")
    assert fix.returncode == 0, fix.out
    result = json.loads((it1 / "repair_coder_result.json").read_text())
    assert result["status"] == "patched" and result["changed_files"] == [RULES]
    execution = json.loads((it1 / "repair_execution_summary.json").read_text())
    assert execution["coder_status"] == "patched"
    assert execution["next_action"] == "rerun_and_ingest_gui_run"
    s = summary(sproject)
    assert s["loop_accepted_gate"] is True and s["accepted_gate"] is False
    assert s["stage_closing_gate"]["status"] == "blocked_pending_repair_validation"
    assert s["stage_closing_gate"]["pending_repair_iteration"] == 1
    again = _stage(sproject, "run-repair")
    one_line_error(again, "already ran its coder (patched)")

    # status is read-only: only the repair handoff it documents may change
    before = snapshot(sd)
    st = _stage(sproject, "status")
    assert st.returncode == 0, st.out
    after = snapshot(sd)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {"stage_repair_handoff.md", "stage_repair_handoff.json"}
    for needle in ("next action: rerun_and_ingest_gui_run",
                   "closing gate: blocked_pending_repair_validation (accepted_gate false, "
                   "loop_accepted_gate true)",
                   "latest GUI run: assistant-stage1-gui1", "latest repair coder: iteration 1: "
                   "patched", "latest repair validation: none"):
        assert needle in st.out, st.out

    # the run the repair came from cannot validate it
    _stage(sproject, "ingest-gui-run", "--run-id", "assistant-stage1-gui1")
    assert summary(sproject)["stage_closing_gate"]["status"] == \
        "blocked_pending_repair_validation"
    # a new run that is still noisy (P1): validation not accepted
    sproject.rules(show_route_ids=True)
    _gui_run(sproject, "assistant-stage1-gui2")
    _stage(sproject, "ingest-gui-run", "--run-id", "assistant-stage1-gui2")
    s = summary(sproject)
    assert s["latest_repair_validation"]["validation_run_id"] == "assistant-stage1-gui2"
    assert s["latest_repair_validation"]["accepted"] is False
    assert s["latest_repair_validation"]["remaining_p1"] > 0
    assert s["accepted_gate"] is False
    assert s["next_action"] == "continue_repair_from_gui_review_p1"
    # a clean run validates the repair and closes the gate
    sproject.rules(show_route_ids=False)
    _gui_run(sproject, "assistant-stage1-gui3")
    done = _stage(sproject, "ingest-gui-run", "--run-id", "assistant-stage1-gui3")
    assert "validation of repair iteration 1: accepted" in done.out, done.out
    s = summary(sproject)
    assert [h["validation_run_id"] for h in s["repair_validation_history"]] == [
        "assistant-stage1-gui2", "assistant-stage1-gui3"]
    assert s["latest_repair_validation"]["accepted"] is True
    assert s["accepted_gate"] is True and s["stage_closing_gate"]["status"] == "passed"
    assert s["next_action"] == "manual_gui_confirmation_or_stage_close"
    # summarize rewrites the same summary from the files
    assert _stage(sproject, "summarize").returncode == 0
    again = summary(sproject)
    assert {k: v for k, v in again.items() if k != "updated_at"} == \
        {k: v for k, v in s.items() if k != "updated_at"}
    alias = sproject.cli("stage", "status", "--manifest", MANIFEST)
    module = subprocess.run(
        [sys.executable, "-m", "pipeline.scenario.stage_cli", "status", "--manifest", MANIFEST],
        cwd=sproject.root, capture_output=True, text=True)
    assert module.returncode == 0 and module.stdout == alias.stdout


def test_repair_coder_failure_no_change_and_retry(sproject):  # noqa: F811
    stage_manifest(sproject, "http://127.0.0.1:9", "--fail")
    sproject.rules(direct_answer_first=False)
    _gui_run(sproject, "assistant-stage1-bad")
    assert _stage(sproject, "ingest-gui-run", "--run-id", "bad").returncode == 0
    assert _stage(sproject, "prepare-repair").returncode == 0
    failed = _stage(sproject, "run-repair")
    assert failed.returncode == 1 and "failed (exit code 3)" in failed.out, failed.out
    it1 = stage_dir(sproject) / "repair_iterations" / "1"
    assert "refusing on purpose" in (it1 / "repair_coder.stderr.txt").read_text()
    assert summary(sproject)["next_action"] == "inspect_repair_coder_failure"
    # fix the coder: the failed attempt is kept aside, the coder runs again
    stage_manifest(sproject, "http://127.0.0.1:9", "--noop")
    nothing = _stage(sproject, "run-repair")
    assert nothing.returncode == 1 and "no_change" in nothing.out
    assert (it1 / "coder_attempts" / "1" / "repair_coder_result.json").exists()
    assert summary(sproject)["next_action"] == "stop_for_user_decision"
    # a new repair iteration starts from the same review
    stage_manifest(sproject, "http://127.0.0.1:9")
    assert _stage(sproject, "prepare-repair").returncode == 0
    assert _stage(sproject, "run-repair").returncode == 0
    assert json.loads((stage_dir(sproject) / "repair_iterations/2/repair_coder_result.json")
                      .read_text())["status"] == "patched"
    s = summary(sproject)
    assert s["stage_closing_gate"]["pending_repair_iteration"] == 2
    assert s["stage_closing_gate"]["status"] == "blocked_pending_repair_validation"


def test_stage_run_stops_on_a_user_decision(sproject):  # noqa: F811
    a = sproject.assistant()
    chain = sproject.read("workspace/scenarios/supplier_overview.json")
    chain["steps"][0]["expect"]["facts"][0]["count"] = 5  # the data has 4 suppliers
    sproject.write("workspace/scenarios/supplier_overview.json", chain)
    stage_manifest(sproject, a.url)
    run = _stage(sproject, "run")
    assert run.returncode == 1, run.out
    s = summary(sproject)
    assert s["loop"]["status"] == "requires_user_decision"
    assert s["loop"]["requires_user_decision"] is True
    assert s["next_action"] == "stop_for_user_decision"
    assert s["accepted_gate"] is False and s["saved_autorun"] is None


def test_bad_manifests_are_one_line(sproject):  # noqa: F811
    stage_manifest(sproject, "http://127.0.0.1:9", gate={"target_score": 120})
    one_line_error(_stage(sproject, "plan"), "stage_test.json", "$.gate.target_score")
    stage_manifest(sproject, "http://127.0.0.1:9", pack="../nope.json")
    one_line_error(_stage(sproject, "status"), "stage_test.json", "$.pack", "not found")
    stage_manifest(sproject, "http://127.0.0.1:9", surprise=1)
    one_line_error(_stage(sproject, "plan"), "stage_test.json", "$.surprise")
    stage_manifest(sproject, "http://127.0.0.1:9", gate={"required_flags": ["pretty"]})
    one_line_error(_stage(sproject, "plan"), "$.gate.required_flags[0]")
    sproject.write(MANIFEST, "{not json")
    one_line_error(_stage(sproject, "plan"), "stage_test.json", "invalid JSON")
    stage_manifest(sproject, "http://127.0.0.1:9", coder=None)
    one_line_error(_stage(sproject, "run-repair", "--dry-run"), "no prepared repair")
    one_line_error(_stage(sproject, "ingest-gui-run", "--run-id", "nothing-here"),
                   "no saved run")
    shutil.rmtree(sproject.root / "workspace" / "orchestration")
    one_line_error(_stage(sproject, "status"), "stage_test.json", "not found")
