"""A hand edit of a captured answer (issue 15, item 8): the evidence is hashed when it is
captured; the reviews report the edit and the save gate refuses the run."""

from __future__ import annotations

import json

import pytest
from support.scenario import sproject  # noqa: F401

pytestmark = pytest.mark.slow  # a real assistant and real commands

CASE = "workspace/scenarios/cases/tape_stock.json"
RUN = "workspace/artifacts/domain_runs/case-tape_stock"
STEP = f"{RUN}/steps/step_01"


def test_an_edited_answer_is_reported_and_refused(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.cli("run-case", "--case", CASE, "--base-url", a.url, check=True)
    a.stop()
    state = sproject.read(f"{STEP}/step_state.json")
    assert set(state["evidence"]) == {"assistant_response.json", "session.json", "turn.json"}
    saved = sproject.cli("save", "--spec", CASE, "--validated-run-dir", RUN)
    assert saved.returncode == 0, saved.out  # the untouched run is proven and saved

    # someone "improves" the captured answer by hand
    response = sproject.read(f"{STEP}/assistant_response.json")
    response["reply"] = "130 rolls of Packing Tape, all in perfect condition."
    sproject.write(f"{STEP}/assistant_response.json", json.dumps(response, indent=2) + "\n")

    review = sproject.cli("review-run", RUN)
    business = sproject.read(f"{RUN}/business_review.json")
    edited = [f for f in business["findings"] if f["code"] == "evidence_edited"]
    assert len(edited) == 1 and edited[0]["severity"] == "P0" and not edited[0]["resolved"]
    assert "assistant_response.json" in edited[0]["message"]
    assert business["overall_business_status"] == "fail"
    truth = sproject.read(f"{RUN}/truth_review.json")
    assert truth["summary"]["overall_status"] == "fail"
    assert truth["steps"][0]["evidence_edited"] == ["assistant_response.json"]
    assert review.returncode != 0 or "fail" in review.out

    refused = sproject.cli("save", "--spec", CASE, "--validated-run-dir", RUN)
    assert refused.returncode == 1, refused.out
    assert "evidence_unchanged" in refused.out and "Traceback" not in refused.out


def test_the_gate_refuses_an_edit_made_after_the_reviews(sproject):  # noqa: F811
    a = sproject.assistant()
    sproject.cli("run-case", "--case", CASE, "--base-url", a.url, check=True)
    a.stop()
    # the reviews passed; the answer is edited afterwards and the reviews are not rerun
    session = sproject.read(f"{STEP}/session.json")
    session["tampered"] = True
    sproject.write(f"{STEP}/session.json", session)
    refused = sproject.cli("save", "--spec", CASE, "--validated-run-dir", RUN)
    assert refused.returncode == 1, refused.out
    assert "evidence_unchanged" in refused.out and "session.json" in refused.out
