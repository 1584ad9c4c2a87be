"""The one retry policy of every HTTP client in scenemake (the OpenAI-compatible provider,
the scenario runner's assistant client): exponential backoff with jitter, a cap on the
number of attempts and on the total time, and Retry-After honoured but capped, so a server
asking for an hour's pause cannot stall a run past its limits."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

# The defaults of the endpoint settings that decide when an answer has failed and how long to
# keep asking (pipeline/llm/settings.py ``Endpoint``; every provider reads them from there).
# A stall inside an answer (streamed or not) is seen after IDLE_TIMEOUT_S of silence; a
# server that never begins its answer after TIMEOUT_S (a CPU-served model may take a minute to
# read a long prompt). The budget allows several of either: with it equal to TIMEOUT_S, as
# before, the first stall ended the run ("gave up after 1 attempt(s) in 120.1s"), and a book
# under 30% faults needed up to 8 runs.
TIMEOUT_S = 120.0
IDLE_TIMEOUT_S = 15.0
MAX_ATTEMPTS = 6
MAX_RETRY_SECONDS = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff (base * 2**n, capped, jittered), total time, and
    the longest Retry-After honoured."""

    max_attempts: int = MAX_ATTEMPTS
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_total_s: float = MAX_RETRY_SECONDS
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
        ``max_total_s`` of trying and waiting since the first try (``elapsed_s``; time spent
        waiting for a turn to ask is not trying).
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
