"""The L7 side of the LLM layer: model settings, the one client, requests and calls.

Settings come from the session objective (``model``, ``endpoint``, ``prices``,
``max_cost_usd``); ``SCENEMAKE_MODEL``/``SCENEMAKE_BASE_URL``/``SCENEMAKE_API_KEY_ENV``
override them exactly as they do for books.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.jsonio import display_path
from pipeline.core.rendering import render
from pipeline.llm import CallContext, LLMClient, LLMRequest, LLMResponse, build_client
from pipeline.llm.settings import Endpoint, ModelSettings, apply_env_overrides

from .contracts import SessionObjective

TEMPLATES = Path(__file__).resolve().parent / "templates"
_clients: dict[str, LLMClient] = {}
_lock = threading.Lock()


def settings(obj: SessionObjective, objective_path: str) -> tuple[ModelSettings, Endpoint]:
    """The objective's model and endpoint with the environment overrides applied."""
    return apply_env_overrides(obj.model, obj.endpoint, display_path(objective_path))


def client(state_dir: str, obj: SessionObjective, objective_path: str) -> LLMClient:
    """The one LLM client of this process for ``state_dir`` (cache, call log, budget)."""
    key = str(Path(state_dir).resolve())
    with _lock:
        found = _clients.get(key)
        if found is None:
            _, endpoint = settings(obj, objective_path)
            found = _clients[key] = build_client(
                Path(state_dir), endpoint.model_dump(),
                {m: p.model_dump() for m, p in obj.prices.items()}, obj.max_cost_usd)
        return found


def answers_at_once(obj: SessionObjective, objective_path: str) -> int:
    """How many answers the session's model gives at once on this machine: the independent
    candidates and judges of its scenes are asked that many at a time (a local model: one
    server per core). 1 for a model that does not say (asked one after the other, as before)."""
    from pipeline.llm import providers

    model, endpoint = settings(obj, objective_path)
    at_once = getattr(providers.plugin(model.provider), "answers_at_once", None)
    return max(1, int(at_once(endpoint.model_dump()))) if at_once else 1


def template(name: str) -> str:
    """Path of an L7 prompt template (hashed as a file dependency of its tasks)."""
    return str(TEMPLATES / f"{name}.j2")


def messages(name: str, context: dict[str, Any]) -> list[dict]:
    """System and user messages of the prompt ``name``."""
    return [{"role": "system", "content": render(template("system"), context)},
            {"role": "user", "content": render(template(name), context)}]


def request(model: dict, msgs: list[dict], schema: dict, attempt: int) -> LLMRequest:
    """An LLM request; ``model`` is the generation settings (generation.json)."""
    params = {"temperature": model["temperature"], "max_tokens": model["max_tokens"],
              "seed": model["seed"]}
    return LLMRequest(provider=model["provider"], model=model["model"], messages=tuple(msgs),
                      params=params, output_schema=schema, attempt=attempt)


def ask(llm: LLMClient, req: LLMRequest, ctx: CallContext,
        validate: Callable[[Any], Any]) -> LLMResponse:
    """One structured call through the shared client (cache, call log, re-asks)."""
    return llm.complete(req, ctx, validate=validate)
