"""Retry timing and the shared rate limiter: pure logic, no server."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.llm.ratelimit import RateLimiter
from pipeline.llm.retry import RetryPolicy, retry_after_seconds


def test_backoff_is_exponential_with_jitter_and_capped():
    import random

    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = {policy.delay(attempt, rng) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(delays) > 1


def test_retry_after_parsing():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds(later) <= 31


@pytest.mark.parametrize("throttles, expected", [(1, 4.0), (2, 2.0), (5, 1.0)])
def test_concurrency_halves_on_429(throttles, expected):
    limiter = RateLimiter(max_concurrency=8)
    for _ in range(throttles):
        limiter.acquire()
        limiter.release(throttled=True)
    assert limiter.limit == expected


def test_concurrency_recovers_additively():
    limiter = RateLimiter(max_concurrency=8)
    limiter.acquire()
    limiter.release(throttled=True)
    limiter.acquire()
    limiter.release(throttled=True)
    assert limiter.limit == 2.0
    steps = 0
    while limiter.limit < 8 and steps < 1000:
        limiter.acquire()
        limiter.release()
        steps += 1
    assert limiter.limit == 8.0 and 20 < steps < 60  # about `limit` successes per step up


def test_concurrency_limit_is_enforced_across_threads():
    limiter = RateLimiter(max_concurrency=3)
    now, peak, lock = [0], [0], threading.Lock()

    def work():
        limiter.acquire()
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.02)
        with lock:
            now[0] -= 1
        limiter.release()

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 3


def test_requests_per_minute_window():
    clock = [0.0]
    limiter = RateLimiter(max_concurrency=10, requests_per_minute=2, clock=lambda: clock[0])
    for _ in range(2):
        limiter.acquire()
        limiter.release()
    assert limiter._window_wait(0) == pytest.approx(60.0)
    clock[0] = 61.0
    assert limiter._window_wait(0) == 0


def test_tokens_per_minute_window():
    clock = [0.0]
    limiter = RateLimiter(max_concurrency=10, tokens_per_minute=100, clock=lambda: clock[0])
    limiter.acquire(60)
    limiter.release()
    clock[0] = 10.0
    assert limiter._window_wait(30) == 0
    assert limiter._window_wait(50) == pytest.approx(50.0)


