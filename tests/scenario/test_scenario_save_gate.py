"""The save gate: a run is persisted to the autoruns store only when every condition holds;
otherwise it says which failed. Unvalidated saves need a reason and are marked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.scenario import PACK, Project, make_project, one_line_error, sproject  # noqa: F401

pytestmark = pytest.mark.slow  # real subprocesses and servers: minutes, not seconds

RUN = "workspace/artifacts/domain_runs/pack-warehouse_basics"
STORE = "workspace/llm_normalizer/data/autoruns"


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    """One accepted, reviewed pack run, copied by each test."""
    project = make_project(tmp_path_factory.mktemp("captured") / "proj")
    try:
        a = project.assistant()
        project.cli("run-pack", "--pack", PACK, "--base-url", a.url, check=True)
    finally:
        project.close()
    return project.root


@pytest.fixture
def proj(tmp_path, captured):
    root = tmp_path / "proj"
    shutil.copytree(captured, root)
    project = Project(root)
    yield project
    project.close()


def _edit(project, rel: str, fn) -> None:
    data = project.read(rel)
    fn(data)
    project.write(rel, data)


def _save(project, *extra: str):
    return project.cli("save", "--spec", PACK, "--validated-run-dir", RUN, *extra)


def test_a_validated_run_is_saved(proj):
    proc = _save(proj)
    assert proc.returncode == 0, proc.out
    saved = proj.root / STORE / "pack-warehouse_basics"
    record = json.loads((saved / "autorun.json").read_text())
    assert record["validated"] is True and record["unvalidated_reason"] is None
    assert record["save_gate"]["passed"] is True
    assert {c["name"] for c in record["save_gate"]["conditions"]} == {
        "run_matches_spec", "final_status_accepted", "acceptance_gate_passed", "truth_pass",
        "business_pass", "zero_unresolved_p0", "zero_business_answer_failures",
        "evidence_unchanged"}
    for name in ("pack_state.json", "truth_review.json", "business_review.json",
                 "judge_review.json", "final_status.md", "conversation.json"):
        assert (saved / name).exists(), name
    steps = json.loads((saved / "conversation.json").read_text())["steps"]
    assert len(steps) == 9 and steps[1]["question"] == "Who supplies Packing Tape?"
    index = (proj.root / STORE / "index.jsonl").read_text().splitlines()
    assert len(index) == 1 and json.loads(index[0])["validated"] is True


def _spec_changed(p):
    path = p.root / "workspace/scenarios/item_followup.json"
    spec = json.loads(path.read_text())
    spec["steps"][0]["expect"]["facts"].append({"path": "entries[0].south", "equals": 40})
    path.write_text(json.dumps(spec))


BREAKS = {
    "run_matches_spec": _spec_changed,
    "final_status_accepted": lambda p: _edit(p, f"{RUN}/pack_state.json",
                                             lambda d: d.update(final_status="partial")),
    "acceptance_gate_passed": lambda p: _edit(p, f"{RUN}/pack_state.json",
                                              lambda d: d.update(acceptance_gate_passed=False)),
    "truth_pass": lambda p: _edit(p, f"{RUN}/truth_review.json",
                                  lambda d: d["summary"].update(overall_status="fail")),
    "business_pass": lambda p: _edit(p, f"{RUN}/business_review.json",
                                     lambda d: d.update(overall_business_status="fail")),
    "zero_unresolved_p0": lambda p: _edit(p, f"{RUN}/business_review.json",
                                          lambda d: d["summary"].update(unresolved_p0=1)),
    "zero_business_answer_failures": lambda p: _edit(
        p, f"{RUN}/business_review.json",
        lambda d: d["summary"].update(business_answer_failures=2)),
}


@pytest.mark.parametrize("condition", sorted(BREAKS))
def test_each_failed_condition_refuses_the_save_and_is_named(proj, condition):
    BREAKS[condition](proj)
    proc = _save(proj)
    assert proc.returncode == 1, proc.out
    assert "Traceback" not in proc.out
    assert f"refused: 1 save-gate condition(s) failed: {condition};" in proc.stderr
    assert f"[ ] {condition}:" in proc.stdout
    assert not (proj.root / STORE).exists()


def test_missing_reviews_fail_their_conditions(proj):
    (proj.root / RUN / "truth_review.json").unlink()
    (proj.root / RUN / "business_review.json").unlink()
    proc = _save(proj)
    assert proc.returncode == 1
    assert "truth_pass, business_pass, zero_unresolved_p0, zero_business_answer_failures" \
        in proc.stderr
    assert "[ ] truth_pass: missing" in proc.stdout


def test_unvalidated_save_needs_a_reason_and_is_marked(proj):
    BREAKS["truth_pass"](proj)
    for reason in ([], ["--unvalidated-reason", ""], ["--unvalidated-reason", "   "]):
        one_line_error(_save(proj, "--allow-unvalidated", *reason), "--unvalidated-reason")
    one_line_error(_save(proj, "--unvalidated-reason", "why"), "--allow-unvalidated")
    assert not (proj.root / STORE).exists()

    proc = _save(proj, "--allow-unvalidated", "--unvalidated-reason",
                 "manual draft before live acceptance")
    assert proc.returncode == 0, proc.out
    assert "saved UNVALIDATED run pack-warehouse_basics" in proc.stdout
    record = json.loads((proj.root / STORE / "pack-warehouse_basics" / "autorun.json")
                        .read_text())
    assert record["validated"] is False and record["semantic_proof"] is False
    assert record["unvalidated_reason"] == "manual draft before live acceptance"
    failed = [c["name"] for c in record["save_gate"]["conditions"] if not c["passed"]]
    assert failed == ["truth_pass"]


def test_bad_save_input_is_one_line(proj):
    one_line_error(proj.cli("save", "--spec", PACK, "--validated-run-dir", "nowhere"),
                   "nowhere", "run folder not found")
    one_line_error(proj.cli("save", "--spec", "nope.json", "--validated-run-dir", RUN),
                   "nope.json", "not found")
    proj.write("odd.json", {"hello": 1})
    one_line_error(proj.cli("save", "--spec", "odd.json", "--validated-run-dir", RUN),
                   "odd.json", "not a pack, scenario or case spec")
    one_line_error(proj.cli("save", "--spec", PACK, "--validated-run-dir", "workspace"),
                   "not a captured run")


def test_a_case_run_saves_with_its_scenario_state(sproject):  # noqa: F811
    a = sproject.assistant()
    case = "workspace/scenarios/cases/tape_stock.json"
    sproject.cli("run-case", "--case", case, "--base-url", a.url, check=True)
    proc = sproject.cli("save", "--spec", case, "--validated-run-dir",
                        "workspace/artifacts/domain_runs/case-tape_stock")
    assert proc.returncode == 0, proc.out
    record = json.loads((sproject.root / STORE / "case-tape_stock" / "autorun.json").read_text())
    assert record["validated"] is True and record["scenario_id"] == "tape_stock"
