"""The OpenAI-compatible chat completions provider (OpenAI, vLLM, llama.cpp, Ollama, ...).

Answers are streamed (``stream: true``, usage asked for with ``stream_options``), so the
timeout can be an idle timeout: once an answer has begun, ``idle_timeout_s`` without a new
piece of it means it stalled, and a stream that ends before its ``finish_reason`` was cut
off; both are retried within seconds, while a long answer that keeps flowing is never cut.
A server that does not stream still works: ``timeout_s`` for its answer to begin, then the
same idle timeout while its body arrives (a body that stops half-way, the socket left
open, is a stall too).

Retries 429, 5xx, timeouts, broken connections and truncated or non-JSON bodies on the one
policy of ``pipeline/llm/retry.py``. Other 4xx are reported at once with the server's
message. What the endpoint supports (json_schema or json_object, streaming, usage in the
stream) is learnt once and remembered in the workspace (``pipeline/llm/endpoints.py``).
The API key is read from an environment variable at call time and never appears in a
repr, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable

import httpx

from pipeline.core.errors import UserError

from .. import retry as defaults
from ..endpoints import FILE_NAME, EndpointMemory
from ..ratelimit import RateLimiter
from ..request import LLMRequest, ProviderResult
from ..retry import RetryPolicy, retry_after_seconds
from .offline import estimate_tokens

__all__ = ["OpenAICompatProvider", "ProviderError", "RetryPolicy", "retry_after_seconds"]


def chatml(messages: list) -> str:
    """A prompt as the ChatML chat template frames it (SmolLM2's): what the model reads."""
    text = "".join(f"<|im_start|>{m.get('role', 'user')}\n{m.get('content', '')}<|im_end|>\n"
                   for m in messages if isinstance(m, dict))
    return text + "<|im_start|>assistant\n"


class ProviderError(UserError):
    """The provider could not give an answer (after retries, or a non-retryable error)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None,
                 throttled: bool = False, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled
        self.status = status


class _Refused(ProviderError):
    """A 4xx: the request itself is wrong (or asks for something the server lacks)."""


class OpenAICompatProvider:
    """Chat completions over HTTP; one instance (and limiter) per endpoint, shared by threads.

    ``timeout_s``: connecting, and waiting for an answer to begin (or for the whole answer
    of a server that does not stream). ``idle_timeout_s``: the longest silence inside a
    streamed answer. ``memory`` remembers what the endpoint supports (None: this process
    only). ``transport`` is the test seam (``httpx.MockTransport``).
    """

    name = "openai"

    def __init__(self, base_url: str, *, api_key_env: str | None = None,
                 timeout_s: float = defaults.TIMEOUT_S,
                 idle_timeout_s: float = defaults.IDLE_TIMEOUT_S,
                 response_format: str = "auto", stream: bool = True,
                 retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None,
                 transport: httpx.BaseTransport | None = None,
                 memory: EndpointMemory | None = None, memory_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        # what the endpoint supports and how fast it answers is remembered under this key
        # (the base URL; a local server, on a new port each run, is ``local``)
        self.key = memory_key or self.base_url
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.response_format = response_format
        self.stream = stream
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter()
        self.memory = memory or EndpointMemory(None)
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(base_url={self.base_url!r})"

    # -- what the endpoint supports --------------------------------------------------------
    def _json_mode(self, model: str) -> str | None:
        """json_schema or json_object; None while ``auto`` has not learnt it yet."""
        if self.response_format != "auto":
            return self.response_format
        return self.memory.get(self.key, model).get("json_mode")

    def _streams(self, model: str) -> bool:
        return self.stream and self.memory.get(self.key, model).get("stream") is not False

    # -- the request ----------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ProviderError(f"environment variable {self.api_key_env} is not set",
                                    fix="export it, or change endpoint.api_key_env in book.json")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            text = text.replace(key, "***")
        return " ".join(text.split())[:300]

    def _body(self, request: LLMRequest, mode: str | None, stream: bool) -> dict:
        body = {"model": request.model, "messages": list(request.messages)}
        for name in ("temperature", "max_tokens", "seed"):
            if request.params.get(name) is not None:
                body[name] = request.params[name]
        schema = request.output_schema
        if schema is not None:
            if mode == "json_object":
                body["response_format"] = {"type": "json_object", "schema": schema}
            else:
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "output", "schema": schema, "strict": False}}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _post(self, body: dict) -> ProviderResult:
        """One HTTP attempt; raises _Retryable or ProviderError."""
        url = f"{self.base_url}/chat/completions"
        sent = time.monotonic()
        begun = False  # the headers came: from here a silence is a stall
        try:
            with self._http.stream("POST", url, json=body, headers=self._headers()) as resp:
                begun = True
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for_status(resp)
                if "text/event-stream" in resp.headers.get("content-type", ""):
                    return self._read_stream(resp, body, sent)
                self._idle_from_now(resp)
                resp.read()
                result = self._read_whole(resp, body, sent)
                if body.get("stream"):  # asked to stream, answered in one piece: remember
                    self.memory.learn(self.key, body["model"], stream=False)
                return result
        except httpx.TimeoutException:
            if begun:
                raise _Retryable("the answer stalled (nothing for "
                                 f"{self.idle_timeout_s:g}s)") from None
            raise _Retryable(f"no answer within {self.timeout_s:g}s") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # waiting cannot fix it
            raise ProviderError(f"{url} is not a URL scenemake can call ({exc}); "
                                "base_url must start with http:// or https://") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None

    def _raise_for_status(self, resp: httpx.Response) -> None:
        status = resp.status_code
        if status == 429:
            raise _Retryable("429 Too Many Requests", retry_after_seconds(
                resp.headers.get("retry-after")), throttled=True, status=status)
        if status >= 500:
            raise _Retryable(f"{status} {self._server_message(resp)}",
                             retry_after_seconds(resp.headers.get("retry-after")),
                             status=status)
        raise _Refused(f"{status} from {self.base_url}: {self._server_message(resp)}")

    def _read_whole(self, resp: httpx.Response, body: dict, sent: float) -> ProviderResult:
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable(f"unreadable answer body ({type(exc).__name__})") from None
        return self._result(body, text, data.get("usage"), None,
                            answer_s=time.monotonic() - sent)

    def _idle_from_now(self, resp: httpx.Response) -> None:
        """The request waited up to timeout_s for the answer to begin; from here on a
        silent connection is a stalled one. (httpcore reads this dict when the body
        starts.)"""
        timeouts = resp.request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = self.idle_timeout_s

    def _read_stream(self, resp: httpx.Response, body: dict, sent: float) -> ProviderResult:
        """Collect a server-sent-events answer, watching for stalls and truncation."""
        self._idle_from_now(resp)
        last_piece = time.monotonic()
        first: float | None = None  # when the first piece of the answer came
        begun, finished, usage = False, None, None
        parts: list[str] = []
        pieces = 0
        lines = resp.iter_lines()
        while True:
            try:
                line = next(lines, None)
            except httpx.ReadTimeout:
                if finished is not None:  # complete; the server just kept the line open
                    break
                raise _Retryable("the answer stalled (nothing for "
                                 f"{self.idle_timeout_s:g}s)") from None
            if line is None:
                break
            now = time.monotonic()
            # Keep-alive comments (": ping") are not progress: a server whose generation
            # hangs may still ping. Before the first piece, the wait is timeout_s.
            limit = self.idle_timeout_s if begun else self.timeout_s
            if now - last_piece > limit:
                if finished is not None:
                    break
                raise _Retryable(f"the answer stalled (nothing for {limit:g}s)")
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                raise _Retryable("unreadable piece of a streamed answer") from None
            if not isinstance(chunk, dict):
                raise _Retryable("unreadable piece of a streamed answer")
            if chunk.get("error"):
                err = chunk["error"]
                msg = err.get("message") if isinstance(err, dict) else err
                raise _Retryable(f"the server failed mid-answer: {self._scrub(str(msg))}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or choice.get("message") or {}
                if isinstance(delta.get("content"), str) and delta["content"]:
                    parts.append(delta["content"])
                    pieces += 1
                    if first is None:
                        first = time.monotonic()
                if choice.get("finish_reason"):
                    finished = choice["finish_reason"]
            begun, last_piece = True, time.monotonic()
        if finished is None:
            # The stream ended (or a server said [DONE] as it dropped the request) before
            # the answer said it was complete: a truncated answer, never a valid one.
            raise _Retryable(f"the streamed answer was cut off after {pieces} piece(s)")
        self.memory.learn(self.key, body["model"], stream=True,
                          stream_usage=usage is not None)
        done = time.monotonic()
        return self._result(body, "".join(parts), usage, pieces,
                            prompt_s=(first or done) - sent, answer_s=done - (first or done))

    def _result(self, body: dict, text: str, usage: dict | None, pieces: int | None,
                prompt_s: float | None = None, answer_s: float | None = None
                ) -> ProviderResult:
        """Tokens from the server's usage; else the prompt counted by the model's own
        tokenizer (:meth:`_count_prompt`) and a streamed answer's pieces (llama.cpp and most
        servers send one token per piece); else an estimate (``estimate_tokens``: words *
        1.3)."""
        usage = usage if isinstance(usage, dict) else {}
        tokens_in = usage.get("prompt_tokens") or self._count_prompt(body)
        if not tokens_in:
            tokens_in = estimate_tokens("\n".join(str(m.get("content", ""))
                                                  for m in body["messages"]))
        out = usage.get("completion_tokens") or pieces or estimate_tokens(text)
        result = ProviderResult(text=text, tokens_in=int(tokens_in), tokens_out=int(out),
                                prompt_s=prompt_s, answer_s=answer_s)
        self.memory.note_speed(self.key, body["model"], result)
        return result

    def _count_prompt(self, body: dict) -> int | None:
        """The prompt's tokens by the model's own tokenizer, through llama.cpp's
        ``/extras/tokenize/count`` (its Python server streams no usage), framed as ChatML
        (SmolLM2's template; close for others). None where the server has no such
        endpoint, which is remembered so it is asked once."""
        model = body["model"]
        if self.memory.get(self.key, model).get("tokenize") is False:
            return None
        url = self.base_url.removesuffix("/v1") + "/extras/tokenize/count"
        try:
            resp = self._http.post(url, json={"input": chatml(body["messages"])},
                                   headers=self._headers(), timeout=10)
            if resp.status_code == 200:
                count = int(resp.json()["count"])
                self.memory.learn(self.key, model, tokenize=True)
                return count
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        if resp.status_code in (404, 405):
            self.memory.learn(self.key, model, tokenize=False)
        return None

    def _server_message(self, resp: httpx.Response) -> str:
        try:
            err = resp.json().get("error")
            msg = err.get("message") if isinstance(err, dict) else err or resp.json()
            return self._scrub(str(msg))
        except (ValueError, AttributeError):
            return self._scrub(resp.text or resp.reason_phrase)

    # -- the retry loop -------------------------------------------------------------------
    def generate(self, request: LLMRequest) -> ProviderResult:
        """Ask the server, retrying what may succeed later, within the policy's caps."""
        started = time.monotonic()
        tokens = estimate_tokens("\n".join(str(m.get("content", "")) for m in request.messages))
        attempt, waited = 0, 0.0
        turns = 0.0  # waiting for a turn to ask (the limiter): not part of the retry budget
        structured = request.output_schema is not None
        # json_object after json_schema was refused, for this request; remembered for the
        # endpoint only once it worked (a passing 500 must not downgrade it for good).
        fallback: str | None = None
        while True:
            attempt += 1
            known = self._json_mode(request.model) if structured else None
            mode = known or fallback
            stream = self._streams(request.model)
            queued = time.monotonic()
            self.limiter.acquire(tokens)
            turns += time.monotonic() - queued
            throttled = False
            try:
                result = self._post(self._body(request, mode, stream))
                if structured and known is None:
                    self.memory.learn(self.key, request.model,
                                      json_mode=mode or "json_schema")
                return result
            except _Retryable as exc:
                throttled = exc.throttled
                error: Exception = exc
                if structured and mode is None and exc.status == 500:
                    # llama.cpp's Python server answers json_schema with a 500: switch once.
                    fallback = "json_object"
                    attempt -= 1
                    continue
            except _Refused:
                if structured and mode is None:  # a 4xx for json_schema: try json_object
                    fallback = "json_object"
                    attempt -= 1
                    continue
                raise
            finally:
                self.limiter.release(throttled=throttled)
            # (slept time counted even if the sleep function is not the clock's)
            elapsed = max(time.monotonic() - started - turns, waited)
            retry_after = error.retry_after if isinstance(error, _Retryable) else None
            delay = self.retry.next_delay(attempt, elapsed, retry_after, self._rng)
            if delay is None:
                raise ProviderError(
                    f"{self.base_url}: gave up after {attempt} attempt(s) in {elapsed:.1f}s; "
                    f"last error: {error}",
                    fix="check the server, or raise endpoint.max_attempts/max_retry_seconds")
            self.limiter.backoff(delay, self._sleep)
            waited += delay


OPENAI_BASE_URL = "https://api.openai.com/v1"


def workspace_memory(state_dir) -> EndpointMemory:
    """The endpoint memory of a workspace's state dir (None: this process only)."""
    return EndpointMemory(None if state_dir is None else state_dir / FILE_NAME)


class OpenAIPlugin:
    """Registers ``openai``: any OpenAI-compatible chat completions endpoint."""

    def configure(self, model, endpoint):
        """Without a ``base_url``, OpenAI itself (key from ``OPENAI_API_KEY``)."""
        if not endpoint.base_url:
            endpoint.base_url = OPENAI_BASE_URL
            endpoint.api_key_env = endpoint.api_key_env or "OPENAI_API_KEY"
        return model, endpoint

    def create(self, config) -> OpenAICompatProvider:
        """The HTTP provider for ``config.settings`` (``pipeline.llm.settings.Endpoint``)."""
        s = config.settings
        if not s.get("base_url"):
            raise UserError("provider 'openai' has no endpoint.base_url",
                            fix="set endpoint.base_url, or SCENEMAKE_BASE_URL")
        return OpenAICompatProvider(
            s["base_url"], transport=config.transport, api_key_env=s.get("api_key_env"),
            timeout_s=float(s.get("timeout_s", defaults.TIMEOUT_S)),
            idle_timeout_s=float(s.get("idle_timeout_s", defaults.IDLE_TIMEOUT_S)),
            response_format=s.get("response_format", "auto"),
            memory=workspace_memory(config.state_dir),
            retry=RetryPolicy(max_attempts=int(s.get("max_attempts", defaults.MAX_ATTEMPTS)),
                              max_total_s=float(s.get("max_retry_seconds",
                                                      defaults.MAX_RETRY_SECONDS))),
            limiter=RateLimiter(int(s.get("max_concurrency", 8)),
                                s.get("requests_per_minute"), s.get("tokens_per_minute")))


PLUGIN = OpenAIPlugin()
