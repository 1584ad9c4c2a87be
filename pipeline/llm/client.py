"""The LLM client: cache first, then the provider, validation with re-asks, and the call log.

Thread- and process-safe: doit may run tasks in threads, and several runs may share a
workspace; two asking the same request at once must pay for it once, so a request is paid
for only under its claim (``claims.py``), and the cache is read again once it is held.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.core import cpu_turn
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_json

from .budget import Budget
from .cache import CachedResponse, ResponseCache
from .calllog import CallLog
from .claims import Claims, WorkspaceClaims
from .pricing import PriceTable
from .providers import ProviderConfig, Providers, unknown
from .providers.offline import estimate_tokens
from .request import CallContext, LLMRequest, LLMResponse, Provider, derive_seed

_MAX_ERROR_CHARS = 300
CUT_OFF = "$: the answer was cut off"


class SchemaCheck:
    """An output schema's validator, built when the first answer needs checking.

    jsonschema then loads while the first model calls are still out, not before them.
    """

    def __init__(self, schema: dict):
        self.schema = schema
        self._validator: Any = None

    def iter_errors(self, value: Any) -> Iterator:
        """jsonschema's errors of ``value`` (Draft 2020-12)."""
        if self._validator is None:
            from jsonschema import Draft202012Validator

            self._validator = Draft202012Validator(self.schema)
        return self._validator.iter_errors(value)


class LLMOutputError(UserError):
    """The model gave no valid answer within the allowed re-asks."""


def default_providers(settings: Mapping[str, Any] | None = None, *,
                      state_dir: Path | None = None, transport: Any = None) -> Providers:
    """The registered providers (``pipeline.llm.providers``) for an endpoint's settings
    (``pipeline.llm.settings.Endpoint``), each made when a request first names it.

    ``transport`` (an ``httpx.BaseTransport``) goes to the HTTP providers: tests hand in an
    ``httpx.MockTransport``.
    """
    return Providers(ProviderConfig(dict(settings or {}), state_dir, transport))


def build_client(state_dir: Path, endpoint: Mapping[str, Any] | None = None,
                 prices: Mapping[str, Mapping[str, float]] | None = None,
                 max_cost_usd: float | None = None, transport: Any = None) -> LLMClient:
    """The LLM client every family uses: the workspace's cache and call log under
    ``state_dir`` (``workspace/.scenemake``), providers from ``endpoint`` settings
    (``pipeline.llm.settings.Endpoint``), a price table and a budget for this run.

    ``SCENEMAKE_OFFLINE_LATENCY_MS`` sets the offline model's simulated latency (benchmarks);
    ``transport`` is handed to the HTTP providers (see :func:`default_providers`).
    """
    import os

    settings = dict(endpoint or {})
    env_latency = os.environ.get("SCENEMAKE_OFFLINE_LATENCY_MS")
    if env_latency:
        settings["offline_latency_ms"] = float(env_latency)
    state_dir = Path(state_dir)
    client = LLMClient(state_dir / "llm_cache", state_dir / "llm_calls.jsonl",
                       claims=WorkspaceClaims(state_dir / "claims"),
                       providers=default_providers(settings, state_dir=state_dir,
                                                   transport=transport),
                       max_reasks=int(settings.get("max_reasks", 2)),
                       prices=PriceTable({m: dict(p) for m, p in (prices or {}).items()}),
                       budget=Budget(max_cost_usd))
    from .shared import attach_shared  # SCENEMAKE_CACHE_URL / cache_url: the shared cache

    attach_shared(client, state_dir)
    return client


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def _strip_fences(text: str) -> str:
    # Chat models like to wrap JSON in ``` fences; the JSON inside is what was meant.
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3]
    return text


