"""Pydantic models for every book input and artifact.

LLM outputs are validated twice: against a JSON Schema narrowed to the ids the
scene may use (so constrained decoding and the offline model stay inside the
book's world), then by these models.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from pipeline.core.models import StrictModel
from pipeline.llm.settings import Endpoint, ModelSettings, Price

SCENE_ID = re.compile(r"^ch\d{3}_sc\d{3}$")
SLUG = r"^[a-z0-9_]+$"


def normal_text(text: str) -> str:
    """How lint compares two beats (or any two entries of a list): case and spacing aside."""
    return " ".join(text.lower().split())


def _no_repeats(values: list[str]) -> list[str]:
    # A real model lists ["mara", "ines", "mara"]: a list of ids (or beats) names each once.
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice (each entry must appear once)")
        seen.add(value)
    return values


# A list whose entries are distinct; the JSON Schema says so too (uniqueItems), so
# constrained decoding and the offline stand-in keep to it and a model is re-asked.
Unique = Annotated[list[str], AfterValidator(_no_repeats),
                   Field(json_schema_extra={"uniqueItems": True})]

# One line of text: no quote, backslash or control character, never blank. Written as a
# ``pattern`` because llama.cpp's schema-to-grammar conversion (llama_cpp/llama_grammar.py,
# SchemaConverter.visit) honours a pattern and ignores minLength/maxLength beside it: the
# length bound is in the pattern too, so constrained decoding cannot write a blank beat nor
# run on past it (tests/book/test_answer_schemas.py checks the grammar llama.cpp builds).
# A JSON escape cannot be written in such a pattern, hence no quote or backslash.
_CHAR = r'[^"\\\x00-\x1f]'
_FIRST = {"capital": "[A-Z]", "any": r'[^ "\\\x00-\x1f]'}


def line_pattern(lo: int, hi: int, first: str = "capital") -> str:
    """The pattern of a line of ``lo``..``hi`` characters whose first is ``first``
    (``capital``: a capital letter, as a sentence starts; ``any``: not a space)."""
    return f"^{_FIRST[first]}{_CHAR}{{{lo - 1},{hi - 1}}}$"


def Line(lo: int, hi: int, first: str = "capital", read_max: int = 300) -> Any:  # noqa: N802
    """A string field holding one line of text. The answer's JSON Schema (what the model
    must write, checked with jsonschema) holds ``line_pattern`` and ``lo``..``hi``; reading
    an artifact (pydantic) keeps the bounds of earlier versions (not empty, at most
    ``read_max``), so a book built before loads as it was; lint judges what it holds."""
    return Annotated[str, Field(min_length=1, max_length=max(hi, read_max), json_schema_extra={
        "minLength": lo, "maxLength": hi, "pattern": line_pattern(lo, hi, first)})]


def Items(lo: int, hi: int, read_max: int) -> Any:  # noqa: N802
    """A list's bounds: ``lo``..``hi`` items in an answer, up to ``read_max`` when read
    (an empty list is the default when ``lo`` is 0)."""
    if lo == 0:
        return Field(default=[], max_length=read_max, json_schema_extra={"maxItems": hi})
    return Field(min_length=lo, max_length=read_max, json_schema_extra={"maxItems": hi})


Beat = Line(8, 200)
# One sentence of an LLM answer, bounded (see SceneCard).
Sentence = Line(4, 200)
Note = Line(2, 200, "any")  # a fact learned: may start in lower case
Condition = Line(2, 80, "any")
Title = Line(1, 80, "any", read_max=120)
Aim = Line(8, 300, read_max=400)  # a card's goal, conflict, outcome
# A new id the model makes up (a thread's): bounded, so no runaway id fills max_tokens.
NEW_ID = r"^[a-z][a-z0-9_]{1,39}$"


Strict = StrictModel


# -- book inputs -----------------------------------------------------------------------
class Style(Strict):
    person: Literal["first", "third"] = "third"
    tense: Literal["past", "present"] = "past"
    tone: str = "quiet, precise"


class LintSettings(Strict):
    min_words: int = Field(60, ge=0)
    max_words: int = Field(3000, gt=0)
    forbidden: list[str] = ["TODO", "{{", "}}", "As an AI"]
    # An error left on the final prose or patch sends the scene back through repair and
    # state_repair (with the findings in the prompt) at most this many times.
    repair_rounds: int = Field(2, ge=0, le=10)


class BookConfig(Strict):
    title: str = Field(min_length=1)
    premise: str = ""
    style: Style = Style()
    model: ModelSettings = ModelSettings()
    endpoint: Endpoint = Endpoint()
    prices: dict[str, Price] = {}
    max_cost_usd: float | None = Field(None, ge=0)
    lint: LintSettings = LintSettings()
    templates: dict[str, str] = {}


class Character(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    location: str | None = None
    condition: str = "well"
    knows: list[str] = []


class Location(Strict):
    name: str = Field(min_length=1)
    description: str = ""


class Item(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    holder: str | None = None


class Thread(Strict):
    summary: str = Field(min_length=1)
    status: Literal["open", "closed"] = "open"
    opened_in: str | None = None
    closed_in: str | None = None
    # ids of the characters (and the places they went) the opening scene changed: how a
    # later scene's bounded context finds the threads that involve its cast or its place
    involves: list[str] = []


class Archive(Strict):
    """What the scene just committed moved out of the state: the threads it closed and the
    facts it pushed past each character's latest few. They stay on disk in that scene's
    post-state and registries; the next commit replaces them with its own, so the state
    does not grow with the book. ``thread_ids`` names every archived thread so far (ids
    only), so that no new thread takes an old one's id."""

    threads: dict[str, Thread] = {}
    knows: dict[str, list[str]] = {}
    thread_ids: list[str] = []


