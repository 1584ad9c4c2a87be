"""The autoruns store: runs saved for the GUI, validated or explicitly not.

``<autoruns_dir>/<run_id>/`` holds ``autorun.json`` (what was saved, when, from which
spec, validated or not and why, every gate condition) and copies of the run's state,
reviews and readable outputs, plus ``conversation.json`` (every question and visible
answer). ``<autoruns_dir>/index.jsonl`` gets one line per save.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.core.jsonio import display_path
from pipeline.core.store import append_line, atomic_write_bytes, atomic_write_json

from .layout import RunLayout

COPIED = ("pack_manifest.json", "pack_state.json", "pack_summary.md", "scenario_manifest.json",
          "scenario_state.json", "scenario_summary.md", "scenario_output.md", "final_status.md",
          "truth_review.json", "truth_review.md", "business_review.json", "business_review.md",
          "judge_review.json", "judge_review.md")


def conversation(layout: RunLayout) -> list[dict]:
    """Every step's question and visible answer, in order."""
    out = []
    for step in layout.steps():
        state = step.state() or {}
        response = step.response() or {}
        out.append({"scenario_id": step.scenario_id, "step_id": step.step_id,
                    "question": state.get("question") or step.spec.get("question"),
                    "answer": response.get("reply"), "capture_status": state.get("status"),
                    "session_id": response.get("session_id")})
    return out


def save(layout: RunLayout, autoruns_dir: Path, spec_path: Path, conditions: list[dict],
         validated: bool, reason: str | None) -> Path:
    """Copy the run into the store and index it; returns the saved folder."""
    dest = Path(autoruns_dir) / layout.run_id
    for name in COPIED:
        src = layout.dir / name
        if src.exists():
            atomic_write_bytes(dest / name, src.read_bytes())
    atomic_write_json(dest / "conversation.json",
                      {"run_id": layout.run_id, "steps": conversation(layout)})
    record: dict[str, Any] = {
        "kind": "autorun", "run_id": layout.run_id,
        "pack_id": layout.manifest.get("pack_id"),
        "scenario_id": layout.manifest.get("scenario_id"),
        "validated": validated, "unvalidated_reason": reason,
        "semantic_proof": validated,
        "spec": display_path(spec_path), "spec_hash": layout.manifest.get("spec_hash"),
        "source_run_dir": display_path(layout.dir),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "save_gate": {"passed": all(c["passed"] for c in conditions), "conditions": conditions},
    }
    atomic_write_json(dest / "autorun.json", record)
    append_line(Path(autoruns_dir) / "index.jsonl", json.dumps(
        {k: record[k] for k in ("run_id", "pack_id", "scenario_id", "validated",
                                "unvalidated_reason", "saved_at")}, ensure_ascii=False))
    return dest
