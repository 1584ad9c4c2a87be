"""Streamed answers and the idle timeout: a stalled or cut-off answer is retried, a long one
that keeps flowing is not cut; a server that does not stream still works; what an endpoint
supports is remembered in the workspace (.scenemake/endpoints.json)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from pipeline.core.errors import UserError
from pipeline.llm import CallContext, LLMRequest, build_client
from pipeline.llm.endpoints import EndpointMemory
from pipeline.llm.providers.openai import OpenAICompatProvider
from pipeline.llm.retry import RetryPolicy

BASE = "http://mock.test/v1"
SSE = {"Content-Type": "text/event-stream"}
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def event(obj: dict | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()


def piece(text: str, finish: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text},
                               "finish_reason": finish}]})


def answer_events(words: list[str], usage: bool = True) -> list[bytes]:
    out = [piece(w) for w in words] + [piece("", "stop")]
    if usage:
        out.append(event({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}))
    return out + [event("[DONE]")]


def paced(chunks: list[bytes], gap_s: float = 0.0) -> Iterator[bytes]:
    for chunk in chunks:
        if gap_s:
            time.sleep(gap_s)
        yield chunk


class Server:
    """Each request takes the next scripted answer (a callable making the response)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/extras/"):  # no tokenizer endpoint here
            return httpx.Response(404)
        self.bodies.append(json.loads(request.content))
        return self.answers[min(len(self.bodies), len(self.answers)) - 1]()


def provider(server, idle_s: float = 5.0, **kw) -> OpenAICompatProvider:
    return OpenAICompatProvider(BASE, transport=httpx.MockTransport(server), seed=0,
                                idle_timeout_s=idle_s, sleep=lambda s: None,
                                retry=RetryPolicy(max_attempts=4, base_delay_s=0.01), **kw)


def request(text: str = "Say hello.", schema: dict | None = None) -> LLMRequest:
    return LLMRequest("openai", "m", ({"role": "user", "content": text},),
                      {"max_tokens": 50}, schema)


def test_a_streamed_answer_is_assembled_with_its_usage():
    server = Server(lambda: httpx.Response(200, headers=SSE,
                                           content=b"".join(answer_events(["Hel", "lo", "."]))))
    result = provider(server).generate(request())
    assert (result.text, result.tokens_in, result.tokens_out) == ("Hello.", 9, 3)
    assert server.bodies[0]["stream"] is True
    assert server.bodies[0]["stream_options"] == {"include_usage": True}


def test_without_usage_the_pieces_are_counted():
    server = Server(lambda: httpx.Response(
        200, headers=SSE, content=b"".join(answer_events(["a", "b", "c", "d"], usage=False))))
    assert provider(server).generate(request()).tokens_out == 4


@pytest.mark.parametrize("cut", [[piece("Hel"), piece("lo")],  # the connection just ended
                                 [piece("Hel"), event("[DONE]")]],  # dropped with a [DONE]
                         ids=["ended", "done-early"])
def test_a_cut_off_stream_is_retried(cut):
    server = Server(lambda: httpx.Response(200, headers=SSE, content=b"".join(cut)),
                    lambda: httpx.Response(200, headers=SSE,
                                           content=b"".join(answer_events(["Hello."]))))
    assert provider(server).generate(request()).text == "Hello."
    assert len(server.bodies) == 2


def test_a_stalled_stream_that_only_pings_is_retried():
    stalled = [piece("Hel")] + [b": ping\n\n"] * 6 + [piece("lo", "stop")]
    server = Server(lambda: httpx.Response(200, headers=SSE, content=paced(stalled, 0.06)),
                    lambda: httpx.Response(200, headers=SSE,
                                           content=b"".join(answer_events(["Hello."]))))
    llm = provider(server, idle_s=0.2)
    assert llm.generate(request()).text == "Hello."
    assert len(server.bodies) == 2


def test_a_long_answer_that_keeps_flowing_is_never_cut():
    words = [f"w{i} " for i in range(20)]
    server = Server(lambda: httpx.Response(200, headers=SSE,
                                           content=paced(answer_events(words), 0.03)))
    llm = provider(server, idle_s=0.2)  # the whole answer takes longer than that
    assert llm.generate(request()).text == "".join(words)
    assert len(server.bodies) == 1


