"""The LLM layer: cache, call log, re-asks, concurrency and the offline provider."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pipeline.core import cpu_turn
from pipeline.core.errors import UserError
from pipeline.llm import (
    CALL_FIELDS,
    CallContext,
    LLMClient,
    LLMOutputError,
    LLMRequest,
    OfflineProvider,
    ProviderResult,
    default_providers,
    read_calls,
)

PROMPT = (
    "Mara walked down to the harbour before dawn. The fishing boats were already gone "
    "and the gulls circled over the empty quay. Tomas had left a letter under the stone "
    "by the lighthouse door!\nShe read it twice before she understood what he meant."
)
CTX = CallContext(run="harbour", task="draft:s01", unit="s01", step="draft")


class Mood(StrEnum):
    calm = "calm"
    tense = "tense"
    joyful = "joyful"
    grim = "grim"


class Beat(BaseModel):
    beat_id: str = Field(pattern=r"^[a-z0-9_]+$")
    summary: str
    moods: list[Mood] = Field(min_length=1, max_length=3)


class Scene(BaseModel):
    scene_id: str = Field(pattern=r"^[a-z0-9_]+$", max_length=40)
    title: str
    pov: str | None = None
    tension: int = Field(ge=1, le=10)
    beats: list[Beat] = Field(min_length=2, max_length=5)
    facts: list[str] = Field(default_factory=list, max_length=3)
    prose: str


class Tiny(BaseModel):
    name: str


def _request(schema: dict | None = None, attempt: int = 0, **params) -> LLMRequest:
    return LLMRequest(
        provider="offline",
        model="offline-1",
        messages=(
            {"role": "system", "content": "You write scenes. Answer with JSON: {schema}"},
            {"role": "user", "content": PROMPT},
        ),
        params={"temperature": 0.7, **params},
        output_schema=schema,
        attempt=attempt,
    )


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "cache", tmp_path / ".scenemake" / "llm_calls.jsonl"


@pytest.fixture
def client(paths) -> LLMClient:
    return LLMClient(*paths)


class ScriptedProvider:
    """Answers with the scripted texts in turn (the last one repeats), counting calls."""

    name = "scripted"

    def __init__(self, *texts: str, delay_s: float = 0.0):
        self.texts = list(texts)
        self.delay_s = delay_s
        self.calls = 0
        self.requests: list[LLMRequest] = []
        self._lock = threading.Lock()

    def generate(self, request: LLMRequest) -> ProviderResult:
        with self._lock:
            index = min(self.calls, len(self.texts) - 1)
            self.calls += 1
            self.requests.append(request)
        time.sleep(self.delay_s)
        return ProviderResult(self.texts[index], tokens_in=10, tokens_out=5, cost_usd=0.01)


def _scripted_request(schema: dict | None) -> LLMRequest:
    return LLMRequest("scripted", "m", ({"role": "user", "content": "Name someone."},), {}, schema)


# ---------------------------------------------------------------- cache and call log


def test_request_hash_is_computed_once_and_never_carried_to_a_changed_request():
    # The client, the cache and the offline model all ask for the hash: it is kept on the
    # request, which is frozen; a re-ask (dataclasses.replace) must get its own.
    import dataclasses

    from pipeline.core.hashing import canonical_json, hash_text

    request = _request({"type": "object"})
    expected = hash_text(canonical_json(json.loads(canonical_json(
        {"provider": "offline", "model": "offline-1", "messages": list(request.messages),
         "params": request.params, "output_schema": {"type": "object"}, "attempt": 0}))))
    assert request.request_hash() == expected == request.request_hash()
    assert request.canonical() is request.canonical()
    reask = dataclasses.replace(request, messages=(*request.messages,
                                                   {"role": "user", "content": "again"}))
    assert reask.request_hash() != expected
    assert reask.canonical()["messages"][-1]["content"] == "again"
    assert reask == dataclasses.replace(reask) and "_hash" not in repr(reask)


def test_same_request_twice_is_one_miss_then_one_hit(client, paths):
    first = client.complete(_request(), CTX)
    second = client.complete(_request(), CTX)

    assert (first.cache, second.cache) == ("miss", "hit")
    assert first.text == second.text and first.text.strip()
    assert first.request_hash == second.request_hash == _request().request_hash()
    calls = read_calls(paths[1])
    assert [c["cache"] for c in calls] == ["miss", "hit"]
    assert {c["request_hash"] for c in calls} == {first.request_hash}
    cache_file = paths[0] / first.request_hash[:2] / f"{first.request_hash}.json"
    entry = json.loads(cache_file.read_text())
    assert entry["request"] == _request().canonical()
    assert entry["response"]["text"] == first.text


def test_call_log_lines_carry_every_field(client, paths):
    client.complete(_request(), CTX)
    client.complete(_request(), CTX)
    miss, hit = read_calls(paths[1])
    for line in (miss, hit):
        assert set(CALL_FIELDS) <= line.keys()
        assert (line["book"], line["task"], line["scene"], line["phase"]) == (
            "harbour", "draft:s01", "s01", "draft",
        )
        assert line["provider"] == "offline" and line["model"] == "offline-1"
        assert line["attempt"] == 0 and line["try"] == 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", line["timestamp"])
        assert line["tokens_in"] > 0 and line["tokens_out"] > 0
        assert line["latency_ms"] >= 0
    assert "cost_avoided_usd" not in miss
    assert hit["tokens_in"] == miss["tokens_in"] and hit["tokens_out"] == miss["tokens_out"]
    assert hit["cost_usd"] == 0.0 and hit["cost_avoided_usd"] == miss["cost_usd"]


def test_hit_reports_cost_avoided(paths):
    client = LLMClient(*paths, providers={"scripted": ScriptedProvider("plain words")})
    assert client.complete(_scripted_request(None), CTX).cost_usd == pytest.approx(0.01)
    hit = client.complete(_scripted_request(None), CTX)
    assert hit.cache == "hit" and hit.cost_usd == 0.0
    assert read_calls(paths[1])[-1]["cost_avoided_usd"] == pytest.approx(0.01)


def test_attempt_bump_is_a_fresh_sample(client, paths):
    first = client.complete(_request(), CTX)
    bumped = client.complete(_request(attempt=1), CTX)

    assert bumped.cache == "miss"
    assert bumped.request_hash != first.request_hash
    assert bumped.text != first.text
    assert read_calls(paths[1])[-1]["attempt"] == 1


def test_params_are_part_of_the_key(client):
    client.complete(_request(), CTX)
    assert client.complete(_request(temperature=0.2), CTX).cache == "miss"


def test_corrupt_cache_entry_is_a_miss_and_is_rewritten(client, paths):
    first = client.complete(_request(), CTX)
    cache_file = paths[0] / first.request_hash[:2] / f"{first.request_hash}.json"
    for garbage in ('{"request": ', "[]", '{"request": {}, "response": {"text": 1}}', "\xff"):
        cache_file.write_text(garbage, encoding="latin-1")
        again = client.complete(_request(), CTX)
        assert again.cache == "miss"
        assert again.text == first.text  # offline is deterministic
        assert json.loads(cache_file.read_text())["response"]["text"] == first.text
    assert client.complete(_request(), CTX).cache == "hit"


def test_unknown_provider_is_a_user_error(client):
    request = LLMRequest("nosuch", "m", ({"role": "user", "content": "hi"},), {}, None)
    with pytest.raises(UserError, match="nosuch") as info:
        client.complete(request, CTX)
    assert "offline" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("turns", [False, True], ids=["plain threads", "taking turns"])
def test_concurrent_identical_requests_pay_once(paths, turns):
    # With turns (as book phases run), a thread waiting for another's identical request
    # must give its turn up, or the one that asked could never finish.
    provider = ScriptedProvider("the one answer", delay_s=0.05)
    client = LLMClient(*paths, providers={"scripted": provider})
    barrier = threading.Barrier(8)
    results: list = []

    def ask() -> None:
        barrier.wait()
        with cpu_turn.turn() if turns else contextlib.nullcontext():
            results.append(client.complete(_scripted_request(None), CTX))

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30  # a deadlock fails the test instead of hanging it
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    assert provider.calls == 1
    assert sorted(r.cache for r in results) == ["hit"] * 7 + ["miss"]
    assert {r.text for r in results} == {"the one answer"}
    assert [c["cache"] for c in read_calls(paths[1])].count("miss") == 1
    assert len(read_calls(paths[1])) == 8


# ---------------------------------------------------------------- schemas and re-asks


def test_offline_output_validates_against_a_rich_model(client):
    schema = Scene.model_json_schema()
    enum_sets = set()
    for attempt in range(30):
        response = client.complete(_request(schema, attempt=attempt), CTX, Scene.model_validate)
        scene = response.data
        assert isinstance(scene, Scene)
        assert Scene.model_validate(json.loads(response.text)) == scene
        assert len(scene.prose.split()) >= 120
        assert re.fullmatch(r"[a-z0-9_]+", scene.scene_id)
        for beat in scene.beats:
            assert len(set(beat.moods)) == len(beat.moods)  # enum lists do not repeat
            enum_sets.add(frozenset(beat.moods))
    assert any(len(s) >= 2 for s in enum_sets)


def test_offline_text_reads_like_the_prompt(client):
    text = client.complete(_request(), CTX).text
    assert "\n\n" in text  # paragraphs
    assert "{" not in text and ":" not in text  # template/schema lines are not reused
    assert "harbour" in text or "letter" in text or "quay" in text


def test_offline_is_deterministic_across_clients(tmp_path):
    texts = {
        LLMClient(tmp_path / f"c{i}", tmp_path / f"log{i}").complete(_request(), CTX).text
        for i in range(2)
    }
    assert len(texts) == 1


def test_reask_after_invalid_json_then_cache_hit(paths):
    provider = ScriptedProvider("not json at all", '{"name": "Mara"}')
    client = LLMClient(*paths, providers={"scripted": provider})
    request = _scripted_request(Tiny.model_json_schema())

    response = client.complete(request, CTX, Tiny.model_validate)
    assert response.data == Tiny(name="Mara")
    assert response.cache == "miss" and response.tries == 2
    assert response.request_hash == request.request_hash()
    calls = read_calls(paths[1])
    assert [(c["try"], c["cache"]) for c in calls] == [(0, "miss"), (1, "miss")]
    assert calls[0]["request_hash"] == request.request_hash()
    assert calls[1]["request_hash"] != request.request_hash()

    # The re-ask carried the bad answer and the error.
    reask = provider.requests[1]
    assert reask.messages[: len(request.messages)] == request.messages
    assert reask.messages[-2] == {"role": "assistant", "content": "not json at all"}
    assert "not valid JSON" in reask.messages[-1]["content"]

    again = client.complete(request, CTX, Tiny.model_validate)
    assert again.cache == "hit" and again.data == Tiny(name="Mara")
    assert provider.calls == 2
    assert read_calls(paths[1])[-1]["cache"] == "hit"


def test_reask_on_schema_violation_names_the_json_path(paths):
    provider = ScriptedProvider('{"name": 7}', '{"name": "Ines"}')
    client = LLMClient(*paths, providers={"scripted": provider})
    response = client.complete(_scripted_request(Tiny.model_json_schema()), CTX)
    assert response.data == {"name": "Ines"}  # no validate: the parsed JSON
    assert "$.name" in provider.requests[1].messages[-1]["content"]


def test_validate_callable_failure_is_reasked(paths):
    def no_mara(data):
        if data["name"] == "Mara":
            raise ValueError("Mara is taken")
        return data["name"]

    provider = ScriptedProvider('{"name": "Mara"}', '{"name": "Tomas"}')
    client = LLMClient(*paths, providers={"scripted": provider})
    request = _scripted_request(Tiny.model_json_schema())
    response = client.complete(request, CTX, no_mara)
    assert response.data == "Tomas"
    reask = provider.requests[1]
    # the finding goes to the model; the refused answer does not (a small model repeats it)
    assert reask.messages[:-1] == request.messages
    assert "refused: Mara is taken" in reask.messages[-1]["content"]
    assert reask.params["seed"] != request.params.get("seed")  # a try of its own
    # every try, its seed and the finding that refused it: in the answer (for the ledger),
    # in the call log, and with the cached answer
    seeds = [r.params.get("seed") for r in provider.requests]
    assert [(t["try"], t["seed"], t["finding"]) for t in response.history] == [
        (0, seeds[0], "Mara is taken"), (1, seeds[1], None)]
    calls = read_calls(paths[1])
    assert [(c["try"], c.get("seed"), c.get("finding")) for c in calls] == [
        (0, seeds[0], "Mara is taken"), (1, seeds[1], None)]
    again = client.complete(request, CTX, no_mara)
    assert again.cache == "hit" and again.history == response.history


def test_an_answer_cut_off_at_max_tokens_is_re_asked_shorter_without_it(paths):
    cut = '{"name": "Mara ' + "and so on " * 50
    provider = ScriptedProvider(cut, '{"name": "Tomas"}')
    client = LLMClient(*paths, providers={"scripted": provider})
    request = _scripted_request(Tiny.model_json_schema())
    assert client.complete(request, CTX, Tiny.model_validate).data == Tiny(name="Tomas")
    feedback = provider.requests[1].messages[-1]["content"]
    assert "cut off before its JSON ended" in feedback and "write less" in feedback
    assert provider.requests[1].messages[:-1] == request.messages


def test_all_tries_invalid_raises_naming_the_task(paths):
    provider = ScriptedProvider('{"nom": "x"}')
    client = LLMClient(*paths, providers={"scripted": provider}, max_reasks=2)
    request = _scripted_request(Tiny.model_json_schema())
    with pytest.raises(LLMOutputError) as info:
        client.complete(request, CTX, Tiny.model_validate)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "draft:s01" in message and "name" in message and "\n" not in message
    calls = read_calls(paths[1])
    assert [c["try"] for c in calls] == [0, 1, 2]
    assert all(c["cache"] == "miss" for c in calls)
    # Nothing invalid was cached: asking again goes back to the provider.
    with pytest.raises(LLMOutputError):
        client.complete(request, CTX, Tiny.model_validate)
    assert provider.calls == 6


def test_invalid_output_schema_is_a_user_error(client):
    with pytest.raises(UserError, match="output_schema"):
        client.complete(_request({"type": 12}), CTX)


# ---------------------------------------------------------------- providers


def test_default_providers_latency_is_not_in_the_key(paths, tmp_path):
    slow = LLMClient(*paths, providers=default_providers({"latency_ms": 30}))
    assert isinstance(slow.providers["offline"], OfflineProvider)
    start = time.perf_counter()
    miss = slow.complete(_request(), CTX)
    assert time.perf_counter() - start >= 0.03
    fast = LLMClient(paths[0], tmp_path / "other.jsonl")  # same cache, no latency setting
    hit = fast.complete(_request(), CTX)
    assert hit.cache == "hit" and hit.text == miss.text


def test_a_base_url_that_is_not_http_fails_at_once_without_retrying():
    # Waiting cannot fix a URL: no backoff, one clear error (a config check catches it
    # earlier for books; this is the provider's own guard for every family).
    from pipeline.llm.providers.openai import OpenAICompatProvider, ProviderError, RetryPolicy

    slept: list[float] = []
    provider = OpenAICompatProvider(
        "ftp://127.0.0.1:9/v1", retry=RetryPolicy(max_attempts=5, base_delay_s=0.01,
                                                  max_delay_s=0.01, max_total_s=5),
        sleep=slept.append, timeout_s=5)
    request = LLMRequest(provider="openai", model="m",
                         messages=({"role": "user", "content": "hi"},))
    with pytest.raises(ProviderError, match=r"must start with http:// or https://"):
        provider.generate(request)
    assert slept == []
