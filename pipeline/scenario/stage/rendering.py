"""The stage's human-facing files: ``stage_loop_handoff.md`` and ``stage_repair_handoff.md``
(rendered from the summary and the repair handoff document; they write nothing)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .state import StageState


def handoff_md(stage: StageState, s: dict) -> str:
    """``stage_loop_handoff.md``: what the human confirms, and what comes next."""
    loop = s["loop"] or {}
    gate = s["stage_closing_gate"]
    lines = [f"# Stage {stage.m.stage_id}: "
             f"{'ready for visual confirmation' if s['accepted_gate'] else 'not closed'}",
             ""]
    if stage.m.title or stage.m.goal:
        lines += [f"{stage.m.title}. {stage.m.goal}".strip(". ") + ".", ""]
    lines += [f"- Pack loop: {loop.get('status', 'not run')}, score {loop.get('score')}, "
              f"{loop.get('iterations', 0)} iteration(s)",
              f"- loop_accepted_gate: {s['loop_accepted_gate']}; accepted_gate: "
              f"{s['accepted_gate']}",
              f"- Closing gate: {gate['status']}"]
    lines += [f"  - [{'x' if c['passed'] else ' '}] {c['name']}: {c['detail']}"
              for c in gate["conditions"]]
    if s["saved_autorun"]:
        lines.append(f"- Saved autorun: {s['saved_autorun'].get('dest')} (validated "
                     f"{s['saved_autorun'].get('validated')})")
    if s["latest_gui_run"]:
        g = s["latest_gui_run"]
        lines.append(f"- Latest GUI run: {g['run_id']}: {g['next_action']}")
    if s["latest_repair_coder"]:
        c = s["latest_repair_coder"]
        lines.append(f"- Latest repair coder: iteration {c['repair_iteration']}: "
                     f"{c['status']}")
    if s["latest_repair_validation"]:
        v = s["latest_repair_validation"]
        lines.append(f"- Latest repair validation: iteration {v['repair_iteration']} by "
                     f"{v['validation_run_id']}: "
                     f"{'accepted' if v['accepted'] else 'not accepted'}")
    lines += ["", f"**Next action:** `{s['next_action']}`: "
                  f"{s['next_step_guidance']['why']}.", "",
              f"    {s['next_step_guidance']['recommended_command']}", ""]
    if s["accepted_gate"]:
        lines += ["## Visual confirmation", "",
                  "Open the GUI, ask the stage's questions, and check that each answer "
                  "starts with the answer, states the data date, shows no ids or JSON, "
                  "and stays short. Then ingest that run:", "",
                  f"    {stage.command('ingest_gui_run')}", ""]
    return "\n".join(lines)


def repair_handoff_md(stage_id: str, doc: dict, summary: dict) -> str:
    """``stage_repair_handoff.md``: the primary targets and sample failures of ``doc``."""
    source, primary, samples = doc["source"], doc["primary_repair_targets"], doc["sample_failures"]
    lines = [f"# Stage repair handoff: {stage_id}", "",
             f"Next action: `{summary['next_action']}`; closing gate "
             f"`{doc['stage_closing_gate']}`.", ""]
    if source:
        lines += [f"Source: {source['kind']} `{source['run_id']}` ({source['review']}).", ""]
    if primary:
        lines += ["## Primary repair targets", ""]
        for t in primary:
            change = f"; suggested `{json.dumps(t['suggested_change'])}`" \
                if t.get("suggested_change") else ""
            lines.append(f"- {t['target_id']} **{t['priority']}** `{t['code']}` x"
                         f"{t.get('count', 1)}: {t.get('message', '')}{change}")
        lines += ["", "## Sample user-facing failures", ""]
        for s in samples:
            lines += [f"- {s['target_id']} `{s['code']}`: Q: {s.get('question')}",
                      f"  - A (first line): {s.get('first_line')}"]
    else:
        lines.append("No open P0/P1 repair target.")
    lines += ["", f"Next: `{doc['next_command']}`", ""]
    return "\n".join(lines)
