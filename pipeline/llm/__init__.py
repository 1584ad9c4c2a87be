"""The LLM layer: content-addressed requests, a response cache, a call log and providers."""

from .cache import CachedResponse, ResponseCache
from .calllog import CALL_FIELDS, CallLog, read_calls
from .client import LLMClient, LLMOutputError, build_client, default_providers
from .providers.offline import OfflineProvider, estimate_tokens
from .request import CallContext, LLMRequest, LLMResponse, Provider, ProviderResult

__all__ = [
    "CALL_FIELDS",
    "CachedResponse",
    "CallContext",
    "CallLog",
    "LLMClient",
    "LLMOutputError",
    "LLMRequest",
    "LLMResponse",
    "OfflineProvider",
    "Provider",
    "ProviderResult",
    "ResponseCache",
    "build_client",
    "default_providers",
    "estimate_tokens",
    "read_calls",
]
