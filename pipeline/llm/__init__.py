"""The LLM layer: content-addressed requests, a response cache, a call log and providers.

The names below are imported when first used (PEP 562): a book's models import
``pipeline.llm.settings`` without loading the client, the cache and the providers, which
only a run that asks the model needs (a no-op loads the book and never asks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "CachedResponse": ".cache", "ResponseCache": ".cache",
    "CALL_FIELDS": ".calllog", "CallLog": ".calllog", "read_calls": ".calllog",
    "LLMClient": ".client", "LLMOutputError": ".client", "build_client": ".client",
    "default_providers": ".client",
    "OfflineProvider": ".providers.offline", "estimate_tokens": ".providers.offline",
    "CallContext": ".request", "LLMRequest": ".request", "LLMResponse": ".request",
    "Provider": ".request", "ProviderResult": ".request",
}
__all__ = ["CALL_FIELDS", "CachedResponse", "CallContext", "CallLog", "LLMClient",
           "LLMOutputError", "LLMRequest", "LLMResponse", "OfflineProvider", "Provider",
           "ProviderResult", "ResponseCache", "build_client", "default_providers",
           "estimate_tokens", "read_calls"]

if TYPE_CHECKING:
    from .cache import CachedResponse, ResponseCache
    from .calllog import CALL_FIELDS, CallLog, read_calls
    from .client import LLMClient, LLMOutputError, build_client, default_providers
    from .providers.offline import OfflineProvider, estimate_tokens
    from .request import CallContext, LLMRequest, LLMResponse, Provider, ProviderResult


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
