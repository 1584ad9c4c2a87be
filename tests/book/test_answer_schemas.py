"""What a small model gets wrong is refused where the answer is made.

What a grammar can hold is in the answer's JSON Schema, and llama.cpp's own schema-to-grammar
conversion (``llama_cpp.llama_grammar``, the one the local server runs) keeps it: a blank
beat, a card naming another cast or title, too many changes, a runaway id cannot be decoded.
What it cannot hold (two items alike, a prose too short, a thread reused) is the answer's
check: the model is re-asked with the finding, and the ledger keeps every try, its seed and
its finding.
"""

from __future__ import annotations

import copy
import ctypes
import json
import math
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from support.project import REPO, Project
from support.smollm import model_path, require_smollm

from pipeline.book import phases
from pipeline.book.models import LintSettings, SceneCard
from pipeline.book.phase_table import LLM_PHASES, PHASE
from pipeline.book.workspace import Workspace, load_book

CARD = {"title": "The Last Ferry", "pov": "mara", "location": "ferry_landing",
        "characters": ["mara", "ines"], "goal": "Mara wants to cross to the light.",
        "conflict": "The storm rises before she can sail.",
        "outcome": "She reaches the island at dusk.",
        "beats": ["Mara waits at the landing.", "Ines brings the news.",
                  "The ferry leaves in the rain."]}


@pytest.fixture(scope="module")
def book():
    return load_book(Workspace(REPO / "workspace"), "example")


def _card_schema(book) -> dict:
    scene = book.scenes[0]
    assert scene.characters == CARD["characters"] and scene.title == CARD["title"]
    return phases.schema_for("plan", scene, {}, book.config.model.max_tokens,
                             book.config.lint)


def _errors(schema: dict, value) -> list[str]:
    return [e.message for e in Draft202012Validator(schema).iter_errors(value)]


@pytest.mark.parametrize("beat", ["", " ", "   ", "\n", "\t ok"])
def test_a_blank_beat_is_refused_by_the_schema(book, beat):
    schema = _card_schema(book)
    assert _errors(schema, CARD) == []
    card = copy.deepcopy(CARD)
    card["beats"][1] = beat
    assert _errors(schema, card)


def test_what_the_outline_says_is_a_const_and_counts_are_bounded(book):
    schema = _card_schema(book)
    props = schema["properties"]
    assert props["title"]["const"] == CARD["title"]
    assert props["characters"]["const"] == CARD["characters"]
    assert props["pov"]["enum"] == sorted(CARD["characters"])
    assert props["location"]["enum"] == ["ferry_landing"]
    assert (props["beats"]["minItems"], props["beats"]["maxItems"]) == (3, 6)
    for wrong in ({"characters": ["mara", "ines", "mara"]}, {"title": "Another title"},
                  {"pov": "tobias"}, {"beats": CARD["beats"][:2]},
                  {"goal": "x" * 301}, {"goal": "a lower-case start"}):
        assert _errors(schema, {**CARD, **wrong}), wrong


def test_a_patch_is_bounded_by_the_scene(book):
    scene = book.scenes[0]
    state = book.initial_state
    card = SceneCard.model_validate(CARD)
    schema = phases.schema_for("write", scene, {"scene_card": card, "state": state}, 1200,
                               book.config.lint)
    patch = schema["$defs"]["StatePatch"]["properties"]
    assert patch["characters"]["maxItems"] == 2  # one change per character of the card
    change = schema["$defs"]["CharacterChange"]["properties"]
    assert sorted(change["id"]["enum"]) == ["ines", "mara"]
    assert schema["$defs"]["NewThread"]["properties"]["id"]["pattern"] == r"^[a-z][a-z0-9_]{1,39}$"
    prose = schema["properties"]["prose"]
    # lint counts words, a grammar characters: enough of them for lint.min_words
    assert prose["minLength"] == book.config.lint.min_words * phases.CHARS_PER_WORD
    assert prose["maxLength"] == phases.prose_room(1200)


def test_what_no_grammar_holds_is_the_answers_check(book):
    state = book.initial_state
    validate = phases.output_validator("plan", {})
    card = copy.deepcopy(CARD)
    card["beats"][2] = "  mara WAITS at the landing. "
    with pytest.raises(ValueError, match=r"\$\.beats\[2\]: beat 3 repeats beat 1"):
        validate(card)
    inp = {"scene_card": SceneCard.model_validate(CARD), "state": state}
    rules = LintSettings(min_words=20)
    validate = phases.output_validator("write", inp, rules, max_tokens=1200)
    answer = {"prose": "Mara remembered everything unforgettable about lighthouses. " * 2,
              "state_patch": {"characters": [{"id": "mara"}, {"id": "mara"}],
                              "threads_opened": [{"id": "new_one", "summary": "A new worry."},
                                                 {"id": "new_one", "summary": "The same."}],
                              "events": ["Mara waited."]}}
    with pytest.raises(ValueError) as caught:
        validate(answer)
    message = str(caught.value)
    assert "$.prose: 12 words, fewer than 20" in message
    assert "$.state_patch.characters[1].id: 'mara' is changed twice" in message
    assert "$.state_patch.threads_opened[1].id: thread 'new_one' is opened twice" in message
    answer["prose"] = "Mara waited at the landing while the rain came in. " * 3
    answer["prose"] += "TODO"
    with pytest.raises(ValueError, match=r"\$\.prose: prose contains 'TODO'"):
        validate(answer)
    # a minimum no answer of max_tokens can reach is not asked for again: lint names it
    validate = phases.output_validator("write", inp, LintSettings(min_words=100000), 1200)
    answer = {"prose": "Mara waited at the landing while the rain came in. " * 3,
              "state_patch": {"events": ["Mara waited."]}}
    assert validate(answer).prose.startswith("Mara")


