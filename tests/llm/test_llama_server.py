"""The real OpenAI-compatible server scenemake can talk to: llama.cpp's Python server on a
tiny random model that the tests write themselves. Checks what scenemake relies on: the
model listing, usage counts, and schema-constrained JSON for the real output schemas."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from jsonschema import Draft202012Validator

from pipeline.book.models import Outline, SceneCard, State
from pipeline.book.phases import schema_for
from pipeline.book.workspace import LLM_PHASES

pytestmark = pytest.mark.llama

EXAMPLE = Path(__file__).resolve().parents[2] / "workspace" / "books" / "example"


def example_schema(phase: str) -> dict:
    """The schema scenemake sends for ``phase`` of the example book's first scene."""
    scene = Outline.model_validate_json((EXAMPLE / "outline.json").read_text()) \
        .chapters[0].scenes[0]
    card = SceneCard(title="The Last Ferry", pov=scene.characters[0], location=scene.location,
                     characters=scene.characters, goal="g", conflict="c", outcome="o",
                     beats=["a", "b", "c"])
    state = State.model_validate_json((EXAMPLE / "state.json").read_text())
    return schema_for(phase, scene, {"state": state, "scene_card": card})


def chat(server, response_format: dict | None = None, seed: int = 1,
         max_tokens: int = 1200) -> httpx.Response:
    body = {"model": server.model_id, "max_tokens": max_tokens, "seed": seed,
            "temperature": 0.8,
            "messages": [{"role": "system", "content": "Answer in JSON."},
                         {"role": "user", "content": "Plan the scene at the ferry landing."}]}
    if response_format is not None:
        body["response_format"] = response_format
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)


def test_models_lists_the_model(llama_server):
    r = httpx.get(f"{llama_server.base_url}/models", timeout=10)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == [str(llama_server.model)]


def test_plain_chat_completion_has_text_and_usage(llama_server):
    r = chat(llama_server, max_tokens=16)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["choices"][0]["message"]["content"]
    assert data["usage"]["prompt_tokens"] > 0
    assert data["usage"]["completion_tokens"] > 0


def test_json_schema_response_format_is_refused(llama_server):
    """llama-cpp-python only knows ``json_object`` (optionally with a ``schema``)."""
    fmt = {"type": "json_schema", "json_schema": {"name": "plan", "strict": True,
                                                  "schema": example_schema("plan")}}
    r = chat(llama_server, fmt, max_tokens=16)
    assert r.status_code == 500
    assert "json_object" in r.text


@pytest.mark.parametrize("phase", LLM_PHASES)
def test_json_object_with_schema_is_valid(llama_server, phase):
    schema = example_schema(phase)
    validator = Draft202012Validator(schema)
    failures = []
    for seed in range(10):
        r = chat(llama_server, {"type": "json_object", "schema": schema}, seed=seed)
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        try:
            # a grammar cannot say "no repeats": uniqueItems is checked after decoding, and
            # the client re-asks (tests/book/test_model_mistakes.py); everything else holds
            errors = [e.message for e in validator.iter_errors(json.loads(text))
                      if e.validator != "uniqueItems"]
        except ValueError as exc:
            errors = [f"not JSON: {exc}"]
        if errors:
            failures.append((seed, errors[:3], text[:300]))
    assert len(failures) <= 1, failures
