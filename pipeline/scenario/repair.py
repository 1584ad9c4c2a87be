"""A bounded repair: the plan, the coder's prompt and its checklist.

From the repair targets of a reviewed run (the analyst's, or a GUI run review's
``repair_targets.json``), :func:`build_plan` keeps at most ``max_targets`` open targets,
worst first (the others are deferred to a later iteration), and enriches each with the
runtime files where the repair would start and what the rerun must show. :func:`write`
writes, into one repair folder:

- ``repair_iteration_plan.json``: the plan (machine-readable);
- ``repair_prompt.md``: what the coder is asked to do, ending in a ``json`` block with the
  suggested rule changes (``{"suggested_changes": [{"file", "set"}]}``) so that a simple
  coder can apply them without reading prose;
- ``repair_checklist.md``: what a reviewer ticks off after the patch.

Targets that need a user decision are never handed to the coder: they are listed as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.store import atomic_write_json, atomic_write_text

from .analyst import RUNTIME_FILES

PLAN = "repair_iteration_plan.json"
PROMPT = "repair_prompt.md"
CHECKLIST = "repair_checklist.md"
DEFAULT_MAX_TARGETS = 5
_ORDER = {"P0": 0, "P1": 1, "P2": 2}


def _enrich(target: dict) -> dict:
    t = dict(target)
    extra = RUNTIME_FILES.get("rule" if t.get("rule") else t.get("code", ""), [])
    t["candidate_files"] = list(dict.fromkeys(list(t.get("candidate_files") or []) + extra))
    t.setdefault("requires_user_decision", False)
    t.setdefault("decision_reason", None)
    return t


def build_plan(targets: list[dict], *, iteration: int, source: dict, max_targets: int,
               rerun: list[str], context: dict | None = None) -> dict[str, Any]:
    """The plan of one repair iteration (see the module docstring)."""
    # stable: within a priority the source's order (most frequent first) is kept
    ordered = sorted((_enrich(t) for t in targets),
                     key=lambda t: _ORDER.get(t.get("priority", "P2"), 3))
    decisions = [t for t in ordered if t["requires_user_decision"]]
    repairable = [t for t in ordered if not t["requires_user_decision"]
                  and t.get("priority") in ("P0", "P1")]
    chosen, deferred = repairable[:max_targets], repairable[max_targets:]
    changes: dict[str, dict] = {}
    for t in chosen:
        if t.get("suggested_change") and t.get("rule"):
            rules_file = next((f for f in t["candidate_files"] if f.endswith(".json")), None)
            if rules_file:
                changes.setdefault(rules_file, {}).update(t["suggested_change"])
    return {
        "kind": "repair_iteration_plan", "repair_iteration": iteration, "source": source,
        "context": context or {}, "max_targets": max_targets,
        "targets": chosen, "deferred_targets": deferred,
        "user_decision_targets": decisions,
        "low_priority_targets": [t for t in ordered if not t["requires_user_decision"]
                                 and t.get("priority") not in ("P0", "P1")],
        "suggested_changes": [{"file": f, "set": v} for f, v in changes.items()],
        "candidate_files": list(dict.fromkeys(f for t in chosen for f in t["candidate_files"])),
        "rerun_instructions": rerun,
        "done_when": ["no open P0 or P1 finding of these targets in the rerun",
                      "no new P0 finding anywhere in the rerun",
                      "the truth review still passes (the facts did not change)"],
        "prepared_at": now_iso(),
    }


def render_prompt(plan: dict) -> str:
    """``repair_prompt.md``: the bounded task for a non-interactive coder."""
    ctx = plan.get("context") or {}
    src = plan["source"]
    lines = [f"# Repair iteration {plan['repair_iteration']}"
             + (f": {ctx['title']}" if ctx.get("title") else ""), "",
             "You are the coder of an autonomous repair loop. Fix the business defects below "
             "in the assistant, and nothing else.", "",
             f"Source: {src.get('kind')} `{src.get('run_id')}`"
             + (f" ({src['review']})" if src.get("review") else "") + ".", ""]
    if not plan["targets"]:
        lines += ["There is no repairable target in this iteration.", ""]
    for t in plan["targets"]:
        lines += [f"## {t['target_id']} {t['priority']} `{t['code']}` ({t.get('count', 1)}x)", "",
                  t.get("message", ""), ""]
        if t.get("rule"):
            lines.append(f"- Controlling rule: `{t['rule']}`")
        if t.get("suggested_change"):
            lines.append(f"- Suggested change: `{json.dumps(t['suggested_change'])}`")
        lines.append("- Start in: " + ", ".join(f"`{f}`" for f in t["candidate_files"]))
        for s in (t.get("samples") or [])[:2]:
            lines += [f"- Sample: Q: {s.get('question')}",
                      f"  - first line the user saw: {s.get('first_line')}"]
            if s.get("evidence"):
                lines.append(f"  - evidence: {s['evidence']}")
        lines.append("")
    if plan["deferred_targets"]:
        lines += ["## Deferred to a later iteration (do not work on these now)", ""]
        lines += [f"- {t['target_id']} {t['priority']} `{t['code']}`"
                  for t in plan["deferred_targets"]]
        lines.append("")
    if plan["user_decision_targets"]:
        lines += ["## Waiting for a user decision (do not patch these)", ""]
        lines += [f"- {t['target_id']} `{t['code']}`: {t['decision_reason']}"
                  for t in plan["user_decision_targets"]]
        lines.append("")
    lines += ["## Rules", "",
              "- Change only the files named above; never change the facts (SQL, data) to "
              "make a check pass.",
              "- No brittle workaround: if a target cannot be fixed cleanly, change nothing and "
              "say why on stdout.",
              "- Exit 0 when done (whether or not you changed a file), non-zero on failure.", "",
              "## After the patch", ""]
    lines += [f"- `{c}`" for c in plan["rerun_instructions"]]
    lines += ["", "## Machine-readable plan", "", "```json",
              json.dumps({"repair_iteration": plan["repair_iteration"],
                          "suggested_changes": plan["suggested_changes"],
                          "targets": [t["target_id"] for t in plan["targets"]]}, indent=2),
              "```", ""]
    return "\n".join(lines)


def _where(target: dict, limit: int = 4) -> str:
    """Where a target was seen: its steps (pack runs) or sessions (GUI runs), shortened."""
    places = list(target.get("steps") or [])
    if not places:
        places = list(dict.fromkeys(f"session {s.get('session_id')} turn {s.get('turn')}"
                                    for s in target.get("samples") or []))
    more = len(places) - limit
    return ", ".join(places[:limit]) + (f" and {more} more" if more > 0 else "")


def render_checklist(plan: dict) -> str:
    """``repair_checklist.md``: what to verify after the coder's pass."""
    lines = [f"# Repair checklist: iteration {plan['repair_iteration']}", ""]
    for t in plan["targets"]:
        where = _where(t)
        lines.append(f"- [ ] {t['target_id']} {t['priority']} `{t['code']}` is gone in the "
                     "rerun" + (f" ({where})" if where else ""))
    lines += ["- [ ] the truth review still passes",
              "- [ ] no new P0 finding in the rerun",
              "- [ ] only the candidate files changed: "
              + ", ".join(f"`{f}`" for f in plan["candidate_files"]), ""]
    if plan["user_decision_targets"]:
        lines += ["Needs a user decision before it can be repaired:", ""]
        lines += [f"- [ ] {t['target_id']} `{t['code']}`: decided by the user"
                  for t in plan["user_decision_targets"]]
        lines.append("")
    lines += ["Rerun:", ""] + [f"- `{c}`" for c in plan["rerun_instructions"]] + [""]
    return "\n".join(lines)


def write(folder: Path, plan: dict) -> None:
    """Write the plan, the prompt and the checklist into ``folder`` (atomically each)."""
    atomic_write_json(folder / PLAN, plan)
    atomic_write_text(folder / PROMPT, render_prompt(plan))
    atomic_write_text(folder / CHECKLIST, render_checklist(plan))


def suggested_changes(prompt_text: str) -> list[dict]:
    """The ``suggested_changes`` of a prompt's machine-readable block ([] when none)."""
    block = prompt_text.rsplit("```json", 1)
    if len(block) != 2:
        return []
    try:
        data = json.loads(block[1].split("```", 1)[0])
    except ValueError:
        return []
    changes = data.get("suggested_changes") if isinstance(data, dict) else None
    return changes if isinstance(changes, list) else []