class SceneAccount(Strict):
    """A short account of the scene just committed, derived in code from its state patch
    (no model call): what the next scene's prompt says about the scene before it."""

    id: str
    events: list[str] = []
    threads_opened: list[str] = []
    threads_closed: list[str] = []


class State(Strict):
    characters: dict[str, Character] = {}
    locations: dict[str, Location] = {}
    items: dict[str, Item] = {}
    threads: dict[str, Thread] = {}  # open threads (closed ones move to the archive at commit)
    archive: Archive = Archive()
    last_scene: SceneAccount | None = None


class NewCharacter(Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    description: str = ""


class NewLocation(Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1)
    description: str = ""


class OutlineScene(Strict):
    id: str
    title: str = Field(min_length=1)
    brief: str = Field(min_length=1)
    location: str = Field(pattern=SLUG)
    characters: Unique = Field(min_length=1)
    new_characters: list[NewCharacter] = []
    new_locations: list[NewLocation] = []

    @field_validator("id")
    @classmethod
    def _scene_id(cls, v: str) -> str:
        if not SCENE_ID.match(v):
            raise ValueError(f"scene id {v!r} must look like ch001_sc001")
        return v


class Chapter(Strict):
    id: str = Field(pattern=r"^ch\d{3}$")
    title: str = Field(min_length=1)
    scenes: list[OutlineScene] = Field(min_length=1)


class Outline(Strict):
    chapters: list[Chapter] = Field(min_length=1)


# -- LLM outputs -----------------------------------------------------------------------
# Every string and list is bounded: constrained decoding then ends a small model's runaway
# sentence instead of paying for max_tokens of it (an answer cut there is invalid JSON).
class SceneCard(Strict):
    title: Title
    pov: str
    location: str
    characters: Unique = Field(min_length=1)
    goal: Aim
    conflict: Aim
    outcome: Aim
    beats: Annotated[list[Beat], AfterValidator(_no_repeats),
                     Field(min_length=3, max_length=6, json_schema_extra={"uniqueItems": True})]


class CharacterChange(Strict):
    id: str
    location: str | None = None
    condition: Condition | None = None
    learned: list[Note] = Items(0, 2, 3)


class ItemMove(Strict):
    id: str
    holder: str


class NewThread(Strict):
    id: str = Field(pattern=SLUG, json_schema_extra={"pattern": NEW_ID, "maxLength": 40})
    summary: Sentence


class StatePatch(Strict):
    characters: list[CharacterChange] = Field(default=[], max_length=6)
    items: list[ItemMove] = Field(default=[], max_length=4)
    threads_opened: list[NewThread] = Field(default=[], max_length=2)
    threads_closed: Unique = Field(default=[], max_length=2)
    events: list[Sentence] = Items(1, 4, 6)


class Fact(Strict):
    subject: str
    fact: Sentence


class ContinuityPack(Strict):
    facts: list[Fact] = Items(2, 6, 8)
    carry_forward: list[Sentence] = Items(0, 3, 4)
    open_threads: Unique = Field(default=[], max_length=4)


class WriteOutput(Strict):
    prose: str = Field(min_length=100)
    state_patch: StatePatch


class RepairOutput(Strict):
    prose: str = Field(min_length=100)
    state_patch: StatePatch
    changes: list[Sentence] = Items(1, 3, 5)


class StateRepairOutput(Strict):
    state_patch: StatePatch
    notes: list[Sentence] = Items(1, 3, 4)


# -- deterministic artifacts -----------------------------------------------------------
class Finding(Strict):
    rule: str
    severity: Literal["error", "warning"]
    message: str
    field: str | None = None  # where: "scene_card.beats[2]", "state_patch.characters[0].id"


class LintReport(Strict):
    scene_id: str
    passed: bool
    word_count: int
    findings: list[Finding]


class PreflightReport(Strict):
    scene_id: str
    pre_state: str
    added_characters: list[str]
    added_locations: list[str]
    checks: list[str]


# -- narrowing the schemas sent to the model --------------------------------------------
@functools.cache
def _model_schema(model: type[BaseModel]) -> dict:
    # pydantic rebuilds the schema on every call; the models never change at run time
    return model.model_json_schema()


def output_schema(model: type[BaseModel], choices: dict[str, list[str]]) -> dict:
    """JSON Schema of ``model`` with some string fields narrowed to ``choices``.

    Keys are ``"Def.field"`` (``Def`` is the model's name in ``$defs``, or the root
    model's own name); a string or list-of-strings field becomes an enum. An empty
    choice list makes a list field empty-only (``maxItems: 0``) and is refused for a
    plain string field.
    """
    schema = copy.deepcopy(_model_schema(model))
    for key, values in choices.items():
        def_name, field = key.split(".")
        node = schema if def_name == model.__name__ else schema["$defs"][def_name]
        prop = node["properties"][field]
        values = sorted(dict.fromkeys(values))
        if prop.get("type") == "array":
            if values:
                prop["items"] = {"type": "string", "enum": values}
            else:
                # an empty list only: its items stay described, since llama.cpp's grammar
                # reads maxItems only beside items (without them, any JSON array)
                prop["maxItems"] = 0
                prop.pop("minItems", None)
        else:
            if not values:
                raise ValueError(f"no choices for {key}")
            if "anyOf" in prop:
                prop["anyOf"] = [{"type": "string", "enum": values}, {"type": "null"}]
            else:
                prop.pop("type", None)
                prop["type"] = "string"
                prop["enum"] = values
    return schema


# The book's input files and their published schemas (pipeline/schemas/; a test keeps them
# current; ``python -m pipeline.book.models`` rewrites them).
SCHEMAS = {"book_config": BookConfig, "book_outline": Outline, "book_state": State}

if __name__ == "__main__":  # pragma: no cover - a maintenance command
    from pipeline.core import schemas

    for written in schemas.write(SCHEMAS):
        print(written)
