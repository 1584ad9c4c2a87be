"""The model settings every family configures: which model (part of every request's content
address), how to reach it (not part of it), its price, and the environment overrides."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from pipeline.core.errors import UserError
from pipeline.core.models import StrictModel as Strict

from . import retry


class ModelSettings(Strict):
    provider: str = "offline"
    model: str = "offline-1"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1200, gt=0)
    seed: int | None = 7

    @property
    def label(self) -> str:
        """``provider:model`` as a person reads it: a model named by its file's content
        (``NAME.gguf@BLAKE3``) shows the hash's first 12 hex digits, as git shortens one."""
        name, at, digest = self.model.rpartition("@")
        if at and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            return f"{self.provider}:{name}@{digest[:12]}"
        return f"{self.provider}:{self.model}"


class Endpoint(Strict):
    """How to reach the model; not part of any content address (changing it reruns nothing)."""

    base_url: str | None = None
    api_key_env: str | None = None
    # Connecting, and waiting for an answer to begin (its first piece, or the headers of a
    # server that does not stream); a CPU-served model's first answer can take a minute.
    timeout_s: float = Field(retry.TIMEOUT_S, gt=0)
    # The longest silence inside an answer that has begun, streamed or not: a stalled or
    # cut-off answer is retried after this, a long answer that keeps flowing is never cut.
    idle_timeout_s: float = Field(retry.IDLE_TIMEOUT_S, gt=0)
    response_format: Literal["auto", "json_schema", "json_object"] = "auto"
    max_attempts: int = Field(retry.MAX_ATTEMPTS, ge=1)
    # Trying and waiting for one request, from its first try: room for several stalls.
    max_retry_seconds: float = Field(retry.MAX_RETRY_SECONDS, gt=0)
    max_concurrency: int = Field(8, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_reasks: int = Field(2, ge=0)
    offline_latency_ms: float = Field(0.0, ge=0)


class Price(Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)



def apply_env_overrides(model: ModelSettings, endpoint: Endpoint,
                        cfg_path: str) -> tuple[ModelSettings, Endpoint]:
    """``SCENEMAKE_MODEL=provider:model`` (or a provider alone that has a default model, e.g.
    ``local``), ``SCENEMAKE_BASE_URL`` and ``SCENEMAKE_API_KEY_ENV``
    override the settings of ``cfg_path`` (a book, an L7 objective ...), so one config can
    switch models without an edit."""
    model = model.model_copy()
    endpoint = endpoint.model_copy()
    spec = os.environ.get("SCENEMAKE_MODEL")
    from . import providers  # the registry (imports no provider until one is used)

    if spec:
        # Whatever is wrong with it is the environment variable's fault, not the config's.
        provider, sep, name = spec.partition(":")
        plugin = providers.plugin(provider)
        if not sep:  # a bare name: that provider's default model (local: the shipped one)
            name = getattr(plugin, "default_model", None) or ""
        if not name:
            raise UserError(f"SCENEMAKE_MODEL={spec} is not PROVIDER:MODEL",
                            fix="e.g. SCENEMAKE_MODEL=openai:gpt-4o-mini, or "
                                "SCENEMAKE_MODEL=local")
        if plugin is None:
            raise UserError(f"SCENEMAKE_MODEL={spec}: unknown provider '{provider}'",
                            fix=f"known: {', '.join(providers.names())}; or unset "
                                f"SCENEMAKE_MODEL to use the model of {cfg_path}")
        model.provider, model.model = provider, name
    if os.environ.get("SCENEMAKE_BASE_URL"):
        endpoint.base_url = os.environ["SCENEMAKE_BASE_URL"]
    if os.environ.get("SCENEMAKE_API_KEY_ENV"):
        endpoint.api_key_env = os.environ["SCENEMAKE_API_KEY_ENV"]
    base = endpoint.base_url
    if base and not base.startswith(("http://", "https://")):
        fix = "e.g. http://127.0.0.1:8080/v1"
        if os.environ.get("SCENEMAKE_BASE_URL"):
            raise UserError(f"SCENEMAKE_BASE_URL={base} is not an http:// or https:// URL",
                            fix=fix)
        raise UserError(f"'{base}' is not an http:// or https:// URL", path=cfg_path,
                        field="endpoint.base_url", fix=fix)
    plugin = providers.plugin(model.provider)
    if plugin is None:
        raise UserError(f"unknown provider '{model.provider}'", path=cfg_path,
                        field="model.provider", fix=f"known: {', '.join(providers.names())}")
    configure = getattr(plugin, "configure", None)
    if configure is not None:  # the provider's own defaults (a base URL, a model's name)
        try:
            model, endpoint = configure(model, endpoint)
        except UserError as exc:
            if not spec or exc.path:
                raise
            raise UserError(f"SCENEMAKE_MODEL={spec}: {exc.bare}", field=exc.field,
                            fix=exc.fix) from None
    return model, endpoint
