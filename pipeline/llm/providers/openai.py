"""The OpenAI-compatible chat completions provider (OpenAI, vLLM, llama.cpp, Ollama, ...).

Retries 429, 5xx, timeouts, broken connections and truncated or non-JSON bodies with
exponential backoff and jitter, honours Retry-After, and caps both the number of
attempts and the total time. Other 4xx are reported at once with the server's message.
The API key is read from an environment variable at call time and never appears in a
repr, a log line or an error message.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import httpx

from pipeline.core.errors import UserError

from ..ratelimit import RateLimiter
from ..request import LLMRequest, ProviderResult
from ..retry import RetryPolicy, retry_after_seconds

__all__ = ["OpenAICompatProvider", "ProviderError", "RetryPolicy", "retry_after_seconds"]
from .offline import estimate_tokens


class ProviderError(UserError):
    """The provider could not give an answer (after retries, or a non-retryable error)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None,
                 throttled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


class OpenAICompatProvider:
    """Chat completions over HTTP; one instance (and limiter) per endpoint, shared by threads."""

    name = "openai"

    def __init__(self, base_url: str, *, api_key_env: str | None = None,
                 timeout_s: float = 60.0, response_format: str = "auto",
                 retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.response_format = response_format
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter()
        self._sleep = sleep
        self._rng = random.Random(seed)
        # ``transport``: the test seam (httpx.MockTransport); None is a real connection pool.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport)
        # "auto" learns once whether the server takes json_schema or needs json_object.
        self._json_mode: str | None = None if response_format == "auto" else response_format

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(base_url={self.base_url!r})"

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

    def _body(self, request: LLMRequest, mode: str | None) -> dict:
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
        return body

    def _post(self, body: dict) -> ProviderResult:
        """One HTTP attempt; raises _Retryable or ProviderError."""
        url = f"{self.base_url}/chat/completions"
        try:
            resp = self._http.post(url, json=body, headers=self._headers())
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.timeout_s:g}s") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # waiting cannot fix it
            raise ProviderError(f"{url} is not a URL scenemake can call ({exc}); "
                                "base_url must start with http:// or https://") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        if resp.status_code == 429:
            raise _Retryable("429 Too Many Requests", retry_after_seconds(
                resp.headers.get("retry-after")), throttled=True)
        if resp.status_code >= 500:
            raise _Retryable(f"{resp.status_code} {self._server_message(resp)}",
                             retry_after_seconds(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            raise ProviderError(f"{resp.status_code} from {self.base_url}: "
                                f"{self._server_message(resp)}")
        try:
            data = resp.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retryable(f"unreadable answer body ({type(exc).__name__})") from None
        usage = data.get("usage") or {}
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        return ProviderResult(
            text=text,
            tokens_in=int(usage.get("prompt_tokens") or estimate_tokens(prompt)),
            tokens_out=int(usage.get("completion_tokens") or estimate_tokens(text)))

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
        while True:
            attempt += 1
            mode = self._json_mode
            self.limiter.acquire(tokens)
            throttled = False
            try:
                result = self._post(self._body(request, mode))
                if request.output_schema is not None and mode is None:
                    self._json_mode = "json_schema"
                return result
            except _Retryable as exc:
                throttled = exc.throttled
                error: Exception = exc
                if (request.output_schema is not None and mode is None
                        and not exc.throttled and str(exc).startswith("500")):
                    # llama.cpp's Python server answers json_schema with a 500: switch once.
                    self._json_mode = "json_object"
                    attempt -= 1
                    continue
            except ProviderError:
                if request.output_schema is not None and mode is None:
                    self._json_mode = "json_object"  # a 4xx for json_schema: try json_object
                    attempt -= 1
                    continue
                raise
            finally:
                self.limiter.release(throttled=throttled)
            # (slept time counted even if the sleep function is not the clock's)
            elapsed = max(time.monotonic() - started, waited)
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
            timeout_s=float(s.get("timeout_s", 60.0)),
            response_format=s.get("response_format", "auto"),
            retry=RetryPolicy(max_attempts=int(s.get("max_attempts", 6)),
                              max_total_s=float(s.get("max_retry_seconds", 120.0))),
            limiter=RateLimiter(int(s.get("max_concurrency", 8)),
                                s.get("requests_per_minute"), s.get("tokens_per_minute")))


PLUGIN = OpenAIPlugin()