def _validation_error_text(exc: Exception) -> str:
    """``<JSON path>: <message>`` for a pydantic ValidationError, else the first line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            path = "$" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())
            )
            return _one_line(f"{path}: {first.get('msg', exc)}")
        except (IndexError, TypeError, AttributeError):
            pass
    return _one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


class LLMClient:
    """Answers :class:`LLMRequest` s through the cache, the providers and the call log."""

    def __init__(
        self,
        cache_dir: Path,
        call_log: Path,
        providers: Mapping[str, Provider] | None = None,
        max_reasks: int = 2,
        prices: PriceTable | None = None,
        budget: Budget | None = None,
        claims: Claims | None = None,
    ):
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        self.cache = ResponseCache(cache_dir)
        self.log = CallLog(call_log)
        # A registry-backed set stays lazy (providers made on first use); a plain mapping
        # (tests, embedders) is exactly the providers this client may use.
        self.providers: Mapping[str, Provider] = (
            providers if isinstance(providers, Providers)
            else dict(providers) if providers is not None else default_providers()
        )
        self.max_reasks = max_reasks
        self.prices = prices or PriceTable()
        self.budget = budget or Budget()
        # Running totals of this process, for the progress display.
        self.stats = {"calls": 0, "hits": 0, "misses": 0, "tokens_in": 0, "tokens_out": 0,
                      "cost_usd": 0.0, "cost_avoided_usd": 0.0}
        # Claims beside the cache by default: every client of one workspace sees them; a
        # shared cache (``shared.attach_shared``) puts its own, seen by every machine.
        self.claims: Claims = claims or WorkspaceClaims(Path(cache_dir).parent / "claims")
        self.shared: str | None = None  # the shared cache's URL (no password), if any
        self._guard = threading.Lock()
        self._validators: dict[str, SchemaCheck] = {}

    # -- public

    def complete(
        self,
        request: LLMRequest,
        ctx: CallContext,
        validate: Callable[[Any], Any] | None = None,
    ) -> LLMResponse:
        """Answer ``request``: from the cache if possible, else from its provider.

        With ``output_schema``, the answer is parsed as JSON, checked against the schema,
        then passed to ``validate`` (e.g. ``Model.model_validate``), whose return value
        becomes ``response.data``; an invalid answer is re-asked up to ``max_reasks``
        times. Without a schema, ``validate`` (if given) receives the text. Raises
        :class:`LLMOutputError` when no try is valid, :class:`UserError` for an unknown
        provider or an invalid schema.
        """
        provider = self._provider(request.provider)
        checker = self._validator(request.output_schema)
        key = request.request_hash()
        response = self._from_cache(request, key, ctx, checker, validate)
        if response is not None:
            return response
        with self.claims.claim(key):
            # Whoever held the claim before us has cached its answer: look again first.
            response = self._from_cache(request, key, ctx, checker, validate)
            if response is None:
                response = self._generate(request, key, ctx, provider, checker, validate)
            return response

    def close(self) -> None:
        """Release what the providers hold (a local model server, HTTP connections)."""
        close = getattr(self.providers, "close", None)
        if close is not None:
            close()
        else:
            for provider in self.providers.values():
                getattr(provider, "close", lambda: None)()

    # -- steps

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            if isinstance(self.providers, Providers):
                raise unknown(name)
            known = ", ".join(sorted(self.providers)) or "none"
            raise UserError(f"unknown LLM provider '{name}' (known: {known})")
        return provider

    def _validator(self, schema: dict | None) -> SchemaCheck | None:
        if schema is None:
            return None
        key = hash_json(schema)
        validator = self._validators.get(key)
        if validator is None:
            # The metaschema check costs more than the call it guards for small models, and
            # every scene's narrowed schema is new: check the schema's top only, and let a
            # deeper mistake surface as a SchemaError while validating (see _check).
            if not isinstance(schema, dict) or schema.get("type") not in (None, "object",
                                                                          "array", "string"):
                raise UserError("output_schema is not a valid JSON Schema: expected an object "
                                "schema")
            validator = SchemaCheck(schema)
            with self._guard:
                self._validators[key] = validator
        return validator

    def _check(
        self,
        text: str,
        checker: SchemaCheck | None,
        validate: Callable[[Any], Any] | None,
    ) -> tuple[Any, str | None]:
        """(data, None) for a valid answer, (None, error) otherwise."""
        if checker is None:
            value: Any = text
        else:
            try:
                # strict=False: raw control characters (a newline) inside strings, which
                # llama.cpp's JSON grammar lets through; nothing more lenient than that.
                value = json.loads(_strip_fences(text), strict=False)
            except json.JSONDecodeError as exc:
                if exc.doc.lstrip()[:1] in ("{", "[") and (
                        exc.msg.startswith("Unterminated string")
                        or exc.pos >= len(exc.doc.rstrip()) - 1):
                    # JSON that never ended: the answer ran into max_tokens
                    return None, (f"{CUT_OFF} before its JSON ended ({exc.msg}): too long "
                                  "for max_tokens, write less")
                where = f"line {exc.lineno} column {exc.colno}"
                return None, f"$: answer is not valid JSON ({exc.msg} at {where})"
            from jsonschema.exceptions import SchemaError, best_match

            try:
                error = best_match(checker.iter_errors(value))
            except SchemaError as exc:
                raise UserError(
                    f"output_schema is not a valid JSON Schema: {_one_line(exc.message)}"
                ) from exc
            if error is not None:
                # jsonschema's message starts with the whole offending value: shorten it, so
                # the reason (too long, repeated, not one of ...) survives the one-line cut
                shown = repr(error.instance)
                message = error.message.replace(shown, shown[:80] + " ..." if len(shown) > 80
                                                else shown)
                return None, _one_line(f"{error.json_path}: {message}")
        if validate is None:
            return (None if checker is None else value), None
        try:
            return validate(value), None
        except (ValueError, TypeError, AssertionError) as exc:  # pydantic errors are ValueErrors
            return None, _validation_error_text(exc)

    def _from_cache(
        self,
        request: LLMRequest,
        key: str,
        ctx: CallContext,
        checker: SchemaCheck | None,
        validate: Callable[[Any], Any] | None,
    ) -> LLMResponse | None:
        start = time.perf_counter()
        cached = self.cache.get(key)
        if cached is None:
            return None
        data, error = self._check(cached.text, checker, validate)
        if error is not None:
            return None  # e.g. ``validate`` got stricter since: ask again
        latency = (time.perf_counter() - start) * 1000
        seed = cached.seed if cached.seed is not None else _first_seed(request)
        self._log(ctx, request, key, "hit", cached, latency, try_index=0, seed=seed)
        # how the answer was reached: the tries kept with it, or this one try
        history = [dict(t) for t in cached.tries] if cached.tries else [
            {"try": 0, "request_hash": key, "seed": seed, "cache": "hit",
             "tokens_in": cached.tokens_in, "tokens_out": cached.tokens_out, "finding": None}]
        return LLMResponse(
            text=cached.text,
            data=data,
            request_hash=key,
            cache="hit",
            provider=request.provider,
            model=request.model,
            tokens_in=cached.tokens_in,
            tokens_out=cached.tokens_out,
            cost_usd=0.0,
            latency_ms=latency,
            seed=seed,
            tries=len(history),
            history=history,
        )

    def _generate(
        self,
        request: LLMRequest,
        key: str,
        ctx: CallContext,
        provider: Provider,
        checker: SchemaCheck | None,
        validate: Callable[[Any], Any] | None,
    ) -> LLMResponse:
        current, current_key = request, key
        sent = request.seeded(_first_seed(request))  # what the provider sees on try 0
        asked = {key}  # never spend a try on a request already asked in this chain
        tokens_in = tokens_out = 0
        cost = latency = 0.0
        last_error = ""
        history: list[dict] = []  # each try: its seed, and the finding that refused it
        for try_index in range(self.max_reasks + 1):
            # A re-ask may already be cached (say the original entry was deleted).
            start = time.perf_counter()
            cached = self.cache.get(current_key) if try_index > 0 else None
            if cached is not None:
                answer = cached
                tokens_in += cached.tokens_in
                tokens_out += cached.tokens_out
                took = (time.perf_counter() - start) * 1000
                cache = "hit"
            else:
                result, took = self._ask(provider, sent, ctx)
                answer = CachedResponse(
                    text=result.text,
                    tokens_in=result.tokens_in,
                    tokens_out=result.tokens_out,
                    cost_usd=result.cost_usd,
                    latency_ms=took,
                    seed=sent.params.get("seed"),
                )
                tokens_in += answer.tokens_in
                tokens_out += answer.tokens_out
                cost += answer.cost_usd
                latency += took
                cache = "miss"
            data, error = self._check(answer.text, checker, validate)
            seed = answer.seed if cache == "hit" else sent.params.get("seed")
            self._log(ctx, current, current_key, cache, answer, took, try_index, seed=seed,
                      finding=error)
            history.append({"try": try_index, "request_hash": current_key, "seed": seed,
                            "cache": cache, "tokens_in": answer.tokens_in,
                            "tokens_out": answer.tokens_out, "finding": error})
            if error is None:
                # Only valid answers are cached: an invalid one must be asked again next time.
                if cached is None:
                    self.cache.put(current_key, current.canonical(), answer)
                if try_index > 0:
                    # The original request answers straight away next time; its entry
                    # records what the whole exchange cost, and how it went.
                    total = CachedResponse(answer.text, tokens_in, tokens_out, cost, latency,
                                           answer.seed, tries=tuple(history))
                    self.cache.put(key, request.canonical(), total)
                return LLMResponse(
                    text=answer.text,
                    data=data,
                    request_hash=key,
                    cache="miss",
                    provider=request.provider,
                    model=request.model,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost,
                    latency_ms=latency,
                    tries=try_index + 1,
                    seed=answer.seed,
                    history=history,
                )
            last_error = error
            current = _reask(request, answer.text, error, json_answer=checker is not None,
                             try_index=try_index + 1, asked=asked)
            current_key = current.request_hash()
            asked.add(current_key)
            sent = current  # a re-ask carries its own seed
        tries = self.max_reasks + 1
        raise LLMOutputError(
            f"task '{ctx.task or '?'}': {request.provider}/{request.model} gave no valid "
            f"answer in {tries} {'try' if tries == 1 else 'tries'}; last error: {last_error}"
        )

    def _ask(self, provider: Provider, request: LLMRequest, ctx: CallContext):
        """One paid call: reserve its worst case in the budget, ask, price what it used."""
        prompt = "\n".join(str(m.get("content", "")) for m in request.messages
                           if isinstance(m, dict))
        # A provider that costs nothing (a model on this machine) needs no price entry.
        free = getattr(provider, "free", False)
        worst = 0.0 if free else self.prices.cost(request.model, estimate_tokens(prompt),
                                                  int(request.params.get("max_tokens") or 0))
        reserved = self.budget.reserve(worst, ctx.task)
        result = None
        start = time.perf_counter()
        try:
            with cpu_turn.waiting():
                result = provider.generate(request)
        finally:
            took = (time.perf_counter() - start) * 1000
            cost = 0.0
            if result is not None and not free:
                cost = result.cost_usd or self.prices.cost(request.model, result.tokens_in,
                                                           result.tokens_out)
            if result is not None:
                result = dataclasses.replace(result, cost_usd=cost)
            self.budget.settle(reserved, cost)
        return result, took

    def _log(
        self,
        ctx: CallContext,
        request: LLMRequest,
        key: str,
        cache: str,
        answer: CachedResponse,
        latency_ms: float,
        try_index: int,
        seed: int | None = None,
        finding: str | None = None,
    ) -> None:
        hit = cache == "hit"
        with self._guard:
            st = self.stats
            st["calls"] += 1
            st["hits" if hit else "misses"] += 1
            st["tokens_in"] += answer.tokens_in
            st["tokens_out"] += answer.tokens_out
            st["cost_usd" if not hit else "cost_avoided_usd"] += answer.cost_usd
        self.log.record(
            ctx,
            request_hash=key,
            cache=cache,
            provider=request.provider,
            model=request.model,
            tokens_in=answer.tokens_in,
            tokens_out=answer.tokens_out,
            cost_usd=0.0 if hit else answer.cost_usd,
            latency_ms=latency_ms,
            attempt=request.attempt,
            try_index=try_index,
            cost_avoided_usd=answer.cost_usd if hit else None,
            seed=seed,
            finding=finding,
        )


def _first_seed(request: LLMRequest) -> int | None:
    """The seed sent with a request's first try (see :func:`derive_seed`)."""
    return derive_seed(request.params.get("seed"), request.attempt)


