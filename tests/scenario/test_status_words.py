"""The scenario and stage loops say what they mean: one status line with the gate's verdict,
the console's steps are final_status.md's, and a repair from a GUI review that an accepted
pack loop made stale is refused with what to run (not run into stop_for_user_decision)."""

from __future__ import annotations

import json
import re

import pytest
from support.loop import MANIFEST, stage_dir, stage_manifest, summary
from support.scenario import sproject  # noqa: F401

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

QUESTIONS = ["Which items are below their reorder level?", "Who supplies those?",
             "How many Safety Gloves do we have on hand?"]


def _stage(project, step, *extra):
    return project.cli("stage", step, "--manifest", MANIFEST, *extra)


def _final_steps(run_dir):
    text = (run_dir / "final_status.md").read_text()
    return re.findall(r"^- (\S+/\S+): (\w+)$", text, flags=re.M), text


def test_one_status_line_with_the_gate_verdict_and_the_steps_of_final_status(
        sproject):  # noqa: F811
    a = sproject.assistant()
    proc = sproject.cli("run-case", "--question", "How many Packing Tape rolls are on hand?",
                        "--base-url", a.url, "--no-judge")
    assert proc.returncode == 0, proc.out
    assert ("final status: accepted, gate not passed: truth not checked "
            "(no facts in this case)") in proc.out.splitlines(), proc.out
    run = next(p for p in sproject.runs.iterdir() if p.name.startswith("case-How-many"))
    assert proc.stdout.splitlines()[0] == (  # not "case case: run ..."
        f"case: run {run.name} -> workspace/artifacts/domain_runs/{run.name}")
    steps, text = _final_steps(run)
    assert steps == [("case/step_01", "accepted")], text
    assert "Verdict: accepted, gate not passed: truth not checked (no facts in this case)." \
        in text
    state = json.loads((run / "scenario_state.json").read_text())
    assert state["final_status"] == "accepted" and state["acceptance_gate_passed"] is False

    # a case with facts that hold: the same line says the gate passed
    ok = sproject.cli("run-case", "--case", "workspace/scenarios/cases/tape_stock.json",
                      "--base-url", a.url, "--no-judge")
    assert ok.returncode == 0, ok.out
    assert "final status: accepted, gate passed" in ok.out.splitlines(), ok.out
    assert ok.stdout.startswith("case tape_stock: run case-tape_stock -> ")


def test_console_lists_each_step_with_its_final_status(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(direct_answer_first=False)  # P0 findings: the steps become partial
    proc = sproject.cli("run-scenario", "--scenario", "workspace/scenarios/low_stock_chain.json",
                        "--base-url", a.url, "--no-judge")
    assert proc.returncode == 1, proc.out
    run = sproject.runs / "scenario-low_stock_chain"
    steps, text = _final_steps(run)
    assert len(steps) == 3 and {s for _, s in steps} == {"partial"}, text
    for step, st in steps:
        assert f"  {step}: {st}" in proc.out.splitlines(), proc.out
    first = next(line for line in proc.out.splitlines() if line.startswith("final status: "))
    assert first.startswith("final status: partial, gate not passed: business fail"), first


def test_run_repair_from_a_gui_review_older_than_the_accepted_loop_is_stale(
        sproject):  # noqa: F811
    a = sproject.assistant()
    stage_manifest(sproject, a.url)
    sproject.rules(direct_answer_first=False)
    gui = sproject.assistant(run_id="assistant-stage1-old")
    session = None
    for q in QUESTIONS:
        session = gui.ask(q, session).json()["session_id"]
    gui.stop()
    assert _stage(sproject, "ingest-gui-run", "--run-id", "assistant-stage1-old"
                  ).returncode == 0
    assert _stage(sproject, "prepare-repair").returncode == 0
    # the assistant is fixed another way and the stage loop accepts it after the review
    sproject.rules(direct_answer_first=True)
    run = _stage(sproject, "run")
    assert run.returncode == 0, run.out
    assert summary(sproject)["loop_accepted_gate"] is True

    it1 = stage_dir(sproject) / "repair_iterations" / "1"
    for extra in (("--dry-run",), ()):
        stale = _stage(sproject, "run-repair", *extra)
        assert stale.returncode == 2, stale.out
        lines = [ln for ln in stale.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in stale.stderr, stale.stderr
        assert "assistant-stage1-old" in lines[0] and "the review is stale" in lines[0]
        assert "ingest-gui-run --manifest" in lines[0] and "prepare-repair" in lines[0]
        assert "stop_for_user_decision" not in stale.out + stale.stderr
    # no coder ran, nothing was recorded for it
    assert not (it1 / "repair_coder_result.json").exists()
    assert not (it1 / "repair_coder.command.txt").exists()
    assert summary(sproject)["next_action"] != "stop_for_user_decision"


def test_pack_loop_console_gives_the_last_pack_runs_final_status(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.rules(direct_answer_first=False)  # the gate fails: it stops awaiting a coder
    proc = sproject.cli("run-pack-loop", "--pack", "workspace/scenarios/packs/"
                        "warehouse_basics.json", "--base-url", a.url, "--no-judge")
    assert proc.returncode == 1, proc.out
    assert "awaiting_coder" in proc.out, proc.out
    run = sproject.runs / "loop-warehouse_basics" / "iterations" / "1" / "pack_run"
    steps, text = _final_steps(run)
    assert len(steps) == 9, text
    lines = proc.out.splitlines()
    for step, st in steps:
        assert f"    {step}: {st}" in lines, proc.out
    verdict = re.search(r"^Verdict: (.*)\.$", text, flags=re.M).group(1)
    assert f"  last pack run: {verdict}" in lines, proc.out
    assert verdict.startswith("partial, gate not passed: business fail"), verdict
