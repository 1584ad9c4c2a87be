"""The status contract: ``accepted``, ``partial``, ``blocked``, ``needs_exact_capability``.

A step's capture status (its ``step_state.json``) is refined by the reviews: an accepted
step whose facts fail needs evidence hardening, one with unresolved P0/P1 business
findings needs presentation hardening; both make it ``partial``. Scenarios and packs take
the worst status of their parts (blocked, then needs_exact_capability, then partial).
The acceptance gate adds the reviews' own verdicts and, when the pack asks for one, a
minimum judge score. Written to ``scenario_state.json`` / ``pack_state.json`` and
``final_status.md`` (plus the summaries and the readable output) after every step and
after the reviews.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.clock import now_iso
from pipeline.core.store import atomic_write_json, atomic_write_text

from .layout import STATUSES, RunLayout, ScenarioRef, rollup


def _by_step(review: dict | None, key: str = "steps") -> dict[tuple[str, str], dict]:
    if not review:
        return {}
    return {(s["scenario_id"], s["step_id"]): s for s in review.get(key, [])}


def step_status(state: dict | None, truth: dict | None,
                findings: list[dict]) -> tuple[str, list[str]]:
    """A step's final status and reasons, from its capture state and its reviews."""
    if not state:
        return "blocked", ["not captured yet"]
    status = state.get("status", "blocked")
    reasons = list(state.get("reasons") or [])
    if status not in STATUSES:
        status, reasons = "blocked", [f"unknown capture status {status!r}"] + reasons
    if status in ("accepted", "partial"):
        if truth and truth.get("status") == "fail":
            status = "partial"
            failed = [r for r in truth.get("facts", []) if r["status"] == "fail"]
            reasons += [f"evidence hardening: {r['message']}" for r in failed]
        open_ = [f for f in findings if not f.get("resolved") and f["severity"] in ("P0", "P1")]
        if open_:
            status = "partial"
            reasons += [f"presentation hardening: {f['severity']} {f['code']}: {f['message']}"
                        for f in open_]
    return status, reasons


def evaluate(layout: RunLayout, reviews: dict[str, dict] | None) -> dict:
    """Every step's, scenario's and the run's status; the acceptance gate."""
    reviews = reviews or {}
    truth, business, judge = (reviews.get("truth"), reviews.get("business"),
                              reviews.get("judge"))
    truth_steps = _by_step(truth)
    findings_of: dict[tuple[str, str], list[dict]] = {}
    for f in (business or {}).get("findings", []):
        findings_of.setdefault((f["scenario_id"], f["step_id"]), []).append(f)
    scenarios = []
    for sc in layout.scenarios:
        steps = []
        for st in sc.steps:
            state = st.state()
            k = (st.scenario_id, st.step_id)
            status, reasons = step_status(state, truth_steps.get(k), findings_of.get(k, []))
            steps.append({"step_id": st.step_id, "status": status,
                          "capture_status": (state or {}).get("status"),
                          "finished": bool((state or {}).get("finished")),
                          "question": (state or {}).get("question"), "reasons": reasons})
        status = rollup([s["status"] for s in steps])
        scenarios.append({
            "scenario_id": sc.scenario_id, "status": status,
            "complete": all(s["finished"] for s in steps),
            "session_id": next((s.get("session_id") for s in
                                [st.state() or {} for st in sc.steps][::-1]
                                if s.get("session_id")), None),
            "counts": {k: sum(1 for s in steps if s["status"] == k) for k in STATUSES},
            "reasons": [f"{s['step_id']}: {r}" for s in steps if s["status"] != "accepted"
                        for r in s["reasons"]],
            "steps": steps})
    final = rollup([s["status"] for s in scenarios])
    complete = all(s["complete"] for s in scenarios)
    gate = _gate(layout, final, complete, truth, business, judge)
    return {"final_status": final, "complete": complete, "reviewed": bool(reviews),
            "acceptance_gate": gate, "acceptance_gate_passed": gate["passed"],
            "scenarios": scenarios,
            "counts": {k: sum(s["counts"][k] for s in scenarios) for k in STATUSES},
            "reasons": [f"{s['scenario_id']}/{r}" for s in scenarios for r in s["reasons"]],
            "reviews": {
                "truth": (truth or {}).get("summary", {}).get("overall_status"),
                "business": (business or {}).get("overall_business_status"),
                "judge_score": (judge or {}).get("score"),
            }}


