"""The HTTP clients' failure paths through httpx.MockTransport (no server, quick suite):
429 / Retry-After (capped), 5xx, truncated or non-JSON bodies, non-retryable 4xx, the
json_schema -> json_object fallback, and the scenario client's retries on the same policy."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from pipeline.core.errors import UserError
from pipeline.llm import CallContext, LLMRequest, build_client, read_calls
from pipeline.llm.providers.openai import OpenAICompatProvider
from pipeline.llm.retry import RetryPolicy
from pipeline.scenario.client import AssistantClient

BASE = "http://mock.test/v1"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}},
          "required": ["name"], "additionalProperties": False}


def completion(text: str = "Hello, keeper.", usage: bool = True) -> dict:
    body: dict = {"choices": [{"message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}]}
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 4}
    return body


class Server:
    """A scripted server: each request takes the next answer (the last one repeats)."""

    def __init__(self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request) if callable(answer) else answer

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def ok(text: str = "Hello, keeper.") -> httpx.Response:
    return httpx.Response(200, json=completion(text))


def provider(server: Server, slept: list[float] | None = None, **kw) -> OpenAICompatProvider:
    retry = kw.pop("retry", RetryPolicy(max_attempts=6, base_delay_s=0.01, max_delay_s=0.05,
                                        max_total_s=60, max_retry_after_s=2.0))
    return OpenAICompatProvider(BASE, retry=retry, seed=0, transport=httpx.MockTransport(server),
                                sleep=(slept if slept is not None else []).append, **kw)


def request(schema: dict | None = None, text: str = "Say hello.") -> LLMRequest:
    return LLMRequest("openai", "m", ({"role": "user", "content": text},),
                      {"temperature": 0.0, "max_tokens": 50, "seed": 1}, schema)


def test_429_retry_after_is_honoured_and_capped():
    server = Server(httpx.Response(429, headers={"Retry-After": "1"}),
                    httpx.Response(429, headers={"Retry-After": "3600"}), ok())
    slept: list[float] = []
    result = provider(server, slept).generate(request())
    assert result.text == "Hello, keeper." and (result.tokens_in, result.tokens_out) == (11, 4)
    assert len(server.requests) == 3
    assert slept[0] >= 1.0  # the server's Retry-After, longer than the backoff
    assert slept[1] == 2.0  # an hour asked for, the policy's cap waited


def test_5xx_then_success_is_paid_once():
    server = Server(httpx.Response(503, json={"error": {"message": "loading"}}),
                    httpx.Response(502, text="bad gateway"), ok())
    slept: list[float] = []
    assert provider(server, slept).generate(request()).text == "Hello, keeper."
    assert len(server.requests) == 3 and len(slept) == 2


@pytest.mark.parametrize("body", [b'{"choices": [{"message": {"content": "Hel',
                                  b"<html>upstream error</html>", b"",
                                  b'{"choices": []}'],
                         ids=["truncated", "html", "empty", "no choice"])
def test_a_truncated_or_non_json_body_is_retried(body):
    server = Server(httpx.Response(200, content=body,
                                   headers={"Content-Type": "application/json"}), ok())
    assert provider(server).generate(request()).text == "Hello, keeper."
    assert len(server.requests) == 2


def test_attempts_are_capped_with_the_last_error():
    server = Server(httpx.Response(503, json={"error": "still loading"}))
    with pytest.raises(UserError) as err:
        provider(server, retry=RetryPolicy(max_attempts=3, base_delay_s=0.01)).generate(
            request())
    assert "gave up after 3 attempt(s)" in str(err.value)
    assert "still loading" in str(err.value) and len(server.requests) == 3


def test_total_time_is_capped_counting_retry_after():
    server = Server(httpx.Response(429, headers={"Retry-After": "2"}))
    slept: list[float] = []
    with pytest.raises(UserError, match="gave up"):
        provider(server, slept, retry=RetryPolicy(max_attempts=50, max_total_s=5,
                                                  max_retry_after_s=10)).generate(request())
    assert slept == [2.0, 2.0] and len(server.requests) == 3


def test_a_4xx_fails_at_once_with_the_servers_message_and_no_secret(monkeypatch):
    monkeypatch.setenv("SCENEMAKE_TEST_KEY", "sk-secret-4242")
    server = Server(httpx.Response(400, json={"error": {
        "message": "bad request: key sk-secret-4242 may not set max_tokens=50"}}))
    slept: list[float] = []
    with pytest.raises(UserError) as err:
        provider(server, slept, api_key_env="SCENEMAKE_TEST_KEY").generate(request())
    text = str(err.value)
    assert "400 from http://mock.test/v1" in text and "may not set max_tokens=50" in text
    assert "sk-secret-4242" not in text and "\n" not in text
    assert len(server.requests) == 1 and slept == []
    assert server.requests[0].headers["Authorization"] == "Bearer sk-secret-4242"


def test_json_schema_falls_back_to_json_object_once():
    def answer(req: httpx.Request) -> httpx.Response:
        fmt = json.loads(req.content)["response_format"]
        if fmt["type"] == "json_schema":
            return httpx.Response(500, json={"error": {"message": "Input should be 'text' or "
                                                                  "'json_object'"}})
        assert fmt["schema"] == SCHEMA
        return ok('{"name": "Mara"}')

    server = Server(answer)
    slept: list[float] = []
    llm = provider(server, slept)
    assert llm.generate(request(SCHEMA)).text == '{"name": "Mara"}'
    assert llm.generate(request(SCHEMA, "Again.")).text == '{"name": "Mara"}'
    kinds = [b["response_format"]["type"] for b in server.bodies]
    assert kinds == ["json_schema", "json_object", "json_object"]  # probed once
    assert slept == []  # a fallback is no retry


def test_build_client_hands_the_transport_to_the_http_provider(tmp_path):
    server = Server(httpx.Response(500, text="warming up"), ok('{"name": "Ines"}'))
    client = build_client(tmp_path, {"base_url": BASE, "response_format": "json_object",
                                     "max_attempts": 3},
                          transport=httpx.MockTransport(server))
    client.providers["openai"]._sleep = lambda s: None  # no real backoff in a quick test
    response = client.complete(request(SCHEMA), CallContext(task="t"))
    assert response.data == {"name": "Ines"} and len(server.requests) == 2
    again = client.complete(request(SCHEMA), CallContext(task="t"))
    assert again.cache == "hit" and len(server.requests) == 2
    assert [c["cache"] for c in read_calls(tmp_path / "llm_calls.jsonl")] == ["miss", "hit"]


# -- the scenario runner's assistant client, on the same policy --------------------------
ANSWER = {"session_id": "s1", "turn": 1, "reply": "42 items are in stock.", "entries": [],
          "capability": {"status": "answered", "detail": None}, "debug": {},
          "semantic_memory": {"active_result_set_id": None}}


def assistant(server: Server, slept: list[float], retries: int = 3) -> AssistantClient:
    return AssistantClient("http://assistant.test", retries=retries, sleep=slept.append,
                           seed=0, transport=httpx.MockTransport(server))


def test_scenario_client_retries_5xx_and_not_json_then_answers():
    server = Server(httpx.Response(503, json={"error": "warming up"}),
                    httpx.Response(200, text="<html>oops</html>"), httpx.Response(200, json=ANSWER))
    slept: list[float] = []
    result = assistant(server, slept).send(None, "How many widgets?")
    assert result.ok and result.attempts == 3 and result.data["reply"].startswith("42")
    assert len(slept) == 2 and all(0 < s <= 4.0 for s in slept)


def test_scenario_client_caps_retry_after_like_the_provider():
    server = Server(httpx.Response(429, headers={"Retry-After": "3600"}),
                    httpx.Response(200, json=ANSWER))
    slept: list[float] = []
    client = assistant(server, slept)
    assert client.send(None, "How many widgets?").ok
    assert slept == [client.policy.max_retry_after_s] == [4.0]


def test_scenario_client_gives_up_on_a_4xx_at_once():
    server = Server(httpx.Response(404, json={"error": "no such session"}))
    slept: list[float] = []
    result = assistant(server, slept).session("nope")
    assert not result.ok and result.error_kind == "http_4xx" and result.attempts == 1
    assert "no such session" in result.error and slept == []


def test_an_outage_during_the_probe_teaches_nothing():
    server = Server(httpx.Response(500, json={"error": {"message": "overloaded"}}))
    llm = provider(server, retry=RetryPolicy(max_attempts=2, base_delay_s=0.01))
    with pytest.raises(UserError, match="overloaded"):
        llm.generate(request(SCHEMA))
    # json_object was tried for this request, but nothing proved the endpoint needs it
    assert [b["response_format"]["type"] for b in server.bodies] == [
        "json_schema", "json_object", "json_object"]
    assert llm.memory.get(BASE, "m") == {}
