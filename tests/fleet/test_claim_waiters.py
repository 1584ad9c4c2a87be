"""A machine waiting for another's claim wakes when the answer commits (LISTEN/NOTIFY on a
real PostgreSQL), not at its next poll; and it pays nothing."""

from __future__ import annotations

import threading
import time

import pytest
from support.postgres import fresh_db

from pipeline.core.hashing import hash_json
from pipeline.llm.cache import CachedResponse
from pipeline.llm.shared import open_shared
from pipeline.llm.shared.connection import Connector
from pipeline.llm.shared.store import PgClaims, PgResponseCache

pytestmark = [pytest.mark.fleet, pytest.mark.slow]


def _one(url: str, sql: str):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def _until(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_waiter_wakes_when_the_answer_commits_and_pays_nothing(pg):
    url = fresh_db(pg)
    open_shared(url)
    # Waiters that would look again only after an hour: only the holder's commit can wake
    # them. Three machines' claims and caches on the same database.
    machines = {}
    for name in ("one", "two", "three"):
        db = Connector(url)
        claims = PgClaims(db, f"{name}#1-x", lease_s=7200, heartbeat_s=3600, poll_s=3600)
        machines[name] = (claims, PgResponseCache(db, claims, name))
    request = {"model": "m", "prompt": "the same question"}
    key = hash_json(request)
    answer = CachedResponse(text="the answer", tokens_in=3, tokens_out=4, cost_usd=0.5,
                            latency_ms=9.0)
    paid: list[str] = []
    got: dict[str, str] = {}

    def ask(name: str) -> None:
        claims, cache = machines[name]
        with claims.claim(key):
            hit = cache.get(key)  # re-read under the claim, as the client does
            if hit is None:
                paid.append(name)
            else:
                got[name] = hit.text

    one_claims, one_cache = machines["one"]
    with one_claims.claim(key):
        waiters = [threading.Thread(target=ask, args=(n,), daemon=True) for n in ("two", "three")]
        for t in waiters:
            t.start()
        # both are waiting on the claim, listening
        _until(lambda: _one(url, "SELECT count(*) FROM pg_stat_activity "
                                 "WHERE query LIKE 'LISTEN%'") == 2)
        assert _one(url, "SELECT count(*) FROM llm_claims") == 1
        paid.append("one")  # the holder pays, and stores the answer with the release
        one_cache.put(key, request, answer)
    for t in waiters:
        t.join(60)  # a guard against a hang: their poll alone would take an hour
    assert not any(t.is_alive() for t in waiters), "a waiter was not woken by the commit"
    assert paid == ["one"] and got == {"two": "the answer", "three": "the answer"}
    assert _one(url, "SELECT count(*) FROM llm_claims") == 0
    assert _one(url, "SELECT count(*) FROM llm_responses") == 1