def _gate(layout: RunLayout, final: str, complete: bool, truth: dict | None,
          business: dict | None, judge: dict | None) -> dict:
    conditions = [
        ("all_steps_captured", complete, "every step has a captured answer"),
        ("final_status_accepted", final == "accepted", f"final status is {final}"),
        ("truth_pass", (truth or {}).get("summary", {}).get("overall_status") == "pass",
         f"truth review: {(truth or {}).get('summary', {}).get('overall_status', 'missing')}"),
        ("business_pass", (business or {}).get("overall_business_status") == "pass",
         f"business review: {(business or {}).get('overall_business_status', 'missing')}"),
    ]
    min_score = layout.acceptance_gate.get("min_judge_score")
    if min_score is not None:
        score = (judge or {}).get("score")
        conditions.append(("judge_score", score is not None and score >= min_score,
                           f"judge score {score} (needs >= {min_score:g})"))
    rows = [{"name": n, "passed": bool(ok), "detail": d} for n, ok, d in conditions]
    return {"passed": all(r["passed"] for r in rows), "conditions": rows}


def _why_not(cond: dict, kind: str, reviews: dict) -> str:
    """A failed gate condition in the user's words (the condition's name stays in
    ``final_status.md``)."""
    name = cond["name"]
    if name == "truth_pass":
        truth = reviews.get("truth")
        if truth == "not_checked":
            return f"truth not checked (no facts in this {kind})"
        return "truth not reviewed" if truth is None else f"truth {truth}"
    if name == "business_pass":
        business = reviews.get("business")
        return "business not reviewed" if business is None else f"business {business}"
    if name == "all_steps_captured":
        return "not every step has an answer"
    return cond["detail"]


def verdict_line(result: dict, kind: str) -> str:
    """The run's one status with the gate's verdict in the same line, e.g. ``accepted, gate
    not passed: truth not checked (no facts in this case)``."""
    gate = result["acceptance_gate"]
    head = result["final_status"] + ("" if result["reviewed"] else " (capture only, not "
                                                                      "reviewed)")
    if gate["passed"]:
        return f"{head}, gate passed"
    failed = [c for c in gate["conditions"] if not c["passed"]]
    # the status is already the line's first word: say it again only if nothing else failed
    shown = [c for c in failed if c["name"] != "final_status_accepted"] or failed
    return (f"{head}, gate not passed: "
            + "; ".join(_why_not(c, kind, result.get("reviews") or {}) for c in shown))


# -- writing ------------------------------------------------------------------------------
def write(layout: RunLayout, reviews: dict[str, dict] | None, noun: str | None = None) -> dict:
    """Evaluate and write every state, summary and final status file of the run (``noun``:
    what the user ran, ``case``, ``scenario`` or ``pack``; default the run's kind)."""
    result = evaluate(layout, reviews)
    stamp = now_iso()
    for sc, row in zip(layout.scenarios, result["scenarios"], strict=True):
        state = {"kind": "scenario_state", "run_id": layout.run_id,
                 "scenario_id": sc.scenario_id, "status": row["status"],
                 "complete": row["complete"], "reviewed": result["reviewed"],
                 "session_id": row["session_id"], "counts": row["counts"],
                 "reasons": row["reasons"], "steps": row["steps"], "updated_at": stamp}
        if layout.kind == "scenario":  # the run itself: the save gate reads these too
            state.update(final_status=result["final_status"],
                         acceptance_gate_passed=result["acceptance_gate_passed"],
                         acceptance_gate=result["acceptance_gate"], reviews=result["reviews"])
        atomic_write_json(sc.dir / "scenario_state.json", state)
        atomic_write_text(sc.dir / "scenario_summary.md", scenario_summary(sc, row))
        atomic_write_text(sc.dir / "scenario_output.md", scenario_output(sc, row))
        if layout.kind == "pack":
            atomic_write_text(sc.dir / "final_status.md",
                              final_status_md(f"scenario {sc.scenario_id}", row["status"],
                                              row["reasons"], None, result["reviewed"]))
    if layout.kind == "pack":
        state = {"kind": "pack_state", "run_id": layout.run_id,
                 "pack_id": layout.manifest.get("pack_id"),
                 "final_status": result["final_status"],
                 "acceptance_gate_passed": result["acceptance_gate_passed"],
                 "acceptance_gate": result["acceptance_gate"], "complete": result["complete"],
                 "reviewed": result["reviewed"], "reviews": result["reviews"],
                 "counts": result["counts"], "reasons": result["reasons"],
                 "scenarios": [{k: v for k, v in s.items() if k != "steps"}
                               for s in result["scenarios"]],
                 "updated_at": stamp}
        atomic_write_json(layout.dir / "pack_state.json", state)
        atomic_write_text(layout.dir / "pack_summary.md", pack_summary(layout, result))
    name = (f"pack {layout.manifest.get('pack_id')}" if layout.kind == "pack"
            else f"scenario {layout.scenarios[0].scenario_id}")
    atomic_write_text(layout.dir / "final_status.md",
                      final_status_md(name, result["final_status"], result["reasons"],
                                      result["acceptance_gate"], result["reviewed"],
                                      result["reviews"], verdict_line(result, noun or layout.kind),
                                      result["scenarios"]))
    return result


