"""What a real model broke (issue #12), in the client: lenient JSON parsing, a fresh sample
on a rerun (the seed sent follows the attempt), and no repeated request in a re-ask chain."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.llm import (
    CallContext,
    LLMClient,
    LLMRequest,
    ProviderResult,
    build_client,
    read_calls,
)
from pipeline.llm.request import derive_seed

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}},
          "required": ["name"], "additionalProperties": False}
CTX = CallContext(run="b", task="state_repair:ch001_sc001", unit="ch001_sc001",
                  step="state_repair")


class Scripted:
    """Answers with the scripted texts in turn (the last repeats); keeps what it was sent."""

    name = "scripted"

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.requests: list[LLMRequest] = []

    def generate(self, request: LLMRequest) -> ProviderResult:
        self.requests.append(request)
        return ProviderResult(self.texts[min(len(self.requests), len(self.texts)) - 1], 10, 5)

    @property
    def seeds(self) -> list:
        return [r.params.get("seed") for r in self.requests]


def request(attempt: int = 0, seed: int | None = 7, schema: dict | None = SCHEMA) -> LLMRequest:
    params = {"temperature": 0.8} | ({"seed": seed} if seed is not None else {})
    return LLMRequest("scripted", "m", ({"role": "user", "content": "Name the keeper."},),
                      params, schema, attempt)


def client(tmp_path, provider: Scripted, max_reasks: int = 2) -> LLMClient:
    return LLMClient(tmp_path / "cache", tmp_path / "calls.jsonl", {"scripted": provider},
                     max_reasks=max_reasks)


# -- lenient parse ----------------------------------------------------------------------
def test_raw_control_characters_inside_strings_are_accepted_first_time(tmp_path):
    provider = Scripted('{"name": "Mara\nof the\tlighthouse"}')
    response = client(tmp_path, provider).complete(request(), CTX)
    assert response.tries == 1 and response.data == {"name": "Mara\nof the\tlighthouse"}
    assert len(provider.requests) == 1


@pytest.mark.parametrize("bad", ["{'name': 'Mara'}", '{"name": "Mara",}', '{"name": "Mara"} x',
                                 '{"name": NaN}'])
def test_nothing_more_lenient_than_control_characters(tmp_path, bad):
    provider = Scripted(bad, '{"name": "Ines"}')
    response = client(tmp_path, provider).complete(request(), CTX)
    assert response.tries == 2 and response.data == {"name": "Ines"}


# -- fresh samples on rerun -------------------------------------------------------------
def test_attempt_zero_sends_the_configured_seed(tmp_path):
    provider = Scripted('{"name": "Mara"}')
    response = client(tmp_path, provider).complete(request(0), CTX)
    assert provider.seeds == [7] and response.seed == 7
    assert provider.requests[0] == request(0)  # the request as configured, unchanged
    hit = client(tmp_path, provider).complete(request(0), CTX)
    assert hit.cache == "hit" and hit.seed == 7 and len(provider.requests) == 1


def test_a_rerun_sends_a_seed_of_its_own_and_records_it(tmp_path):
    provider = Scripted('{"name": "Mara"}')
    llm = client(tmp_path, provider)
    answers = [llm.complete(request(attempt), CTX) for attempt in (0, 1, 2)]
    assert len(set(provider.seeds)) == 3 and provider.seeds[0] == 7
    assert [a.seed for a in answers] == provider.seeds
    assert provider.seeds[1:] == [derive_seed(7, 1), derive_seed(7, 2)]  # deterministic
    # the logged request (the content address) still names the configured seed
    for attempt, answer in enumerate(answers):
        assert answer.request_hash == request(attempt).request_hash()
    again = client(tmp_path, provider).complete(request(2), CTX)
    assert again.cache == "hit" and again.seed == provider.seeds[2]


def test_a_rerun_without_a_configured_seed_still_varies(tmp_path):
    provider = Scripted('{"name": "Mara"}')
    llm = client(tmp_path, provider)
    llm.complete(request(0, seed=None), CTX)
    llm.complete(request(1, seed=None), CTX)
    assert provider.seeds[0] is None and isinstance(provider.seeds[1], int)


def test_the_http_body_carries_the_derived_seed(tmp_path):
    bodies: list[dict] = []

    def server(req: httpx.Request) -> httpx.Response:
        if req.url.path.startswith("/extras/"):  # no tokenizer endpoint here
            return httpx.Response(404)
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "Hello."}}]})

    llm = build_client(tmp_path, {"base_url": "http://mock.test/v1"},
                       transport=httpx.MockTransport(server))
    for attempt in (0, 1):
        llm.complete(LLMRequest("openai", "m", ({"role": "user", "content": "Hi."},),
                                {"seed": 7}, None, attempt), CTX)
    assert [b["seed"] for b in bodies] == [7, derive_seed(7, 1)]


# -- no repeated request in a re-ask chain --------------------------------------------------
def test_a_repeated_wrong_answer_never_repeats_the_request(tmp_path):
    provider = Scripted('{"nom": "x"}', '{"nom": "x"}', '{"name": "Tomas"}')
    response = client(tmp_path, provider, max_reasks=2).complete(request(), CTX)
    assert response.tries == 3 and response.data == {"name": "Tomas"}
    calls = read_calls(tmp_path / "calls.jsonl")
    assert [c["try"] for c in calls] == [0, 1, 2]
    assert len({c["request_hash"] for c in calls}) == 3
    assert len(set(provider.seeds)) == 3
    assert response.seed == provider.seeds[2]
    # the original request now answers from the cache, with the seed that answered
    hit = client(tmp_path, provider).complete(request(), CTX)
    assert hit.cache == "hit" and hit.seed == provider.seeds[2]
