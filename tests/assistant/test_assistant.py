"""The reference assistant as a real HTTP service on 127.0.0.1: contract, sessions,
follow-ups, rules read per request, GUI-style saves, errors as JSON."""

from __future__ import annotations

import json

import httpx
import pytest
from support.scenario import sproject  # noqa: F401  (fixture)

from pipeline.assistant.contract import contract_validator


def _valid(name: str, data) -> None:
    errors = list(contract_validator(name).iter_errors(data))
    assert not errors, errors[0].message


def test_answers_follow_the_contract_and_keep_the_session(sproject):  # noqa: F811
    a = sproject.assistant(run_id="assistant-stage1-contract")
    first = a.ask("Which items are below their reorder level?")
    assert first.status_code == 200
    body = first.json()
    _valid("message_response", body)
    assert body["capability"]["status"] == "answered"
    assert [e["item"] for e in body["entries"]] == ["Packing Tape", "Safety Gloves",
                                                    "Forklift Battery"]
    lines = body["reply"].splitlines()
    assert lines[0].startswith("3 items are below their reorder level")
    assert "Data as of 2024-06-30" in body["reply"]
    rs = body["semantic_memory"]["active_result_set_id"]
    assert rs and rs not in body["reply"]  # ids stay out of the visible answer by default

    # a follow-up refers to the previous result set without naming it
    follow = a.ask("Who supplies those?", body["session_id"]).json()
    assert follow["debug"]["targets_from"] == "result_set"
    assert {e["supplier"] for e in follow["entries"]} == {"Nordpack GmbH", "Atlas Safety Ltd",
                                                         "Voltline Power"}
    # ... or names it explicitly
    cost = a.ask(f"What would it cost to reorder result set {rs}?", body["session_id"]).json()
    assert cost["debug"]["route"] == "inventory.reorder_cost"
    assert "EUR 2,768.00" in cost["reply"].splitlines()[0]

    session = httpx.get(f"{a.url}/api/assistant/session/{body['session_id']}",
                        trust_env=False).json()
    _valid("session", session)
    assert [t["message"] for t in session["turns"]] == [
        "Which items are below their reorder level?", "Who supplies those?",
        f"What would it cost to reorder result set {rs}?"]

    # saved the way a GUI run saves it
    sessions = sproject.ws / "llm_normalizer" / "data" / "assistant_sessions"
    saved = json.loads((sessions / f"assistant-stage1-contract-{body['session_id']}.json")
                       .read_text())
    assert len(saved["turns"]) == 3 and saved["run_id"] == "assistant-stage1-contract"
    report = (sproject.ws / "llm_normalizer" / "reports" / "assistant-stage1-contract.md")
    assert "**User:** Who supplies those?" in report.read_text()

    # wording went through the LLM client: one logged call per answer
    calls = [c for c in sproject.calls() if c["task"] == "assistant:assistant-stage1-contract"]
    assert len(calls) == 3 and {c["provider"] for c in calls} == {"offline"}


def test_unsupported_and_clarification_are_said_first(sproject):  # noqa: F811
    a = sproject.assistant()
    gap = a.ask("What will demand be next quarter?").json()
    assert gap["capability"]["status"] == "unsupported"
    assert gap["reply"].startswith("I can't answer that yet")
    unclear = a.ask("Who supplies those?").json()  # no earlier result in a new session
    assert unclear["capability"]["status"] == "clarification"
    assert "?" in unclear["reply"].splitlines()[0]


def test_rules_are_read_on_every_request(sproject):  # noqa: F811
    a = sproject.assistant()
    clean = a.ask("How many Packing Tape do we have?").json()["reply"]
    sproject.rules(direct_answer_first=False, state_data_date=False, show_route_ids=True,
                   include_raw_json=True)
    noisy = a.ask("How many Packing Tape do we have?").json()["reply"]
    assert clean.startswith("There are 130 rolls of Packing Tape")
    assert noisy.startswith("Let me check the warehouse records")
    assert "route:inventory.item_stock" in noisy and '[{"item"' in noisy
    assert "Data as of" not in noisy

    sproject.write("workspace/scenarios/assistant_rules.json", '{"max_list_items": 0}')
    broken = a.ask("How many Packing Tape do we have?")
    assert broken.status_code == 500
    assert "assistant_rules.json" in broken.json()["error"]
    assert "max_list_items" in broken.json()["error"]


def test_errors_are_json_with_a_status(sproject):  # noqa: F811
    a = sproject.assistant()
    post = a.url + "/api/assistant/message"
    not_json = httpx.post(post, content=b"{oops", trust_env=False)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    no_message = httpx.post(post, json={"session_id": None}, trust_env=False)
    assert no_message.status_code == 400 and "message" in no_message.json()["error"]
    unknown = a.ask("Which suppliers do we work with?", "sdeadbeef0000")
    assert unknown.status_code == 404 and "unknown session" in unknown.json()["error"]
    missing = httpx.get(a.url + "/api/assistant/session/sdeadbeef0000", trust_env=False)
    assert missing.status_code == 404
    assert httpx.get(a.url + "/nope", trust_env=False).status_code == 404


@pytest.mark.slow
def test_a_restarted_assistant_continues_a_saved_session(sproject):  # noqa: F811
    a = sproject.assistant(run_id="assistant-stage1-before")
    first = a.ask("Which items are below their reorder level?").json()
    a.kill()
    b = sproject.assistant(run_id="assistant-stage1-after")
    follow = b.ask("What would it cost to reorder them?", first["session_id"])
    assert follow.status_code == 200
    assert follow.json()["debug"]["targets_from"] == "result_set"
    assert follow.json()["turn"] == 2
