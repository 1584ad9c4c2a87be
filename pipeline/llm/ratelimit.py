"""One limiter per provider, shared by every thread of a run.

Caps concurrent requests, requests per minute and tokens per minute. The allowed
concurrency follows AIMD: halved on a 429, grown back by one slot per window of
successes, so a throttled provider is backed off from and then recovered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Blocks callers until a request may start; thread-safe."""

    def __init__(self, max_concurrency: int = 8, requests_per_minute: int | None = None,
                 tokens_per_minute: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.max_concurrency = max(1, int(max_concurrency))
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.limit = float(self.max_concurrency)
        self.in_flight = 0
        self.waiting_backoff = 0
        self.throttles = 0
        self._clock = clock
        self._cond = threading.Condition()
        self._starts: deque[tuple[float, int]] = deque()  # (time, tokens) of the last minute

    def _window_wait(self, tokens: int) -> float:
        """Seconds until the per-minute windows admit a request of ``tokens``."""
        now = self._clock()
        while self._starts and now - self._starts[0][0] >= 60:
            self._starts.popleft()
        wait = 0.0
        if self.rpm and len(self._starts) >= self.rpm:
            wait = max(wait, 60 - (now - self._starts[0][0]))
        if self.tpm and self._starts:
            used = sum(t for _, t in self._starts)
            if used + tokens > self.tpm:
                # wait until enough of the window has expired
                freed = 0
                for started, t in self._starts:
                    freed += t
                    if used - freed + tokens <= self.tpm:
                        wait = max(wait, 60 - (now - started))
                        break
        return wait

    def acquire(self, tokens: int = 0) -> None:
        """Wait for a slot (concurrency, requests/min, tokens/min), then take it."""
        with self._cond:
            while True:
                if self.in_flight < max(1, int(self.limit)):
                    wait = self._window_wait(tokens)
                    if wait <= 0:
                        break
                    self._cond.wait(timeout=wait)
                else:
                    self._cond.wait()
            self.in_flight += 1
            self._starts.append((self._clock(), tokens))

    def release(self, *, throttled: bool = False) -> None:
        """Give the slot back; ``throttled`` (a 429) halves the allowed concurrency."""
        with self._cond:
            self.in_flight -= 1
            if throttled:
                self.throttles += 1
                self.limit = max(1.0, self.limit / 2)
            else:
                self.limit = min(float(self.max_concurrency), self.limit + 1.0 / self.limit)
            self._cond.notify_all()

    def backoff(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Sleep out a retry delay, counted as 'waiting in backoff' for progress."""
        with self._cond:
            self.waiting_backoff += 1
        try:
            sleep(seconds)
        finally:
            with self._cond:
                self.waiting_backoff -= 1
