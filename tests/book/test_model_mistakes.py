"""What a real small model gets wrong, caught where it is made: lists of ids and beats name
each entry once (the schema says so, so a model is re-asked), and lint reports empty or
repeated beats, characters that are not in the scene and prose that ignores its card,
each finding naming the scene and the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.project import REPO

from pipeline.book.models import SceneCard, State, StatePatch, output_schema
from pipeline.book.phases import lint, schema_for
from pipeline.book.workspace import Workspace, load_book

CARD = {"title": "The Last Ferry", "pov": "mara", "location": "lighthouse",
        "characters": ["mara", "ines"], "goal": "Mara climbs to the lamp room.",
        "conflict": "The storm fights the lamp.", "outcome": "The light burns through the night.",
        "beats": ["Mara climbs the stairs.", "Ines brings the oil.", "The lamp is lit."]}


@pytest.fixture(scope="module")
def book():
    return load_book(Workspace(REPO / "workspace"), "example")


def test_a_card_naming_a_character_twice_is_refused_and_the_schema_says_so(book):
    with pytest.raises(ValidationError, match="'mara' is listed twice"):
        SceneCard.model_validate({**CARD, "characters": ["mara", "ines", "mara", "ines"]})
    with pytest.raises(ValidationError, match="listed twice"):
        SceneCard.model_validate({**CARD, "beats": ["a b c", "d e f", "a b c"]})
    scene = book.scenes[0]
    schema = schema_for("plan", scene, {})
    # the plan's cast is the outline's, written for the model by constrained decoding
    assert schema["properties"]["characters"] == {"const": scene.characters,
                                                  "title": "Characters"}
    assert schema["properties"]["beats"]["uniqueItems"] is True
    patch = output_schema(StatePatch, {})
    assert patch["properties"]["threads_closed"]["uniqueItems"] is True


def _state(book) -> State:
    data = book.initial_state.model_dump()
    return State.model_validate(data)


def _lint(book, card: dict, prose: str, patch: dict | None = None):
    sid = book.scenes[0].id
    scene = book.scenes[0]
    card = {**card, "characters": scene.characters, "location": scene.location,
            "pov": scene.characters[0]} if card is CARD else card
    return lint(book, sid, SceneCard.model_validate(card), _state(book), prose,
                StatePatch.model_validate(patch or {"events": ["Something happened."]}))


def test_lint_names_scene_and_field_of_a_repeated_beat_and_a_stranger(book):
    scene = book.scenes[0]
    names = [book.initial_state.characters[c].name for c in scene.characters
             if c in book.initial_state.characters]
    card = {**CARD, "characters": scene.characters, "location": scene.location,
            "pov": scene.characters[0],
            "beats": ["Mara climbs the stairs.", "The lamp is lit.", "mara climbs  the stairs."]}
    prose = " ".join(names) + " climbed the stairs and lit the lamp. " * 20
    report = lint(book, scene.id, SceneCard.model_construct(**card), _state(book), prose,
                  StatePatch.model_validate({"events": ["The lamp was lit."],
                                             "characters": [{"id": "stranger"}]}))
    by_rule = {f.rule: f for f in report.findings}
    assert not report.passed
    assert by_rule["beat_repeated"].field == "scene_card.beats[2]"
    assert scene.id in by_rule["beat_repeated"].message
    stranger = [f for f in report.findings if f.rule == "character_not_in_scene"]
    assert [f.field for f in stranger] == ["state_patch.characters[0].id"]
    assert "'stranger'" in stranger[0].message


def test_prose_that_ignores_its_card_is_reported(book):
    scene = book.scenes[0]
    card = {**CARD, "characters": scene.characters, "location": scene.location,
            "pov": scene.characters[0]}
    off_topic = "Bananas ripen quietly in distant warehouses every summer afternoon. " * 10
    report = lint(book, scene.id, SceneCard.model_validate(card), _state(book), off_topic,
                  StatePatch.model_validate({"events": ["Nothing."]}))
    [finding] = [f for f in report.findings if f.rule == "prose_ignores_card"]
    assert finding.severity == "warning" and finding.field == "prose"
    assert scene.id in finding.message
    on_topic = _lint(book, CARD, " ".join(
        book.initial_state.characters[c].name for c in scene.characters
        if c in book.initial_state.characters) + " climbs the stairs; the lamp is lit. " * 10)
    assert "prose_ignores_card" not in {f.rule for f in on_topic.findings}


def test_an_outline_naming_a_character_twice_is_one_line(project):
    def dup(data):
        scene = data["chapters"][0]["scenes"][0]
        scene["characters"] = scene["characters"] + scene["characters"][:1]

    project.edit_json("workspace/books/example/outline.json", dup)
    proc = project.doit()
    assert proc.returncode != 0 and "Traceback" not in proc.out
    assert "outline.json" in proc.out and "chapters.0.scenes.0.characters" in proc.out
    assert "listed twice" in proc.out
