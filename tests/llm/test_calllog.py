"""The call log's documented fields stay (book, task, scene, phase ...): the neutral
CallContext maps onto them when writing, and old logs read the same."""

from __future__ import annotations

import json

from pipeline.llm import CALL_FIELDS, CallContext, CallLog, read_calls

# A line as scenemake wrote it before CallContext had neutral names.
OLD_LINE = {"book": "example", "task": "write:ch001_sc002", "scene": "ch001_sc002",
            "phase": "write", "request_hash": "ab" * 32, "cache": "miss", "provider": "offline",
            "model": "offline-1", "tokens_in": 812, "tokens_out": 240, "cost_usd": 0.0021,
            "latency_ms": 12.5, "timestamp": "2026-11-01T10:00:00.000Z", "attempt": 0, "try": 0}


def test_an_old_log_line_reads_as_before_next_to_a_new_one(tmp_path):
    path = tmp_path / "llm_calls.jsonl"
    path.write_text(json.dumps(OLD_LINE) + "\n", encoding="utf-8")
    ctx = CallContext(run="example", task="write:ch001_sc003", unit="ch001_sc003", step="write")
    CallLog(path).record(ctx, request_hash="cd" * 32, cache="hit", provider="offline",
                         model="offline-1", tokens_in=800, tokens_out=200, cost_usd=0.0,
                         latency_ms=0.4, attempt=0, try_index=0, cost_avoided_usd=0.002)
    old, new = read_calls(path)
    assert old == OLD_LINE
    assert set(CALL_FIELDS) <= new.keys() and list(new)[:4] == ["book", "task", "scene", "phase"]
    assert (new["book"], new["scene"], new["phase"]) == ("example", "ch001_sc003", "write")
    # what `doit cost` groups by is there in both
    assert [(c["book"], c["phase"], c["cache"]) for c in (old, new)] == [
        ("example", "write", "miss"), ("example", "write", "hit")]
    assert CallContext.from_log(old) == CallContext("example", "write:ch001_sc002",
                                                    "ch001_sc002", "write")
    assert CallContext.from_log(new) == ctx
    assert CallContext.from_log({"task": "t"}) == CallContext(task="t")