def _reask(original: LLMRequest, bad_answer: str, error: str, json_answer: bool,
           try_index: int, asked: set[str]) -> LLMRequest:
    """The original conversation plus what was wrong with the answer (and the answer itself
    when it was not JSON at all, so the model sees what it wrote instead).

    An answer that parsed but was refused (a field that breaks the schema, a finding of the
    answer's check) is not shown again: measured with SmolLM2, a re-ask carrying it repeated
    its mistake 4 times in 4, one carrying only the finding fixed it in 2 of 4.

    Each try has its own seed, and a request already in ``asked`` is never returned: a
    model that repeats its wrong answer would otherwise get the same request again (same
    hash, same answer from a deterministic server) and waste the try.
    """
    broken = error.startswith("$: answer is not valid JSON")
    if not json_answer:
        fix = "Reply again with the corrected answer."
    elif broken:
        fix = "Reply again with only the corrected JSON, satisfying the schema."
    else:
        fix = ("Reply again with the whole JSON, satisfying the schema, without that "
               "mistake.")
    # the answer is shown when it was not the JSON asked for (text instead of JSON): an
    # answer cut off at max_tokens, or one refused for a finding, is not (see above)
    shown = ({"role": "assistant", "content": bad_answer},) if not json_answer or broken else ()
    feedback = (f"Your answer was not valid: {error}. {fix}" if shown else
                f"An answer to this was refused: {error}. {fix}")
    messages = (*original.messages, *shown, {"role": "user", "content": feedback})
    base = dataclasses.replace(original, messages=messages)
    salt = try_index
    reask = base.seeded(derive_seed(original.params.get("seed"), original.attempt, salt))
    while reask.request_hash() in asked:  # (a seed collision: take the next one)
        salt += 1000
        reask = base.seeded(derive_seed(original.params.get("seed"), original.attempt, salt))
    return reask
