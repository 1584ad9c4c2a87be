"""What an LLM call is: the request (its content address), the context it runs in, the answer.

Also the provider interface every backend implements.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.core.hashing import canonical_json, hash_json, hash_text


def derive_seed(seed: int | None, attempt: int, try_index: int = 0) -> int | None:
    """The seed sent for a request's ``attempt`` (a rerun) and ``try_index`` (a re-ask).

    Attempt 0's first try keeps the configured seed, so requests already cached stay valid;
    any other gets its own seed derived from all three, so a deterministic server (one that
    honours ``seed``) gives a fresh sample instead of the answer it gave before.
    """
    if attempt == 0 and try_index == 0:
        return seed
    return int(hash_text(f"seed/{seed}/{attempt}/{try_index}")[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class LLMRequest:
    """One LLM request; every field is part of its content address."""

    provider: str
    model: str
    messages: tuple
    params: dict = field(default_factory=dict)
    output_schema: dict | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        # Callers often build messages as a list; keep the documented tuple form.
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))

    def canonical(self) -> dict:
        """All fields as plain JSON (lists, dicts, str, numbers): what gets hashed and cached.

        Computed once per request (the client, the cache and the offline model all ask);
        the returned dict is shared: read it, do not change it.
        """
        memo = self.__dict__.get("_canonical")
        if memo is None:
            # The round trip turns tuples into lists so the stored form hashes the same.
            memo = json.loads(
                canonical_json(
                    {
                        "provider": self.provider,
                        "model": self.model,
                        "messages": list(self.messages),
                        "params": self.params,
                        "output_schema": self.output_schema,
                        "attempt": self.attempt,
                    }
                )
            )
            self.__dict__["_canonical"] = memo  # frozen: fields only; a memo is not a field
        return memo

    def seeded(self, seed: int | None) -> LLMRequest:
        """This request with ``params["seed"]`` set to ``seed`` (left out when None)."""
        params = {k: v for k, v in self.params.items() if k != "seed"}
        if seed is not None:
            params["seed"] = seed
        if params == self.params:
            return self
        return dataclasses.replace(self, params=params)

    def request_hash(self) -> str:
        """The content address: blake3 of the canonical JSON of :meth:`canonical`."""
        memo = self.__dict__.get("_hash")
        if memo is None:
            memo = self.__dict__["_hash"] = hash_json(self.canonical())
        return memo


@dataclass
class CallContext:
    """Who is asking: written to every call-log line (never part of the request hash).

    Neutral names, since every family fills them: ``run`` is a book, an L7 session or a
    scenario run; ``task`` the doit task; ``unit`` a scene, a scenario step or an assistant
    session; ``step`` a book phase, an L7 stage, the judge or an assistant route. The call
    log keeps its documented fields (``book``, ``task``, ``scene``, ``phase``):
    :meth:`log_fields` and :meth:`from_log` map at that boundary.
    """

    run: str = ""
    task: str = ""
    unit: str = ""
    step: str = ""

    def log_fields(self) -> dict[str, str]:
        """The call log's (documented, unchanged) names for this context."""
        return {"book": self.run, "task": self.task, "scene": self.unit, "phase": self.step}

    @classmethod
    def from_log(cls, line: dict) -> CallContext:
        """The context of a call-log line, old or new (missing fields are empty)."""
        return cls(run=str(line.get("book") or ""), task=str(line.get("task") or ""),
                   unit=str(line.get("scene") or ""), step=str(line.get("phase") or ""))


@dataclass
class LLMResponse:
    """The answer to :meth:`LLMClient.complete`.

    On a miss that needed re-asks, the token, cost and latency figures are the totals over
    all tries; ``tries`` says how many there were.
    """

    text: str
    data: Any
    request_hash: str
    cache: str
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    tries: int = 1
    seed: int | None = None  # the seed sent with the try that gave this answer
    # One entry per try: ``try``, ``request_hash``, ``seed``, ``cache``, tokens, and the
    # ``finding`` that refused its answer (None for the answer kept).
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderResult:
    """What a provider returns for one request (cost 0.0 unless the provider prices it)."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float = 0.0
    # how long the answer took to begin (the prompt read) and to be written, when the
    # provider knows (a streamed answer): what ``doit estimate`` turns tokens into time with
    prompt_s: float | None = None
    answer_s: float | None = None


class Provider(Protocol):
    """An LLM backend: turns one request into one answer (no caching, no validation).

    Optional: ``free = True`` (its calls cost $0 whatever the price table says), ``limiter``
    (a ``RateLimiter`` the progress display reads) and ``close()`` (release a server or a
    connection pool when the client is closed).
    """

    name: str

    def generate(self, request: LLMRequest) -> ProviderResult:
        """Answer ``request``."""
        ...
