"""What an endpoint supports, remembered in the workspace: ``.scenemake/endpoints.json``.

Keyed by base URL and model: ``{"version": 1, "endpoints": {URL: {MODEL: facts}}}``, where
facts are ``json_mode`` ("json_schema" or "json_object"), ``stream`` (whether the server
streams) and ``stream_usage`` (whether a streamed answer carries token usage). Learnt once,
so ``auto`` stops probing json_schema (an HTTP 500 on llama.cpp's server) on every run.
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
