"""Capture against the reference assistant on 127.0.0.1: a case, a 3-step scenario with
placeholders, a pack of 3 scenarios; resume after a dead assistant or a killed runner."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest
from support.scenario import PACK, free_port, snapshot, sproject, step_dir  # noqa: F401

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

STEP_FILES = {"output.md", "debug.json", "turn.json", "session.json", "assistant_response.json",
              "step_state.json"}
SCENARIO_FILES = {"scenario_brief.md", "scenario_manifest.json", "scenario_state.json",
                  "scenario_summary.md", "scenario_output.md", "final_status.md"}
PACK_FILES = {"pack_manifest.json", "pack_state.json", "pack_summary.md", "final_status.md"}
REVIEW_FILES = {f"{r}_review.{x}" for r in ("truth", "business", "judge") for x in ("json", "md")}
SCENARIOS = {"low_stock_chain": ["step_01_inventory", "step_02_supplier", "step_03_reorder_cost"],
             "item_followup": ["step_01_stock", "step_02_movements", "step_03_value"],
             "supplier_overview": ["step_01_suppliers", "step_02_item", "step_03_depot"]}


def _files(path):
    return {p.name for p in path.iterdir() if p.is_file()}


def test_run_case_from_a_case_file_and_from_a_question(sproject):  # noqa: F811
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = sproject.cli("run-case", "--case", "workspace/scenarios/cases/tape_stock.json",
                        "--base-url", url, "--start-assistant")
    assert proc.returncode == 0, proc.out
    assert "starting the reference assistant" in proc.out
    run = sproject.runs / "case-tape_stock"
    assert SCENARIO_FILES | REVIEW_FILES <= _files(run)
    step = step_dir(run, None, "step_01")
    assert _files(step) == STEP_FILES
    state = json.loads((step / "step_state.json").read_text())
    assert state["status"] == "accepted" and state["finished"] is True
    final = json.loads((run / "scenario_state.json").read_text())
    assert final["final_status"] == "accepted" and final["acceptance_gate_passed"] is True
    assert json.loads((run / "truth_review.json").read_text())["summary"]["overall_status"] \
        == "pass"
    # the assistant it started for the run is gone again
    try:
        httpx.get(url + "/api/health", timeout=2, trust_env=False)
        raise AssertionError("the started assistant is still running")
    except httpx.HTTPError:
        pass

    a = sproject.assistant()
    gap = sproject.cli("run-case", "--question", "What will demand be next quarter?",
                       "--base-url", a.url)
    assert gap.returncode == 1, gap.out
    assert "final status: needs_exact_capability" in gap.out
    run = next(p for p in sproject.runs.iterdir() if p.name.startswith("case-What-will"))
    state = json.loads((step_dir(run, None, "step_01") / "step_state.json").read_text())
    assert state["status"] == "needs_exact_capability"
    assert "demand forecasting" in state["reasons"][0]


def test_three_step_scenario_with_placeholders_in_one_session(sproject):  # noqa: F811
    a = sproject.assistant()
    args = ("run-scenario", "--scenario", "workspace/scenarios/low_stock_chain.json",
            "--base-url", a.url)
    proc = sproject.cli(*args)
    assert proc.returncode == 0, proc.out
    run = sproject.runs / "scenario-low_stock_chain"
    turns = [json.loads((step_dir(run, None, s) / "turn.json").read_text())
             for s in SCENARIOS["low_stock_chain"]]
    assert turns[1]["question"] == "Who supplies Packing Tape?"
    assert turns[1]["placeholders"] == {"step_01_inventory.entries[0].item": "Packing Tape"}
    rs = json.loads((step_dir(run, None, "step_01_inventory") / "assistant_response.json")
                    .read_text())["semantic_memory"]["active_result_set_id"]
    assert turns[2]["question"] == f"What would it cost to reorder result set {rs}?"
    # one assistant session for the whole scenario
    assert turns[0]["session_id_sent"] is None
    sessions = {json.loads((step_dir(run, None, s) / "step_state.json").read_text())
                ["session_id"] for s in SCENARIOS["low_stock_chain"]}
    assert len(sessions) == 1 and turns[1]["session_id_sent"] in sessions
    session = json.loads((step_dir(run, None, "step_03_reorder_cost") / "session.json")
                         .read_text())
    assert len(session["turns"]) == 3
    assert [r["message"] for r in a.requests()] == [t["question"] for t in turns]

    # rerun: nothing asked, nothing reviewed, no LLM call
    calls = len(sproject.calls())
    before = snapshot(run / "steps")
    again = sproject.cli(*args)
    assert again.returncode == 0, again.out
    assert "asked 0, resumed 3" in again.out and "reviews: 0 ran, 3 up to date" in again.out
    assert len(a.requests()) == 3 and len(sproject.calls()) == calls
    assert snapshot(run / "steps") == before


def test_pack_of_three_scenarios_one_backlog(sproject):  # noqa: F811
    a = sproject.assistant()
    proc = sproject.cli("run-pack", "--pack", PACK, "--base-url", a.url)
    assert proc.returncode == 0, proc.out
    run = sproject.runs / "pack-warehouse_basics"
    assert PACK_FILES | REVIEW_FILES <= _files(run)
    for scenario, steps in SCENARIOS.items():
        sdir = run / "scenarios" / scenario
        assert SCENARIO_FILES <= _files(sdir)
        assert [p.name for p in sorted((sdir / "steps").iterdir())] == steps
        for step in steps:
            assert _files(sdir / "steps" / step) == STEP_FILES
    state = json.loads((run / "pack_state.json").read_text())
    assert state["final_status"] == "accepted" and state["acceptance_gate_passed"] is True
    assert state["counts"] == {"accepted": 9, "partial": 0, "blocked": 0,
                               "needs_exact_capability": 0}
    assert [s["status"] for s in state["scenarios"]] == ["accepted"] * 3
    assert (run / "final_status.md").read_text().startswith("# Final status: accepted")
    judge = [c for c in sproject.calls() if c["task"] == "review_judge:pack-warehouse_basics"]
    assert len(judge) == 9 and all(c["cache"] == "miss" for c in judge)
    score = json.loads((run / "judge_review.json").read_text())["score"]
    assert 0 <= score <= 100

    # reviewing the unchanged run again reruns nothing and calls no LLM
    n = len(sproject.calls())
    review = sproject.cli("review-run", str(run))
    assert review.returncode == 0, review.out
    assert "reviews: 0 ran, 3 up to date" in review.out
    assert len(sproject.calls()) == n

    # a changed fact reruns the truth review only (and the others see the same steps)
    spec = json.loads((sproject.root / "workspace/scenarios/item_followup.json").read_text())
    spec["steps"][2]["expect"]["facts"][0]["equals"] = 999.0
    (sproject.root / "workspace/scenarios/item_followup.json").write_text(json.dumps(spec))
    changed = sproject.cli("run-pack", "--pack", PACK, "--base-url", a.url)
    assert changed.returncode == 1, changed.out
    assert "asked 0, resumed 9" in changed.out and "reviews: 3 ran" in changed.out
    assert len(sproject.calls()) == n + 9 and all(
        c["cache"] == "hit" for c in sproject.calls()[n:])  # same answers: judged from cache
    state = json.loads((run / "pack_state.json").read_text())
    assert state["final_status"] == "partial" and state["reviews"]["truth"] == "fail"
    assert any("item_followup/step_03_value: evidence hardening: entries[0].value is 288.0, "
               "expected 999.0" in r for r in state["reasons"])


def _finished(run) -> dict[str, dict]:
    out = {}
    for path in run.glob("scenarios/*/steps/*/step_state.json"):
        state = json.loads(path.read_text())
        out[f"{state['scenario_id']}/{state['step_id']}"] = state
    return out


def _wait_for(path, proc, what: str) -> None:
    # Waiting for the run to get there is not a timing assertion: allow minutes.
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def test_assistant_killed_mid_pack_then_resumed(sproject):  # noqa: F811
    first = sproject.assistant(run_id="assistant-stage1-first", delay_ms=300)
    cmd = sproject.cli_cmd("run-pack", "--pack", PACK, "--base-url", first.url, "--retries", "1")
    runner = subprocess.Popen(cmd, cwd=sproject.root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    run = sproject.runs / "pack-warehouse_basics"
    _wait_for(step_dir(run, "low_stock_chain", "step_03_reorder_cost") / "step_state.json",
              runner, "the first scenario finish")
    first.kill()
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 1, out
    assert "Traceback" not in out
    states = _finished(run)
    done = {k for k, s in states.items() if s["finished"]}
    blocked = {k for k, s in states.items() if s["status"] == "blocked"}
    assert {f"low_stock_chain/{s}" for s in SCENARIOS["low_stock_chain"]} <= done
    assert blocked and len(done) < 9
    assert all(states[k]["error"]["kind"] in ("connect", "disconnected", "unresolved_placeholder")
               for k in blocked)
    pack_state = json.loads((run / "pack_state.json").read_text())
    assert pack_state["final_status"] == "blocked" and pack_state["complete"] is False
    finished_files = {k: snapshot(run / "scenarios" / k.split("/")[0] / "steps" /
                                  k.split("/")[1]) for k in done}

    second = sproject.assistant(run_id="assistant-stage1-second")
    again = sproject.cli("run-pack", "--pack", PACK, "--base-url", second.url)
    assert again.returncode == 0, again.out
    asked = [r["message"] for r in second.requests()]
    finished_questions = {states[k]["question"] for k in done}
    assert len(asked) == 9 - len(done) and not set(asked) & finished_questions
    assert f"asked {9 - len(done)}, resumed {len(done)}" in again.out
    for k, files in finished_files.items():  # finished steps are untouched
        sid, step = k.split("/")
        assert snapshot(run / "scenarios" / sid / "steps" / step) == files
    assert json.loads((run / "pack_state.json").read_text())["final_status"] == "accepted"


def test_runner_killed_mid_pack_then_resumed(sproject):  # noqa: F811
    a = sproject.assistant(delay_ms=200)
    cmd = sproject.cli_cmd("run-pack", "--pack", PACK, "--base-url", a.url)
    runner = subprocess.Popen(cmd, cwd=sproject.root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    run = sproject.runs / "pack-warehouse_basics"
    _wait_for(step_dir(run, "item_followup", "step_01_stock") / "step_state.json", runner,
              "a step of the second scenario")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    done = {k for k, s in _finished(run).items() if s["finished"]}
    assert len(done) >= 4
    for path in run.rglob("*.json"):  # atomic writes: nothing half-written
        json.loads(path.read_text())
    n = len(a.requests())

    again = sproject.cli("run-pack", "--pack", PACK, "--base-url", a.url)
    assert again.returncode == 0, again.out
    asked = [r["message"] for r in a.requests()[n:]]
    assert len(asked) == 9 - len(done)
    assert not set(asked) & {s["question"] for k, s in _finished(run).items() if k in done}


def test_restart_archives_the_run_and_asks_again(sproject):  # noqa: F811
    a = sproject.assistant()
    args = ("run-scenario", "--scenario", "workspace/scenarios/supplier_overview.json",
            "--base-url", a.url)
    sproject.cli(*args, check=True)
    proc = sproject.cli(*args, "--restart", check=True)
    assert "restart: previous run moved to" in proc.out and "asked 3, resumed 0" in proc.out
    assert len(a.requests()) == 6
    archived = list((sproject.runs / ".archive").iterdir())
    assert len(archived) == 1 and (archived[0] / "scenario_state.json").exists()


def test_an_edited_question_recaptures_the_scenario_in_a_fresh_session(sproject):  # noqa: F811
    a = sproject.assistant()
    path = sproject.root / "workspace/scenarios/item_followup.json"
    args = ("run-scenario", "--scenario", str(path), "--base-url", a.url)
    sproject.cli(*args, check=True)
    spec = json.loads(path.read_text())
    spec["steps"][2]["question"] = "What is the stock value of {{step_01_stock.entries[0].sku}}?"
    path.write_text(json.dumps(spec))
    proc = sproject.cli(*args, check=True)
    assert "questions changed since the last capture" in proc.out
    assert "asked 3, resumed 0" in proc.out
    run = sproject.runs / "scenario-item_followup"
    assert list((run / ".stale").iterdir())
    turn = json.loads((step_dir(run, None, "step_03_value") / "turn.json").read_text())
    assert turn["question"] == "What is the stock value of SAF-GLOV?"


def test_capture_only_then_review_later(sproject):  # noqa: F811
    a = sproject.assistant()
    proc = sproject.cli("run-scenario", "--scenario",
                        "workspace/scenarios/supplier_overview.json", "--base-url", a.url,
                        "--no-review", check=True)
    assert "reviews:" not in proc.out
    run = sproject.runs / "scenario-supplier_overview"
    assert not (run / "truth_review.json").exists()
    state = json.loads((run / "scenario_state.json").read_text())
    assert state["reviewed"] is False and state["acceptance_gate_passed"] is False
    assert "Reviews have not run yet" in (run / "final_status.md").read_text()

    review = sproject.cli("review-run", str(run), "--no-judge", check=True)
    assert "reviews: 2 ran, 0 up to date" in review.out and "judge score skipped" in review.out
    assert not (run / "judge_review.json").exists()
    state = json.loads((run / "scenario_state.json").read_text())
    assert state["reviewed"] is True and state["acceptance_gate_passed"] is True
    assert not [c for c in sproject.calls() if c["task"].startswith("review_judge")]
