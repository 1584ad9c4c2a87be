"""The placeholder grammar: paths only, never an expression; unresolved ones say what was there."""

from __future__ import annotations

import pytest

from pipeline.scenario import placeholders as ph
from pipeline.scenario.contracts import Scenario, step_references

ANSWER = {"entries": [{"item": "Packing Tape", "on_hand": 130, "tags": ["a", "b"]}],
          "semantic_memory": {"active_result_set_id": "rs-1-1"}, "reply": "x",
          "debug": {"route": "inventory.low_stock"}}
CONTEXT = {"step_01_inventory": ANSWER, "semantic_memory": ANSWER["semantic_memory"],
           "session_id": "s1"}


def test_paths_resolve_to_values():
    text, values = ph.resolve(
        "Who supplies {{step_01_inventory.entries[0].item}} ({{ step_01_inventory.entries[0]"
        ".on_hand }} left, tag {{step_01_inventory.entries[0].tags[1]}}) in "
        "{{semantic_memory.active_result_set_id}}?", CONTEXT)
    assert text == "Who supplies Packing Tape (130 left, tag b) in rs-1-1?"
    assert values["step_01_inventory.entries[0].item"] == "Packing Tape"


@pytest.mark.parametrize("bad", [
    "{{__import__('os').system('x')}}", "{{ a + b }}", "{{ entries[-1] }}", "{{ a[0:2] }}",
    "{{ a.b() }}", "{{ a | upper }}", "{{ }}", "{{ 1a }}", "{{ a..b }}", "{{ a[x] }}",
    "open {{ a", "close }}",
])
def test_anything_but_a_path_is_a_syntax_error(bad):
    with pytest.raises(ph.PlaceholderSyntaxError):
        ph.find(bad)


@pytest.mark.parametrize("template, reason, available", [
    ("{{step_09.entries}}", "'step_09' is not an earlier captured step", "step_01_inventory"),
    ("{{step_01_inventory.entries[3].item}}", "has 1 item(s), no index 3",
     "step_01_inventory.entries[0..0]"),
    ("{{step_01_inventory.entries[0].supplier}}", "has no field 'supplier'",
     "step_01_inventory.entries[0].on_hand"),
    ("{{step_01_inventory.entries}}", "is a list, not a single value", "entries[0..0]"),
    ("{{step_01_inventory.reply[0]}}", "is not a list", "step_01_inventory.reply"),
])
def test_unresolved_names_the_placeholder_and_what_was_there(template, reason, available):
    with pytest.raises(ph.Unresolved) as err:
        ph.resolve(template, CONTEXT)
    message = str(err.value)
    assert template in message and reason in message and available in message


def test_a_blocked_earlier_step_has_no_answer():
    with pytest.raises(ph.Unresolved, match="'step_01' has no captured answer"):
        ph.resolve("{{step_01.entries[0].item}}", {"step_01": None})
    with pytest.raises(ph.Unresolved, match="no earlier step .* has an answer, so there is no "
                                            "semantic_memory yet"):
        ph.resolve("{{semantic_memory.active_result_set_id}}", {"step_01": None})


def test_static_check_finds_unknown_and_later_step_references():
    scenario = Scenario.model_validate({"scenario_id": "s", "steps": [
        {"step_id": "a", "question": "{{b.entries[0].item}}"},
        {"step_id": "b", "question": "{{a.reply}} {{zzz.x}} {{semantic_memory.x}}"}]})
    problems = step_references(scenario)
    assert "comes later" in problems["a"][0]
    assert problems["b"] == [
        "{{zzz.x}} refers to unknown step 'zzz' (available: a, semantic_memory, session_id)"]