def final_status_md(name: str, status: str, reasons: list[str], gate: dict | None,
                    reviewed: bool, reviews: dict | None = None, verdict: str | None = None,
                    scenarios: list[dict] | None = None) -> str:
    """``final_status.md``: the status first (with the gate's verdict), then the steps,
    then why, then the gate."""
    lines = [f"# Final status: {status}", "", f"{name}.", ""]
    if verdict:
        lines += [f"Verdict: {verdict}.", ""]
    if scenarios:
        lines += ["## Steps", ""] + [f"- {sc['scenario_id']}/{st['step_id']}: {st['status']}"
                                     for sc in scenarios for st in sc["steps"]] + [""]
    if not reviewed:
        lines += ["Reviews have not run yet: this is the capture status only.", ""]
    if reviews:
        lines += [f"Reviews: truth {reviews.get('truth')}, business {reviews.get('business')}, "
                  f"judge score {reviews.get('judge_score')}.", ""]
    if reasons:
        lines += ["## Why", ""] + [f"- {r}" for r in reasons] + [""]
    if gate is not None:
        lines += [f"## Acceptance gate: {'passed' if gate['passed'] else 'not passed'}", ""]
        lines += [f"- [{'x' if c['passed'] else ' '}] {c['name']}: {c['detail']}"
                  for c in gate["conditions"]]
        lines.append("")
    return "\n".join(lines)


def scenario_summary(sc: ScenarioRef, row: dict) -> str:
    """``scenario_summary.md``: one line per step."""
    lines = [f"# Scenario {sc.scenario_id}: {row['status']}", "",
             "| step | status | capture | reasons |", "|---|---|---|---|"]
    for s in row["steps"]:
        reasons = "; ".join(s["reasons"]).replace("|", "\\|")
        lines.append(f"| {s['step_id']} | {s['status']} | {s['capture_status'] or '-'} | "
                     f"{reasons} |")
    return "\n".join(lines) + "\n"


def scenario_output(sc: ScenarioRef, row: dict) -> str:
    """``scenario_output.md``: the conversation as the user saw it."""
    lines = [f"# Scenario {sc.scenario_id}: conversation", ""]
    for st, s in zip(sc.steps, row["steps"], strict=True):
        response: dict[str, Any] = st.response() or {}
        lines += [f"## {st.step_id} ({s['status']})", "",
                  f"**User:** {s['question'] or st.spec.get('question')}", ""]
        if response:
            lines += ["**Assistant:**", "", str(response.get("reply", "")), ""]
        else:
            lines += [f"_No answer: {'; '.join(s['reasons'])}_", ""]
    return "\n".join(lines)


def pack_summary(layout: RunLayout, result: dict) -> str:
    """``pack_summary.md``: one line per scenario, then the counts."""
    lines = [f"# Pack {layout.manifest.get('pack_id')}: {result['final_status']}", "",
             f"Run `{layout.run_id}`; acceptance gate "
             f"{'passed' if result['acceptance_gate_passed'] else 'not passed'}.", "",
             "| scenario | status | accepted | partial | blocked | needs_exact_capability |",
             "|---|---|---|---|---|---|"]
    for s in result["scenarios"]:
        c = s["counts"]
        lines.append(f"| {s['scenario_id']} | {s['status']} | {c['accepted']} | {c['partial']}"
                     f" | {c['blocked']} | {c['needs_exact_capability']} |")
    return "\n".join(lines) + "\n"