def test_a_server_that_does_not_stream_still_works_and_is_remembered():
    whole = {"choices": [{"message": {"content": "Hello."}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    server = Server(lambda: httpx.Response(200, json=whole))
    llm = provider(server)
    assert llm.generate(request()).tokens_out == 2
    assert llm.generate(request("Again.")).text == "Hello."
    assert server.bodies[0]["stream"] is True and "stream" not in server.bodies[1]


# -- a real socket: the idle timeout of a silent connection --------------------------------
class _Stalling(BaseHTTPRequestHandler):
    """Sends one piece of an answer (or all of it but the [DONE]), then nothing, not even a
    ping, for 5 s, then hangs up."""

    calls = 0
    complete = False

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        if self.path.startswith("/extras/"):  # no tokenizer endpoint here
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).calls += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(piece("Hel"))
        if type(self).complete:
            self.wfile.write(piece("lo.", "stop"))
        self.wfile.flush()
        time.sleep(5)

    def log_message(self, *args):
        pass


def test_a_silent_connection_mid_answer_times_out_after_the_idle_time(monkeypatch):
    monkeypatch.setattr(_Stalling, "calls", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = OpenAICompatProvider(f"http://127.0.0.1:{server.server_address[1]}/v1",
                                   timeout_s=60, idle_timeout_s=0.3, sleep=lambda s: None,
                                   retry=RetryPolicy(max_attempts=1))
        with pytest.raises(UserError) as err:
            llm.generate(request())
        # the idle timeout noticed the silence (not timeout_s, not the hang-up 5 s later)
        assert "the answer stalled (nothing for 0.3s)" in str(err.value)
        assert _Stalling.calls == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_complete_answer_on_a_line_left_open_is_taken(monkeypatch):
    monkeypatch.setattr(_Stalling, "complete", True)
    monkeypatch.setattr(_Stalling, "calls", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = OpenAICompatProvider(f"http://127.0.0.1:{server.server_address[1]}/v1",
                                   timeout_s=60, idle_timeout_s=0.3, sleep=lambda s: None,
                                   retry=RetryPolicy(max_attempts=1))
        result = llm.generate(request())  # finish_reason came; no [DONE], no hang-up
        assert result.text == "Hello." and _Stalling.calls == 1
    finally:
        server.shutdown()
        server.server_close()


# -- what an endpoint supports, remembered ---------------------------------------------------
def _schema_server() -> Server:
    def answer() -> httpx.Response:
        fmt = server.bodies[-1]["response_format"]["type"]
        if fmt == "json_schema":
            return httpx.Response(500, json={"error": {"message": "Input should be 'text' or "
                                                                  "'json_object'"}})
        return httpx.Response(200, headers=SSE,
                              content=b"".join(answer_events(['{"name": "Mara"}'])))

    server = Server(answer)
    return server


def test_json_mode_and_streaming_are_remembered_in_the_workspace(tmp_path):
    server = _schema_server()
    ctx = CallContext(task="t")
    first = build_client(tmp_path, {"base_url": BASE}, transport=httpx.MockTransport(server))
    assert first.complete(request("One.", SCHEMA), ctx).data == {"name": "Mara"}
    assert [b["response_format"]["type"] for b in server.bodies] == ["json_schema",
                                                                     "json_object"]
    saved = json.loads((tmp_path / "endpoints.json").read_text())
    facts = saved["endpoints"][BASE]["m"]
    speed = facts.pop("speed")  # how fast it answered here, for doit estimate
    assert facts == {"json_mode": "json_object", "stream": True, "stream_usage": True}
    assert speed["answers"] == 1
    assert speed["tokens_per_s"] > 0 and speed["prompt_tokens_per_s"] > 0
    # the next run (a new client) asks json_object straight away: no probe, no HTTP 500
    second = build_client(tmp_path, {"base_url": BASE}, transport=httpx.MockTransport(server))
    assert second.complete(request("Two.", SCHEMA), ctx).data == {"name": "Mara"}
    assert [b["response_format"]["type"] for b in server.bodies[2:]] == ["json_object"]


def test_an_unreadable_memory_is_an_empty_one(tmp_path):
    path = tmp_path / "endpoints.json"
    path.write_text("{not json")
    memory = EndpointMemory(path)
    assert memory.get(BASE, "m") == {}
    memory.learn(BASE, "m", json_mode="json_object")
    assert EndpointMemory(path).get(BASE, "m") == {"json_mode": "json_object"}
    EndpointMemory(path).learn(BASE, "other", stream=False)  # another client, same file
    memory.learn(BASE, "m", stream=True)
    assert json.loads(path.read_text())["endpoints"][BASE] == {
        "m": {"json_mode": "json_object", "stream": True}, "other": {"stream": False}}


def test_without_usage_the_prompt_is_counted_by_the_models_tokenizer(tmp_path):
    """llama.cpp's Python server streams no usage: its /extras/tokenize/count (the model's
    own tokenizer) counts the prompt; a server without it is asked once, then estimated."""
    counted: list[dict] = []

    def llama(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/extras/tokenize/count":
            counted.append(json.loads(request.content))
            return httpx.Response(200, json={"count": 42})
        return httpx.Response(200, headers=SSE,
                              content=b"".join(answer_events(["Hel", "lo."], usage=False)))

    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."})
    llm = provider(llama)
    result = llm.generate(LLMRequest("openai", "m", messages))
    assert (result.tokens_in, result.tokens_out) == (42, 2)
    assert counted == [{"input": "<|im_start|>system\nBe brief.<|im_end|>\n"
                                 "<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\n"}]

    other = Server(lambda: httpx.Response(
        200, headers=SSE, content=b"".join(answer_events(["Hel", "lo."], usage=False))))
    asked: list[str] = []

    def no_tokenizer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return other(request)

    llm = provider(no_tokenizer)
    for _ in range(2):
        assert llm.generate(LLMRequest("openai", "m", messages)).tokens_in > 0  # estimated
    assert asked.count("/extras/tokenize/count") == 1  # a 404 is remembered
