"""run-pack-loop against the reference assistant: analyst verdict, repair, coder, rerun;
stops on a user decision, on max_iterations; resumes after SIGKILL mid-iteration."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter

import pytest
from support.loop import RULES, coder_config, loop_args
from support.scenario import one_line_error, sproject  # noqa: F401

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

LOOP = "loop-warehouse_basics"
ITERATION_FILES = {"analyst_verdict.json", "analyst_verdict.md", "repair_iteration_plan.json",
                   "repair_prompt.md", "repair_checklist.md", "repair_coder.command.txt",
                   "repair_coder.stdout.txt", "repair_coder.stderr.txt",
                   "repair_coder_result.json"}


def _json(path):
    return json.loads(path.read_text())


def _files(path):
    return {p.name for p in path.iterdir() if p.is_file()}


def test_first_iteration_fails_the_coder_patches_the_second_passes(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(direct_answer_first=False, show_route_ids=True)
    coder = coder_config(sproject)
    proc = sproject.cli(*loop_args(a.url, "--coder-config", coder))
    assert proc.returncode == 0, proc.out
    loop = sproject.runs / LOOP
    state = _json(loop / "loop_state.json")
    assert state["status"] == "accepted" and state["terminal"] is True
    assert [e["iteration"] for e in state["iterations"]] == [1, 2]
    assert [e["step"] for e in state["iterations"]] == ["coder_done", "verdict"]

    first = loop / "iterations" / "1"
    assert ITERATION_FILES <= _files(first)
    v1 = _json(first / "analyst_verdict.json")
    assert v1["verdict"] == "needs_repair" and not v1["accepted"] and v1["score"] < 80
    assert v1["requires_user_decision"] is False
    assert {t["code"] for t in v1["repair_targets"]} == {"missing_direct_answer", "route_ids"}
    assert set(v1["components"]) == {"business", "truth", "status", "judge"}
    assert v1["components"]["business"]["value"] == 0.0
    assert v1["components"]["truth"]["value"] == 1.0  # the facts were right all along
    assert _json(first / "pack_run" / "pack_state.json")["final_status"] == "partial"
    plan = _json(first / "repair_iteration_plan.json")
    assert plan["suggested_changes"] == [{"file": RULES, "set": {
        "direct_answer_first": True, "show_route_ids": False}}]
    prompt = (first / "repair_prompt.md").read_text()
    assert "direct_answer_first" in prompt and "Let me check the warehouse" in prompt
    assert "- [ ] RT-01 P0 `missing_direct_answer`" in (first / "repair_checklist.md").read_text()
    result = _json(first / "repair_coder_result.json")
    assert result["status"] == "patched" and result["exit_code"] == 0
    assert result["changed_files"] == [RULES] and result["command"][-1].endswith(
        "repair_prompt.md")
    assert "test coder: prompt repair_prompt.md" in (first / "repair_coder.stdout.txt").read_text()
    assert sproject.read(RULES)["direct_answer_first"] is True

    second = loop / "iterations" / "2"
    v2 = _json(second / "analyst_verdict.json")
    assert v2["verdict"] == "accepted" and v2["score"] >= 80 and v2["unresolved"]["p0"] == 0
    assert not (second / "repair_prompt.md").exists()  # accepted: nothing to repair
    pack_state = _json(second / "pack_run" / "pack_state.json")
    assert pack_state["final_status"] == "accepted" and pack_state["acceptance_gate_passed"]
    assert "| 1 | coder_done | partial |" in (loop / "loop_summary.md").read_text()

    # an accepted loop run again does nothing: no question asked, nothing rewritten
    asked = len(a.requests())
    again = sproject.cli(*loop_args(a.url, "--coder-config", coder))
    assert again.returncode == 0 and "already accepted" in again.out
    assert len(a.requests()) == asked


def test_loop_stops_when_the_analyst_needs_a_user_decision(sproject):  # noqa: F811
    a = sproject.assistant()
    chain = sproject.read("workspace/scenarios/low_stock_chain.json")
    chain["steps"][1]["expect"]["facts"][0]["equals"] = "Packwell Ltd"  # the data says otherwise
    sproject.write("workspace/scenarios/decide.json", chain)
    sproject.write("workspace/scenarios/packs/decide.json",
                   {"pack_id": "decide", "scenarios": [{"path": "../decide.json"}]})
    coder = coder_config(sproject)
    args = loop_args(a.url, "--coder-config", coder, pack="workspace/scenarios/packs/decide.json")
    proc = sproject.cli(*args)
    assert proc.returncode == 1, proc.out
    loop = sproject.runs / "loop-decide"
    state = _json(loop / "loop_state.json")
    assert state["status"] == "requires_user_decision" and len(state["iterations"]) == 1
    assert "fact_mismatch" in state["stop_reason"]
    v = _json(loop / "iterations" / "1" / "analyst_verdict.json")
    assert v["requires_user_decision"] is True and v["verdict"] == "requires_user_decision"
    assert v["user_decisions"][0]["steps"] == ["low_stock_chain/step_02_supplier"]
    assert "business call" in v["user_decision_reason"]
    # no repair was prepared and no coder ran: the next step is the user's
    assert not (loop / "iterations" / "1" / "repair_prompt.md").exists()
    assert not (loop / "iterations" / "1" / "repair_coder_result.json").exists()

    asked = len(a.requests())
    again = sproject.cli(*args)
    assert again.returncode == 1 and "still waiting for a user decision" in again.out
    assert len(a.requests()) == asked
    # the user decides (the pack was wrong): the loop goes on with a new iteration
    chain["steps"][1]["expect"]["facts"][0]["equals"] = "Nordpack GmbH"
    sproject.write("workspace/scenarios/decide.json", chain)
    done = sproject.cli(*args)
    assert done.returncode == 0, done.out
    state = _json(loop / "loop_state.json")
    assert state["status"] == "accepted" and len(state["iterations"]) == 2
    assert state["iterations"][0]["coder_status"] == "user_decision"


def test_max_iterations_then_more_iterations_go_on(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(state_data_date=False)
    noop = coder_config(sproject, "--noop", name="noop.json")
    proc = sproject.cli(*loop_args(a.url, "--coder-config", noop, "--max-iterations", "2"))
    assert proc.returncode == 1, proc.out
    loop = sproject.runs / LOOP
    state = _json(loop / "loop_state.json")
    assert state["status"] == "max_iterations" and len(state["iterations"]) == 2
    assert state["iterations"][0]["coder_status"] == "no_change"
    assert _json(loop / "iterations/1/repair_coder_result.json")["status"] == "no_change"
    # the last iteration's repair is prepared for whoever goes on, but no coder ran for it
    assert (loop / "iterations/2/repair_prompt.md").exists()
    assert not (loop / "iterations/2/repair_coder_result.json").exists()
    assert len(a.requests()) == 18  # two pack runs of 9 questions

    again = sproject.cli(*loop_args(a.url, "--coder-config", noop, "--max-iterations", "2"))
    assert again.returncode == 1 and "raise --max-iterations" in again.out
    assert len(a.requests()) == 18

    coder = coder_config(sproject)
    more = sproject.cli(*loop_args(a.url, "--coder-config", coder, "--max-iterations", "3"))
    assert more.returncode == 0, more.out
    state = _json(loop / "loop_state.json")
    assert state["status"] == "accepted" and len(state["iterations"]) == 3
    assert _json(loop / "iterations/2/repair_coder_result.json")["status"] == "patched"
    assert len(a.requests()) == 27  # iterations 1 and 2 were not captured again


def test_loop_killed_in_the_coder_resumes_without_redoing_finished_steps(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(direct_answer_first=False)
    marker = sproject.root / "killed.marker"
    coder = coder_config(sproject, "--kill-parent-once", str(marker))
    proc = sproject.cli(*loop_args(a.url, "--coder-config", coder))
    assert proc.returncode == -signal.SIGKILL, proc.out
    loop = sproject.runs / LOOP
    state = _json(loop / "loop_state.json")
    assert state["status"] == "running" and state["iteration"] == 1
    assert state["step"] == "repair_prepared"  # the coder never reported
    assert not (loop / "iterations/1/repair_coder_result.json").exists()
    assert sproject.read(RULES)["direct_answer_first"] is True  # but it did patch
    first_run = {p: p.stat().st_mtime_ns for p in (loop / "iterations/1/pack_run").rglob("*")
                 if p.is_file()}
    assert len(a.requests()) == 9

    proc = sproject.cli(*loop_args(a.url, "--coder-config", coder))
    assert proc.returncode == 0, proc.out
    state = _json(loop / "loop_state.json")
    assert state["status"] == "accepted" and len(state["iterations"]) == 2
    result = _json(loop / "iterations/1/repair_coder_result.json")
    # judged against the files as they were before the first (killed) attempt
    assert result["status"] == "patched" and result["attempt"] == 2
    assert result["changed_files"] == [RULES]
    assert len(a.requests()) == 18  # iteration 1 was not captured again
    assert {p: p.stat().st_mtime_ns for p in first_run} == first_run


def test_loop_killed_in_the_capture_resumes_the_capture(sproject):  # noqa: F811
    a = sproject.assistant(delay_ms=300)
    sproject.rules(direct_answer_first=False)
    coder = coder_config(sproject)
    proc = subprocess.Popen(sproject.cli_cmd(*loop_args(a.url, "--coder-config", coder)),
                            cwd=sproject.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    states = sproject.runs / LOOP / "iterations" / "1" / "pack_run"
    deadline = time.monotonic() + 120
    while len(list(states.rglob("step_state.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = _json(sproject.runs / LOOP / "loop_state.json")
    assert state["step"] == "started" and state["iteration"] == 1
    done = {p.parent.name for p in states.rglob("step_state.json")}
    assert len(done) >= 2

    proc = sproject.cli(*loop_args(a.url, "--coder-config", coder))
    assert proc.returncode == 0, proc.out
    assert _json(sproject.runs / LOOP / "loop_state.json")["status"] == "accepted"
    per_question = Counter(r["message"] for r in a.requests())
    first_two = [json.loads((p / "turn.json").read_text())["question"]
                 for p in sorted(states.glob("scenarios/low_stock_chain/steps/*"))][:2]
    # the steps finished before the kill were asked once in iteration 1 and once in 2
    assert len(first_two) == 2
    assert all(per_question[q] == 2 for q in first_two), per_question


def test_bad_loop_input_is_one_line(sproject):  # noqa: F811
    sproject.write("workspace/scenarios/coders/bad.json", {"command": ["x", "{prompt}"]})
    one_line_error(sproject.cli(*loop_args("http://127.0.0.1:9", "--coder-config",
                                           "workspace/scenarios/coders/bad.json")),
                   "bad.json", "$.command", "unknown token {prompt}")
    sproject.write("workspace/scenarios/coders/bad.json", {"command": []})
    one_line_error(sproject.cli(*loop_args("http://127.0.0.1:9", "--coder-config",
                                           "workspace/scenarios/coders/bad.json")),
                   "bad.json", "$.command")
    one_line_error(sproject.cli(*loop_args("http://127.0.0.1:9", "--target-score", "120")),
                   "--target-score")
    one_line_error(sproject.cli(*loop_args("http://127.0.0.1:9", "--no-review")),
                   "--no-review")
    one_line_error(sproject.cli(*loop_args("http://127.0.0.1:9", "--coder-config", "nope.json")),
                   "nope.json", "not found")


def test_a_gate_no_repair_target_can_meet_needs_a_user_decision(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.write("workspace/scenarios/packs/strict.json", {
        "pack_id": "strict", "scenarios": [{"path": "../supplier_overview.json"}],
        "acceptance_gate": {"min_judge_score": 100}})
    coder = coder_config(sproject)
    proc = sproject.cli(*loop_args(a.url, "--coder-config", coder,
                                   pack="workspace/scenarios/packs/strict.json"))
    assert proc.returncode == 1, proc.out
    state = _json(sproject.runs / "loop-strict" / "loop_state.json")
    assert state["status"] == "requires_user_decision" and len(state["iterations"]) == 1
    v = _json(sproject.runs / "loop-strict" / "iterations/1/analyst_verdict.json")
    assert v["user_decisions"][0]["code"] == "gate_without_repair_target"
    assert "pack_min_judge_score" in v["user_decision_reason"]
    assert not (sproject.runs / "loop-strict" / "iterations/1/repair_coder_result.json").exists()
