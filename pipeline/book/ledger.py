"""The phase ledger: a view of the build DB, rewritten from it, never edited by hand.

``draft/context/phase_history/<scene>.json`` follows the spec's schema v1: per phase
its status, timestamp, artifacts, prompt_hash, template_set, pre_state path and hash,
plus the records of accepted overrides (prompt updates, manual edits, stale pre-states).
"""

from __future__ import annotations

from pipeline.book.phase_table import PHASES
from pipeline.book.workspace import Book
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
        if values.get("rounds"):  # lint's repair rounds: findings, answers, what remained
            entry["repair_rounds"] = values["rounds"]
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


# -- the ledger as a table (doit ledger SCENE) --------------------------------------------
TABLE_COLUMNS = ("phase", "status", "when", "attempt", "cache", "tokens", "cost",
                 "prompt change")


def _when(timestamp: str | None) -> str:
    return (timestamp or "-").replace("T", " ").rstrip("Z")


def _row(phase: str, entry: dict | None) -> list[str]:
    if entry is None:
        return [phase, "not run", "-", "-", "-", "-", "-", ""]
    llm = entry.get("llm") or {}
    change = ""
    if entry.get("prompt_update_reason") is not None or entry.get("prompt_hash_new"):
        change = (f"{(entry.get('prompt_hash_prev') or 'none')[:8]} -> "
                  f"{(entry.get('prompt_hash_new') or '')[:8]}: "
                  f"{entry.get('prompt_update_reason') or ''}")
    return [phase, entry["status"], _when(entry.get("timestamp")),
            str(entry["attempt"]) if "attempt" in entry else "-",
            llm.get("cache", "-"),
            f"{llm['tokens_in']}+{llm['tokens_out']}" if llm else "-",
            f"${llm['cost_usd']:.4f}" if llm else "-", change]


def table(ledger: dict) -> str:
    """The ledger as a plain-text table: one row per phase, then the notes and totals."""
    rows = [list(TABLE_COLUMNS)]
    phases = ledger["phases"]
    rows += [_row(phase, phases.get(phase)) for phase in PHASES]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [f"scene {ledger['scene_id']} of book '{ledger['book']}'"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = []
    for phase in PHASES:
        entry = phases.get(phase) or {}
        if entry.get("status") == "fail":
            notes.append(f"{phase} failed: {entry.get('error', '').splitlines()[0]}")
        for edit in entry.get("manual_edits", []):
            notes.append(f"{phase}: {edit['path']} edited by hand, accepted with force_resume "
                         f"({edit['hash_prev'][:8]} -> {edit['hash_new'][:8]})")
        for stale in entry.get("forced_resume", []):
            notes.append(f"{phase}: kept its result over a changed pre-state {stale['path']} "
                         "(force_resume)")
    totals = ledger["totals"]
    lines.append("")
    lines += [f"note: {n}" for n in notes]
    lines.append(f"total: {totals['llm_phases']} LLM phase(s), {totals['cache_hits']} from the "
                 f"cache, {totals['tokens_in']}+{totals['tokens_out']} tokens, "
                 f"${totals['cost_usd']:.4f}")
    return "\n".join(lines) + "\n"
