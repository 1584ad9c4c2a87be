"""The phase ledger: a view of the build DB, rewritten from it, never edited by hand.

``draft/context/phase_history/<scene>.json`` follows the spec's schema v1: per phase
its status, timestamp, artifacts, prompt_hash, template_set, pre_state path and hash,
plus the records of accepted overrides (prompt updates, manual edits, stale pre-states).
"""

from __future__ import annotations

from pipeline.book.workspace import PHASES, Book
from pipeline.core.builddb import SceneDB
from pipeline.core.store import atomic_write_json

LEDGER_VERSION = 1


def phase_entry(db: SceneDB, task_id: str) -> dict | None:
    """The ledger entry of one phase task, or None if it never ran."""
    values = db.values(task_id)
    failure = db.failure(task_id)
    events = db.events(task_id)
    if not values and not failure:
        return None
    if failure and not values:
        entry = {"status": "fail", "timestamp": failure["timestamp"], "error": failure["error"]}
    else:
        entry = {"status": "success", "timestamp": values.get("timestamp"),
                 "artifacts": values.get("artifacts", {})}
        if "prompt_hash" in values:
            entry["prompt_hash"] = values["prompt_hash"]
            entry["template_set"] = {r: t["path"] for r, t in values["template_set"].items()}
            entry["template_hashes"] = {r: t["hash"] for r, t in values["template_set"].items()}
            entry["attempt"] = values.get("attempt", 0)
        if "pre_state_path" in values:
            entry["pre_state_path"] = values["pre_state_path"]
            entry["pre_state_hash"] = values["pre_state_hash"]
        if values.get("llm"):
            entry["llm"] = values["llm"]
        if values.get("prompt_update"):
            pu = values["prompt_update"]
            entry.update(prompt_hash_prev=pu["prompt_hash_prev"],
                         prompt_hash_new=pu["prompt_hash_new"],
                         prompt_update_reason=pu["prompt_update_reason"],
                         prompt_update_templates=pu.get("templates", []))
    edits = [e for e in events if e["kind"] == "manual_edit"]
    stale = [e for e in events if e["kind"] == "pre_state_accepted"]
    if edits:
        entry["manual_edits"] = [{k: v for k, v in e.items() if k != "kind"} for e in edits]
    if stale:
        entry["forced_resume"] = [{k: v for k, v in e.items() if k != "kind"} for e in stale]
    return entry


def build(db: SceneDB, book: Book, scene_id: str) -> dict:
    """The ledger of one scene, from the DB."""
    phases = {}
    for phase in PHASES:
        entry = phase_entry(db, f"{phase}:{scene_id}")
        if entry is not None:
            phases[phase] = entry
    totals = {"llm_phases": 0, "cache_hits": 0, "tokens_in": 0, "tokens_out": 0,
              "cost_usd": 0.0}
    for entry in phases.values():
        llm = entry.get("llm")
        if llm:
            totals["llm_phases"] += 1
            totals["cache_hits"] += llm["cache"] == "hit"
            totals["tokens_in"] += llm["tokens_in"]
            totals["tokens_out"] += llm["tokens_out"]
            totals["cost_usd"] += llm["cost_usd"]
    return {"version": LEDGER_VERSION, "book": book.name, "scene_id": scene_id,
            "phases": phases, "totals": totals}


def export(db: SceneDB, book: Book, scene_id: str) -> dict:
    """Rewrite the scene's ledger file from the DB and return it."""
    ledger = build(db, book, scene_id)
    atomic_write_json(book.ledger_path(scene_id), ledger)
    return ledger
