"""The example book built against a real OpenAI-compatible server (llama.cpp) on 127.0.0.1."""

from __future__ import annotations

import pytest
from support.faultproxy import FaultProxy
from support.project import snapshot

pytestmark = pytest.mark.llama

BOOK = "workspace/books/example/book.json"
OUTLINE = "workspace/books/example/outline.json"


def _for_random_weights(project, **endpoint) -> None:
    """A random-weight model writes word salad: lint counts nothing, the world rules stay."""
    def edit(d):
        d["lint"].update(min_words=0, forbidden=[])
        d["endpoint"] = {"response_format": "json_object", **endpoint}
    project.edit_json(BOOK, edit)


def _env(base_url: str) -> dict:
    return {"SCENEMAKE_MODEL": "openai:tiny", "SCENEMAKE_BASE_URL": base_url}


def test_example_book_builds_against_the_server(project, llama_server):
    _for_random_weights(project)
    project.build(env=_env(llama_server.base_url))
    misses = project.misses()
    assert len(misses) == 30
    assert all(c["provider"] == "openai" and c["model"] == "tiny" for c in misses)
    assert all(c["tokens_in"] > 0 and c["tokens_out"] > 0 and c["latency_ms"] > 0
               for c in misses)
    assert len({c["tokens_in"] for c in misses}) > 5  # counted by the server, not a constant
    for sid in ("ch001_sc001", "ch002_sc003"):
        phases = project.ledger(sid)["phases"]
        assert all(e["status"] == "success" for e in phases.values())
        assert phases["write"]["llm"]["provider"] == "openai"
    n = len(project.calls())
    project.build(env=_env(llama_server.base_url))
    assert project.calls()[n:] == []


def _one_scene(project) -> None:
    project.edit_json(OUTLINE, lambda d: (d["chapters"].__delitem__(slice(1, None)),
                                          d["chapters"][0]["scenes"].__delitem__(slice(1, None))))


def test_a_build_under_faults_matches_a_clean_build(tmp_path, llama_server):
    from support.project import Project, make_project

    clean = Project(make_project(tmp_path / "clean"))
    faulty = Project(make_project(tmp_path / "faulty"))
    for p in (clean, faulty):
        _one_scene(p)
        _for_random_weights(p, timeout_s=2, max_attempts=8, max_retry_seconds=60)
    with FaultProxy(llama_server.base_url) as proxy:
        clean.build(env=_env(proxy.base_url))
        assert proxy.passed == 5
    with FaultProxy(llama_server.base_url, hang_s=3) as proxy:
        proxy.faults.extend(["429", "", "500", "reset", "", "truncated", "429-ra", "",
                             "badjson", "502", "", "timeout", "503", ""])
        faulty.build(env=_env(proxy.base_url))
        assert not proxy.faults  # every fault was met
        assert proxy.passed == 5  # each successful response paid for once
    assert len(faulty.misses()) == 5
    assert snapshot(faulty.draft / "scenes") == snapshot(clean.draft / "scenes")


def test_non_retryable_error_fails_the_task_with_the_servers_message(project, llama_server):
    _one_scene(project)
    _for_random_weights(project)
    with FaultProxy(llama_server.base_url) as proxy:
        proxy.faults.append("400")
        proc = project.doit(env=_env(proxy.base_url))
    assert proc.returncode != 0 and "Traceback" not in proc.out
    assert "400 from" in proc.out and "bad request" in proc.out
    assert project.ledger("ch001_sc001")["phases"]["plan"]["status"] == "fail"


def test_parallel_plans_respect_the_concurrency_limit(project, llama_server):
    _for_random_weights(project, max_concurrency=2)
    with FaultProxy(llama_server.base_url) as proxy:
        project.build("-n", "6", "-P", "thread", "plan", env=_env(proxy.base_url))
        assert proxy.passed == 6 and proxy.max_in_flight <= 2


def test_a_book_under_30_percent_faults_finishes_in_one_run(project, llama_server):
    """Issue #15 item 10: stalls, resets, cut and broken bodies, 429s and 5xx on 30% of the
    requests: with the idle timeout on streamed answers the run finishes in one go, and
    every answer the server gave is paid for once."""
    import random

    project.edit_json(OUTLINE, lambda d: d["chapters"].__delitem__(slice(1, None)))
    _for_random_weights(project, timeout_s=4, idle_timeout_s=3, max_attempts=10,
                        max_retry_seconds=120)
    rng = random.Random(30)
    kinds = ["429", "429-ra", "500", "502", "503", "reset", "timeout", "truncated", "badjson"]
    with FaultProxy(llama_server.base_url, hang_s=8) as proxy:
        proxy.faults.extend(rng.choice(kinds) if rng.random() < 0.3 else "" for _ in range(400))
        proc = project.doit(env=_env(proxy.base_url), timeout=600)
        injected = [f for f in proxy.seen if f != "pass"]
    assert proc.returncode == 0, proc.out[-2000:]
    assert "Traceback" not in proc.out
    misses = project.misses()
    assert len({c["task"] for c in misses}) == 15  # 3 scenes x 5 LLM phases
    assert proxy.passed == len(misses)
    assert len(injected) >= 3
