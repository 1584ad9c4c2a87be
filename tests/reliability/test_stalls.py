"""Stalled answers at the default settings (issue 25, item 4): through a proxy that truncates,
resets or stalls 30% of the answers (a stall begins an answer, then leaves the socket open and
silent), the example book finishes in one run, streamed or not, with the endpoint settings
as shipped, and every answer the server gave is paid for once."""

from __future__ import annotations

import random

import pytest
from support.faultproxy import FaultProxy
from support.project import Project

from pipeline.llm.settings import Endpoint

BOOK = "workspace/books/example/book.json"


def _env(base_url: str) -> dict:
    return {"SCENEMAKE_MODEL": "openai:tiny", "SCENEMAKE_BASE_URL": base_url}


@pytest.mark.llama
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "not-streamed"])
def test_the_example_book_under_30_percent_faults_finishes_in_one_run(
        project: Project, llama_server, streamed: bool):
    # a random-weight model writes word salad: lint counts nothing; no endpoint setting is
    # touched, the run is at the defaults
    project.edit_json(BOOK, lambda d: d["lint"].update(min_words=0, forbidden=[]))
    assert "endpoint" not in (project.book / "book.json").read_text()
    rng = random.Random(7)
    kinds = ["stall", "reset", "truncated"]
    with FaultProxy(llama_server.base_url, stream=streamed) as proxy:
        proxy.faults.extend(rng.choice(kinds) if rng.random() < 0.3 else "" for _ in range(600))
        proc = project.doit(env=_env(proxy.base_url), timeout=1800)
        seen, asked_stream, statuses = list(proxy.seen), list(proxy.streamed), proxy.statuses
        passed = proxy.passed
    assert proc.returncode == 0, proc.out[-3000:]
    assert "Traceback" not in proc.out
    misses = project.misses()
    assert len({c["task"] for c in misses}) == 30  # 6 scenes x 5 LLM phases, all in one run
    assert passed == len(misses)  # each answer the server gave is paid for once
    assert seen.count("stall") >= 2 and seen.count("reset") >= 1, seen
    if streamed:
        assert all(asked_stream)
    else:  # it learnt at once that the server answers whole, and asked so from then on
        first_whole = statuses.index(200)
        assert not any(asked_stream[first_whole + 1:])
    again = project.build(env=_env("http://127.0.0.1:9/v1"))  # nothing left to ask
    assert project.misses() == misses and "Traceback" not in again.out


def test_the_defaults_leave_room_for_several_stalls():
    """A stall inside an answer is seen after the idle timeout, one that never begins after
    timeout_s; the retry budget holds several of either (it was equal to timeout_s)."""
    d = Endpoint()
    assert d.max_retry_seconds >= 4 * d.timeout_s
    assert d.max_retry_seconds >= (d.max_attempts - 1) * d.idle_timeout_s + 60
