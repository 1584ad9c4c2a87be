"""Bad input and faults: one-line errors naming the file and JSON path; a dead, slow,
failing or contract-breaking assistant gives a clear step status; the pack goes on."""

from __future__ import annotations

import fcntl
import json

import pytest
from support.scenario import PACK, free_port, one_line_error, sproject, step_dir  # noqa: F401
from support.scenario_fakes import FakeAssistant

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds


def _state(run, scenario, step) -> dict:
    return json.loads((step_dir(run, scenario, step) / "step_state.json").read_text())


def test_failing_assistant_gives_each_step_a_clear_status(sproject):  # noqa: F811
    sproject.write("workspace/scenarios/packs/faults.json", {
        "pack_id": "faults",
        "scenarios": [
            {"scenario_id": "faults", "steps": [
                {"step_id": "boom", "question": "BOOM how many?"},
                {"step_id": "html", "question": "HTML how many?"},
                {"step_id": "broken", "question": "BREAK how many?"},
                {"step_id": "slow", "question": "SLOW how many?"},
                {"step_id": "flaky", "question": "FLAKY how many?"}]},
            {"scenario_id": "fine", "steps": [
                {"step_id": "ask", "question": "How many widgets?",
                 "expect": {"facts": [{"path": "entries[0].on_hand", "equals": 42}]}}]},
        ]})
    with FakeAssistant(slow_s=3) as fake:
        proc = sproject.cli("run-pack", "--pack", "workspace/scenarios/packs/faults.json",
                            "--base-url", fake.url, "--timeout", "1", "--retries", "2")
    assert proc.returncode == 1, proc.out
    assert "Traceback" not in proc.out
    run = sproject.runs / "pack-faults"
    boom = _state(run, "faults", "boom")
    assert boom["status"] == "blocked" and boom["error"]["kind"] == "http_5xx"
    assert "HTTP 500" in boom["error"]["message"] and "database is on fire" in \
        boom["error"]["message"]
    assert boom["attempts"] == 3 and fake.count("BOOM") == 3
    html = _state(run, "faults", "html")
    assert html["error"]["kind"] == "not_json" and "<html>" in html["error"]["message"]
    broken = _state(run, "faults", "broken")
    assert broken["error"]["kind"] == "contract" and fake.count("BREAK") == 1
    assert "contract" in broken["error"]["message"]
    slow = _state(run, "faults", "slow")
    assert slow["error"]["kind"] == "timeout" and "timed out after 1s" in \
        slow["error"]["message"]
    flaky = _state(run, "faults", "flaky")
    assert flaky["status"] == "accepted" and flaky["attempts"] == 2
    assert _state(run, "fine", "ask")["status"] == "accepted"
    pack = json.loads((run / "pack_state.json").read_text())
    assert pack["final_status"] == "blocked"
    assert [s["status"] for s in pack["scenarios"]] == ["blocked", "accepted"]
    final = (run / "final_status.md").read_text()
    assert "faults/boom: http_5xx: HTTP 500" in final
    debug = json.loads((step_dir(run, "faults", "boom") / "debug.json").read_text())
    assert len(debug["http"]["attempt_errors"]) == 3


def test_dead_assistant_blocks_steps_and_the_pack_goes_on(sproject):  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}"
    proc = sproject.cli("run-pack", "--pack", PACK, "--base-url", url)
    assert proc.returncode == 1, proc.out
    assert "Traceback" not in proc.out
    run = sproject.runs / "pack-warehouse_basics"
    states = [json.loads(p.read_text()) for p in run.glob("scenarios/*/steps/*/step_state.json")]
    assert len(states) == 9 and {s["status"] for s in states} == {"blocked"}
    kinds = {s["error"]["kind"] for s in states}
    assert kinds <= {"connect", "unresolved_placeholder"} and "connect" in kinds
    first = _state(run, "low_stock_chain", "step_01_inventory")
    assert f"cannot connect to {url}" in first["error"]["message"]
    assert first["attempts"] == 3
    # once the assistant proved unreachable, later steps try once instead of backing off
    later = _state(run, "supplier_overview", "step_01_suppliers")
    assert later["attempts"] == 1
    pack = json.loads((run / "pack_state.json").read_text())
    assert pack["final_status"] == "blocked" and pack["acceptance_gate_passed"] is False
    assert pack["reviews"]["business"] == "incomplete" and pack["reviews"]["truth"] == "fail"