# -- llama.cpp's grammar ------------------------------------------------------------------
class Grammar:
    """The grammar llama.cpp builds from a JSON Schema, parsed by llama.cpp itself (through
    SmolLM2's vocabulary): ``accepts(text)`` feeds ``text`` token by token to its sampler,
    as decoding would, and says whether every token (and then the end) is allowed."""

    def __init__(self, llama, schema: dict):
        import llama_cpp
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        self.lib, self.llama = llama_cpp, llama
        self.text = json_schema_to_gbnf(json.dumps(schema))
        # what the server does with the schema (llama_chat_format._grammar_for_json_schema):
        # a schema it cannot convert falls back to plain JSON, silently: it must convert
        sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, self.text.encode(),
                                                       b"root")
        assert sampler, "llama.cpp refused the grammar"
        llama_cpp.llama_sampler_free(sampler)

    def accepts(self, text: str) -> bool:
        lib, vocab = self.lib, self.llama._model.vocab
        sampler = lib.llama_sampler_init_grammar(vocab, self.text.encode(), b"root")
        try:
            end = lib.llama_vocab_eos(vocab)
            for token in [*self.llama.tokenize(text.encode(), add_bos=False), end]:
                data = (lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0))
                candidates = lib.llama_token_data_array(data, 1, -1, False)
                lib.llama_sampler_apply(sampler, ctypes.byref(candidates))
                if math.isinf(data[0].logit):
                    return False
                if token != end:
                    lib.llama_sampler_accept(sampler, token)
            return True
        finally:
            lib.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def vocab():
    require_smollm()
    import llama_cpp

    return llama_cpp.Llama(str(model_path()), vocab_only=True, verbose=False)


def test_llama_cpp_builds_a_grammar_that_refuses_a_blank_beat(book, vocab):
    grammar = Grammar(vocab, _card_schema(book))
    assert grammar.accepts(json.dumps(CARD))
    for beat in ("", " ", "  The lamp", "\\n"):
        card = copy.deepcopy(CARD)
        card["beats"][1] = beat
        assert not grammar.accepts(json.dumps(card)), beat
    for wrong in ({"characters": ["mara", "ines", "mara"]}, {"title": "Another"},
                  {"pov": "tobias"}, {"beats": CARD["beats"][:2]},
                  {"beats": CARD["beats"] * 3}, {"goal": "M" + "a" * 300}):
        assert not grammar.accepts(json.dumps({**CARD, **wrong})), wrong


def _blind_spots(node, path="$") -> list[str]:
    """Where llama.cpp's conversion would hold less than the schema says: an array without
    ``items`` (any JSON array: its maxItems is not read), an object without properties."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "array" and "items" not in node and "prefixItems" not in node:
            found.append(path)
        if node.get("type") == "object" and "properties" not in node:
            found.append(path)
        for key, value in node.items():
            found += _blind_spots(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _blind_spots(value, f"{path}[{i}]")
    return found


def test_an_empty_only_list_is_held_by_the_grammar(book, vocab):
    """A patch with nothing it may change (no character, item or thread in view) is an
    empty list in the grammar too: llama.cpp reads maxItems only beside items."""
    scene = book.scenes[0]
    inp = {"state": book.initial_state,
           "state_patch": phases.StatePatch(events=["Mara waited."])}
    schema = phases.schema_for("state_repair", scene, inp, 1200, book.config.lint)
    patch = schema["$defs"]["StatePatch"]["properties"]
    assert patch["characters"]["maxItems"] == 0 and _blind_spots(schema) == []
    grammar = Grammar(vocab, schema)
    answer = {"state_patch": {"events": ["Mara waited at the landing."]},
              "notes": ["Nothing changed."]}
    assert grammar.accepts(json.dumps(answer))
    answer["state_patch"]["characters"] = ["Awakened by the light"]
    assert not grammar.accepts(json.dumps(answer))


def test_every_answer_schema_of_a_built_book_is_a_grammar_its_answers_keep_to(
        built: Project, vocab, monkeypatch):
    """Each LLM phase's schema of each scene converts (no silent fall-back to plain JSON),
    and the answer the stand-in wrote to it (a valid instance) is one the grammar allows."""
    monkeypatch.chdir(built.root)
    book = load_book(Workspace(Path("workspace")), "example")
    for scene in book.scenes:
        layout = phases.layout(book, scene.id)
        for phase in LLM_PHASES:
            files = layout[phase]
            prompt = json.loads(Path(files.outputs["prompt"]).read_text())
            answer = json.loads(Path(files.outputs["response"]).read_text())["text"]
            inp = {i.name: phases.load_input(files.inputs[i.name], phases.INPUT_MODELS[i.name])
                   for i in PHASE[phase].inputs}
            schema = phases.schema_for(phase, scene, inp, book.config.model.max_tokens,
                                       book.config.lint)
            assert prompt["output_schema"] == schema
            assert _blind_spots(schema) == [], (scene.id, phase)
            text = json.dumps(_grammar_order(schema, json.loads(answer), schema))
            assert Grammar(vocab, schema).accepts(text), (scene.id, phase)


def _grammar_order(node: dict, value, root: dict):
    """``value`` with its keys in the order llama.cpp's grammar asks for them: an object's
    required properties first, then the optional ones, each in the schema's order."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rpartition("/")[2]]
    if "anyOf" in node and value is not None:
        node = next(o for o in node["anyOf"] if o.get("type") != "null")
    if isinstance(value, dict) and "properties" in node:
        props, required = node["properties"], node.get("required", [])
        keys = [k for k in props if k in required] + [k for k in props if k not in required]
        return {k: _grammar_order(props[k], value[k], root) for k in keys if k in value}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_grammar_order(node["items"], v, root) for v in value]
    return value
