"""The embedded offline provider: deterministic, readable answers with no network.

Everything derives from the request: the seed is its blake3 content address (so bumping
``attempt`` gives a fresh sample) and the words come from its own messages.
"""

from __future__ import annotations

import json
import math
import random
import time

from .. import schemafill
from ..request import LLMRequest, ProviderResult


def estimate_tokens(text: str) -> int:
    """Rough token count where no tokenizer answers: the larger of 1.3 tokens a word and one
    token per 4 characters (prose has many short words; JSON and schemas few spaces, and
    words*1.3 alone undercounted them, so budgets reserved too little)."""
    return max(math.ceil(len(text.split()) * 1.3), len(text) // 4)


class OfflineProvider:
    """Answers from the request alone; ``latency_ms`` simulates a slow model on each call."""

    name = "offline"

    def __init__(self, latency_ms: float = 0.0):
        self.latency_ms = float(latency_ms)

    def generate(self, request: LLMRequest) -> ProviderResult:
        """Free text, or a JSON instance of ``request.output_schema``, seeded by the request.

        With ``latency_ms``, the call takes that long in all, its own work included, as a
        server's answer would.
        """
        deadline = time.monotonic() + self.latency_ms / 1000
        rng = random.Random(int(request.request_hash(), 16))
        vocab = schemafill.Vocabulary.from_messages(request.messages)
        if request.output_schema is None:
            text = schemafill.prose(rng, vocab, min_words=80)
        else:
            data = schemafill.fill_valid(request.output_schema, rng, vocab)
            text = json.dumps(data, ensure_ascii=False)
        if self.latency_ms > 0:
            time.sleep(max(0.0, deadline - time.monotonic()))
        prompt = "\n".join(
            m["content"]
            for m in request.messages
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
        if request.output_schema is not None:  # the model receives the schema too
            prompt += "\n" + json.dumps(request.output_schema)
        return ProviderResult(
            text=text, tokens_in=estimate_tokens(prompt), tokens_out=estimate_tokens(text)
        )


class OfflinePlugin:
    """Registers ``offline``: ``offline_latency_ms`` (or ``latency_ms``) simulates a slow
    model for benchmarks; it is not part of any request hash."""

    def create(self, config) -> OfflineProvider:
        """The offline provider for ``config.settings``."""
        settings = config.settings
        latency = settings.get("offline_latency_ms") or settings.get("latency_ms") or 0.0
        return OfflineProvider(latency_ms=float(latency))

    def estimate_seconds(self, settings, calls: int, tokens_in: float,
                         tokens_out: float) -> float:
        """The stand-in answers at once (or after its simulated latency)."""
        latency = settings.get("offline_latency_ms") or settings.get("latency_ms") or 0.0
        return calls * float(latency) / 1000


PLUGIN = OfflinePlugin()