def test_unresolvable_steps_are_blocked_and_the_rest_is_asked(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.write("workspace/scenarios/refs.json", {
        "scenario_id": "refs", "steps": [
            {"step_id": "step_01", "question": "Which items are below their reorder level?"},
            {"step_id": "step_02", "question": "Who supplies {{step_01.entries[7].item}}?"},
            {"step_id": "step_03", "question": "How many {{step_09.entries[0].item}} left?"},
            {"step_id": "step_04", "question": "Which suppliers do we work with?"}]})
    proc = sproject.cli("run-scenario", "--scenario", "workspace/scenarios/refs.json",
                        "--base-url", a.url)
    assert proc.returncode == 1, proc.out
    run = sproject.runs / "scenario-refs"
    two = _state(run, None, "step_02")
    assert two["status"] == "blocked" and two["error"]["kind"] == "unresolved_placeholder"
    assert "{{step_01.entries[7].item}}" in two["error"]["message"]
    assert "step_01.entries has 3 item(s), no index 7" in two["error"]["message"]
    assert "available: step_01.entries[0..2]" in two["error"]["message"]
    three = _state(run, None, "step_03")
    assert three["error"]["kind"] == "unknown_step_reference"
    assert "unknown step 'step_09'" in three["error"]["message"]
    assert _state(run, None, "step_04")["status"] == "accepted"
    assert [r["message"] for r in a.requests()] == [
        "Which items are below their reorder level?", "Which suppliers do we work with?"]
    state = json.loads((run / "scenario_state.json").read_text())
    assert state["final_status"] == "blocked"
    assert (step_dir(run, None, "step_02") / "turn.json").exists()
    assert not (step_dir(run, None, "step_02") / "assistant_response.json").exists()


def _pack(**scenario) -> dict:
    base = {"scenario_id": "s", "steps": [{"step_id": "a", "question": "How many?"}]}
    return {"pack_id": "p", "scenarios": [{**base, **scenario}]}


@pytest.mark.parametrize("setup, needles", [
    (lambda p: p.write("bad.json", '{"pack_id": "p",\n "scenarios": [}'),
     ["bad.json", "invalid JSON at line 2 column"]),
    (lambda p: p.write("bad.json", _pack(steps=[{"step_id": "a", "question": "q"},
                                                {"step_id": "b", "question": ""}])),
     ["bad.json", "$.scenarios[0].steps[1].question", "at least 1 character"]),
    (lambda p: p.write("bad.json", _pack(steps=[{"step_id": "a", "question": "{{a + 1}}"}])),
     ["bad.json", "$.scenarios[0].steps[0].question", "bad placeholder {{a + 1}}"]),
    (lambda p: p.write("bad.json", _pack(steps=[{"step_id": "a", "question": "q",
                                                 "expect": {"facts": [{"path": "x"}]}}])),
     ["$.scenarios[0].steps[0].expect.facts[0]", "exactly one of"]),
    (lambda p: p.write("bad.json", _pack(steps=[{"step_id": "a", "question": "q"},
                                                {"step_id": "a", "question": "r"}])),
     ["$.scenarios[0]", "duplicate step_id 'a'"]),
    (lambda p: p.write("bad.json", {"pack_id": "p", "scenarios": [{"path": "nope.json"}]}),
     ["bad.json", "$.scenarios[0].path", "'nope.json' not found"]),
    (lambda p: (p.write("s.json", {"scenario_id": "s", "steps": "x"}),
                p.write("bad.json", {"pack_id": "p", "scenarios": [{"path": "s.json"}]})),
     ["s.json", "$.steps"]),
    (lambda p: p.write("bad.json", {"pack_id": "p/../x", "scenarios": []}),
     ["bad.json", "$.pack_id"]),
])
def test_malformed_pack_is_one_line_naming_file_and_json_path(sproject, setup,  # noqa: F811
                                                              needles):
    setup(sproject)
    proc = sproject.cli("run-pack", "--pack", "bad.json", "--base-url", "http://127.0.0.1:9")
    one_line_error(proc, *needles)
    assert not sproject.runs.exists()


def test_other_bad_input_is_one_line(sproject):  # noqa: F811
    one_line_error(sproject.cli("run-pack", "--pack", "missing.json"), "missing.json",
                   "not found")
    sproject.write("case.json", {"question": "q", "expect": {"capability": "maybe"}})
    one_line_error(sproject.cli("run-case", "--case", "case.json"), "case.json",
                   "$.expect.capability")
    one_line_error(sproject.cli("run-case", "--question", "  "), "--question is empty")
    one_line_error(sproject.cli("run-scenario", "--scenario",
                                "workspace/scenarios/low_stock_chain.json",
                                "--run-id", "../escape"), "--run-id '../escape'")
    one_line_error(sproject.cli("review-run", "nowhere"), "nowhere", "not found")
    one_line_error(sproject.cli("review", "assistant-stage1-nope"),
                   "no saved run assistant-stage1-nope")
    one_line_error(sproject.cli("review", "bad/id"), "not a run id")


def test_a_run_is_captured_by_one_process_at_a_time(sproject):  # noqa: F811
    lock = sproject.runs / ".locks" / "pack-warehouse_basics.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        proc = sproject.cli("run-pack", "--pack", PACK, "--base-url", "http://127.0.0.1:9")
    one_line_error(proc, "run pack-warehouse_basics is being captured by another process")
    assert not (sproject.runs / "pack-warehouse_basics").exists()
