"""The runner's HTTP client for the assistant API: timeouts, retries with backoff, and a
check of every answer against the contract.

Retried on the one policy of ``pipeline/llm/retry.py``: connection errors, timeouts, 429 and
5xx (honouring Retry-After, capped), and bodies that are not JSON. Not retried: other 4xx
and answers that break the contract. Once the assistant was unreachable after all retries,
later calls try once (the rest of a pack goes on quickly, each step blocked with the same
clear error) until one succeeds again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from jsonschema.exceptions import best_match

from pipeline.assistant.contract import contract_validator
from pipeline.llm.retry import RetryPolicy, retry_after_seconds


@dataclass
class CallResult:
    """The outcome of one API call (after retries)."""

    ok: bool
    data: Any = None
    status: int | None = None
    error: str | None = None
    # connect, disconnected, timeout, http_5xx, http_429, http_4xx, not_json, contract
    error_kind: str | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0
    attempt_errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-safe form for debug.json."""
        return {"ok": self.ok, "status": self.status, "error": self.error,
                "error_kind": self.error_kind, "attempts": self.attempts,
                "elapsed_ms": round(self.elapsed_ms, 1), "attempt_errors": self.attempt_errors}


class AssistantAPI(Protocol):
    """What a capture asks of the assistant: :class:`AssistantClient`, or the on-demand
    connection of ``managed.py`` that opens one at the first question."""

    base_url: str

    def send(self, session_id: str | None, message: str) -> CallResult: ...

    def session(self, session_id: str) -> CallResult: ...


class _Retry(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class _Final(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status


class AssistantClient:
    """Talks to ``base_url`` (``POST /api/assistant/message``, ``GET .../session/{id}``)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0, retries: int = 2,
                 sleep: Callable[[float], None] = time.sleep, seed: int | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        # The one policy of pipeline/llm/retry.py; a Retry-After is honoured up to 4 s, so
        # one throttled step cannot hold up the rest of a pack.
        self.policy = RetryPolicy(max_attempts=retries + 1, base_delay_s=0.25, max_delay_s=4.0,
                                  max_total_s=max(30.0, (timeout_s + 4.0) * (retries + 1)),
                                  max_retry_after_s=4.0)
        self.unreachable = False
        self._sleep = sleep
        self._rng = random.Random(seed)
        # ``transport``: the test seam (httpx.MockTransport); None is a real connection pool.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), trust_env=False,
                                  transport=transport)
        self._checks = {name: contract_validator(name)
                        for name in ("message_response", "session")}

    def close(self) -> None:
        self._http.close()

    def healthy(self) -> bool:
        """True when something answers ``GET /api/health`` with 200."""
        try:
            return self._http.get(self.base_url + "/api/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def send(self, session_id: str | None, message: str) -> CallResult:
        """Ask one question (a new session when ``session_id`` is None)."""
        body = {"session_id": session_id, "message": message}
        return self._call("POST", "/api/assistant/message", body, "message_response")

    def session(self, session_id: str) -> CallResult:
        """The whole session."""
        return self._call("GET", f"/api/assistant/session/{session_id}", None, "session")

    def _call(self, method: str, path: str, body: dict | None, contract: str) -> CallResult:
        url = self.base_url + path
        start = time.perf_counter()
        attempts = 1 if self.unreachable else self.policy.max_attempts
        errors: list[str] = []
        last: _Retry | None = None
        for attempt in range(1, attempts + 1):
            try:
                data, status = self._once(method, url, body, contract)
            except _Retry as exc:
                last = exc
                errors.append(f"attempt {attempt}: {exc}")
                spent = time.perf_counter() - start
                if attempt < attempts:
                    delay = self.policy.next_delay(attempt, spent, exc.retry_after, self._rng)
                    if delay is None:
                        break
                    self._sleep(delay)
                continue
            except _Final as exc:
                errors.append(f"attempt {attempt}: {exc}")
                self.unreachable = False
                return CallResult(False, None, exc.status, str(exc), exc.kind, attempt,
                                  (time.perf_counter() - start) * 1000, errors)
            self.unreachable = False
            return CallResult(True, data, status, None, None, attempt,
                              (time.perf_counter() - start) * 1000, errors)
        assert last is not None
        if last.kind == "connect":
            self.unreachable = True
        tries = len(errors)
        message = f"{last} (after {tries} attempt{'s' if tries != 1 else ''})"
        return CallResult(False, None, last.status, message, last.kind, tries,
                          (time.perf_counter() - start) * 1000, errors)

    def _once(self, method: str, url: str, body: dict | None,
              contract: str) -> tuple[Any, int]:
        try:
            response = self._http.request(method, url, json=body)
        except httpx.TimeoutException:
            raise _Retry("timeout", f"{method} {url} timed out after {self.timeout_s:g}s") from None
        except httpx.ConnectError as exc:
            raise _Retry("connect", f"cannot connect to {self.base_url} ({_why(exc)})") from None
        except httpx.HTTPError as exc:  # reset, protocol errors: the server died mid-answer
            raise _Retry("disconnected", f"{method} {url} failed: {_why(exc)}") from None
        status = response.status_code
        text = response.text
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if status == 429 or status >= 500:
            detail = data.get("error") if isinstance(data, dict) else _snippet(text)
            raise _Retry("http_5xx" if status >= 500 else "http_429",
                         f"HTTP {status} from {url}: {detail}", status,
                         retry_after_seconds(response.headers.get("retry-after")))
        if status >= 400:
            detail = data.get("error") if isinstance(data, dict) else _snippet(text)
            raise _Final("http_4xx", f"HTTP {status} from {url}: {detail}", status)
        if data is None:
            raise _Retry("not_json", f"HTTP {status} from {url} is not JSON: {_snippet(text)}",
                         status)
        error = best_match(self._checks[contract].iter_errors(data))
        if error is not None:
            raise _Final("contract", f"answer breaks the assistant API contract at "
                                     f"{error.json_path}: {error.message}", status)
        return data, status


def _why(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return "(empty body)"
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
