"""What an endpoint supports, remembered in the workspace: ``.scenemake/endpoints.json``.

Keyed by base URL (``local`` for the local provider's servers) and model:
``{"version": 1, "endpoints": {URL: {MODEL: facts}}}``, where facts are ``json_mode``
("json_schema" or "json_object"), ``stream`` (whether the server streams), ``stream_usage``
(whether a streamed answer carries token usage) and ``speed`` (tokens per second of the
prompt and of the answer, as measured here: ``doit estimate`` turns tokens into time with
it). Learnt once, so ``auto`` stops probing json_schema (an HTTP 500 on llama.cpp's server)
on every run.
A missing or unreadable file is an empty memory, never an error: it only saves a probe.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import read_json
from pipeline.core.store import WriteError, atomic_write_json

FILE_NAME = "endpoints.json"


class EndpointMemory:
    """The facts of every (base URL, model) this workspace talked to; thread-safe."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None  # None: remember in memory only
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, Any]]] | None = None

    def _load(self, fresh: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
        if self._data is None or fresh:
            data: Any = {}
            if self.path is not None and self.path.is_file():
                try:
                    data = read_json(self.path, "endpoint memory")
                except UserError:
                    data = {}
            found = data.get("endpoints") if isinstance(data, dict) else None
            found = {url: models for url, models in (found or {}).items()
                     if isinstance(models, dict)} if isinstance(found, dict) else {}
            if self._data is not None:  # keep what this process learnt, add the file's
                for url, models in self._data.items():
                    found.setdefault(url, {}).update(models)
            self._data = found
        return self._data

    def get(self, base_url: str, model: str) -> dict[str, Any]:
        """What is known of ``model`` at ``base_url`` (a copy; empty when nothing is)."""
        with self._lock:
            facts = self._load().get(base_url, {}).get(model, {})
            return dict(facts) if isinstance(facts, dict) else {}

    def speed(self, base_url: str, model: str) -> dict[str, float] | None:
        """``{"prompt_tokens_per_s", "tokens_per_s", "answers"}`` measured for ``model`` at
        ``base_url``, or None when it never answered here."""
        found = self.get(base_url, model).get("speed")
        if isinstance(found, dict) and found.get("tokens_per_s"):
            return found
        return None

    def note_speed(self, base_url: str, model: str, result: Any) -> None:
        """Fold one answer's timing (``ProviderResult.prompt_s``/``answer_s``) into the
        speed remembered: the mean of the first answers, then a moving average, so a busy
        hour does not stick."""
        if not result.answer_s or result.tokens_out < 2:
            return
        rates = {"tokens_per_s": (result.tokens_out - 1) / result.answer_s}
        if result.prompt_s:
            rates["prompt_tokens_per_s"] = result.tokens_in / result.prompt_s
        with self._lock:
            known = self._load().get(base_url, {}).get(model, {}).get("speed") or {}
        n = int(known.get("answers", 0))
        weight = max(1 / (n + 1), 0.1)
        speed = {"answers": n + 1}
        for name, rate in rates.items():
            old = known.get(name)
            speed[name] = round(rate if old is None else old + (rate - old) * weight, 2)
        for name in ("tokens_per_s", "prompt_tokens_per_s"):
            speed.setdefault(name, known.get(name))
        self.learn(base_url, model, speed=speed)

    def learn(self, base_url: str, model: str, **facts: Any) -> None:
        """Remember ``facts`` (written to the workspace only when something changed)."""
        with self._lock:
            data = self._load()
            known = data.setdefault(base_url, {}).setdefault(model, {})
            if all(known.get(k) == v for k, v in facts.items()):
                return
            known.update(facts)
            if self.path is None:
                return
            # Another client (or process) may have learnt something since: merge, then write.
            data = self._load(fresh=True)
            try:
                atomic_write_json(self.path, {"version": 1, "endpoints": data})
            except WriteError:
                pass  # a full disk costs a probe next run, not this run


def estimate_seconds(state_dir, provider: str, model: str, endpoint: dict, calls: int,
                     tokens_in: float, tokens_out: float) -> float | None:
    """How long ``calls`` requests of ``tokens_in`` prompt and ``tokens_out`` answer tokens
    (totals) would take one after the other, from the speed this workspace measured for
    ``model`` (``endpoints.json``), or None when it never answered here. A provider plugin
    may say it itself (``estimate_seconds``: the offline stand-in's simulated latency)."""
    from . import providers

    plugin = providers.plugin(provider)
    own = getattr(plugin, "estimate_seconds", None)
    if own is not None:
        return own(endpoint, calls, tokens_in, tokens_out)
    key = getattr(plugin, "memory_key", None) or endpoint.get("base_url")
    if not key or state_dir is None:
        return None
    speed = EndpointMemory(state_dir / FILE_NAME).speed(key, model)
    if speed is None:
        return None
    seconds = tokens_out / speed["tokens_per_s"]
    if speed.get("prompt_tokens_per_s"):
        seconds += tokens_in / speed["prompt_tokens_per_s"]
    return seconds
