"""The one retry policy of every HTTP client in scenemake (the OpenAI-compatible provider,
the scenario runner's assistant client): exponential backoff with jitter, a cap on the
number of attempts and on the total time, and Retry-After honoured but capped, so a server
asking for an hour's pause cannot stall a run past its limits."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff (base * 2**n, capped, jittered), total time, and
    the longest Retry-After honoured."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_total_s: float = 120.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before try ``attempt + 1`` (attempt counts from 1): equal jitter."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def next_delay(self, attempt: int, elapsed_s: float, retry_after_s: float | None,
                   rng: random.Random) -> float | None:
        """Seconds to wait after failed try ``attempt`` (from 1), or None to give up.

        The backoff, or the server's Retry-After when longer (capped at
        ``max_retry_after_s``); None once the attempts are spent or the wait would pass
        ``max_total_s`` since the first try (``elapsed_s``).
        """
        if attempt >= self.max_attempts:
            return None
        delay = self.delay(attempt, rng)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        if elapsed_s + delay > self.max_total_s:
            return None
        return delay


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
