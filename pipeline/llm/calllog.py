"""The LLM call log: one JSON line per request, hit or miss (``llm_calls.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.clock import now_iso_ms as utc_timestamp
from pipeline.core.store import append_line

from .request import CallContext

# Every line carries these; hits also carry ``cost_avoided_usd``, a line whose request
# carried a seed its ``seed``, and a try whose answer was refused the ``finding`` (why it
# was re-asked).
CALL_FIELDS = (
    "book",
    "task",
    "scene",
    "phase",
    "request_hash",
    "cache",
    "provider",
    "model",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_ms",
    "timestamp",
    "attempt",
    "try",
)



class CallLog:
    """Appends call records to one JSONL file; safe across threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def record(
        self,
        ctx: CallContext,
        *,
        request_hash: str,
        cache: str,
        provider: str,
        model: str,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float,
        latency_ms: float,
        attempt: int,
        try_index: int,
        cost_avoided_usd: float | None = None,
        seed: int | None = None,
        finding: str | None = None,
    ) -> dict:
        """Append one line for a call and return the record written."""
        if cache not in ("hit", "miss"):
            raise ValueError(f"cache must be 'hit' or 'miss', not {cache!r}")
        line: dict = {
            **ctx.log_fields(),  # book, task, scene, phase: the log's names are a contract
            "request_hash": request_hash,
            "cache": cache,
            "provider": provider,
            "model": model,
            "tokens_in": int(tokens_in),
            "tokens_out": int(tokens_out),
            "cost_usd": float(cost_usd),
            "latency_ms": round(float(latency_ms), 3),
            "timestamp": utc_timestamp(),
            "attempt": int(attempt),
            "try": int(try_index),
        }
        if cost_avoided_usd is not None:
            line["cost_avoided_usd"] = float(cost_avoided_usd)
        if seed is not None:
            line["seed"] = int(seed)
        if finding is not None:
            line["finding"] = finding
        # One O_APPEND write per line, so concurrent tasks never interleave; field order kept.
        append_line(self.path, json.dumps(line, ensure_ascii=False))
        return line


def read_calls(path: str | Path) -> list[dict]:
    """All call records in the log at ``path`` (empty if it does not exist).

    Blank or unparsable lines are skipped: a log is for reporting, never a reason to fail.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    calls = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            calls.append(obj)
    return calls
