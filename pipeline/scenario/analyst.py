"""The analyst verdict of a reviewed pack run: a score 0-100, repair targets, a gate, and
whether the next step needs the user.

Deterministic: the verdict is a function of the run's step statuses and its truth, business
and judge reviews, nothing else (no LLM). Written as ``analyst_verdict.json/md``.

**Score.** A weighted mean of four components, each 0..1, times 100, rounded to 0.1::

    score = 100 * (0.35 B + 0.30 T + 0.20 S + 0.15 J) / (sum of the weights present)

- ``B`` business usefulness: per step, 1 when its visible answer passes the business review,
  0.5 when only P1 findings are open, 0 with an open P0 or no answer; the mean over steps.
- ``T`` field truth: facts that hold / facts checked (a step with facts but no answer fails
  all of them). Absent when the pack states no facts.
- ``S`` status: per step, accepted 1, partial 0.5, needs_exact_capability 0.25, blocked 0.
- ``J`` judge: the judge review's score / 100. Absent when the judge was skipped or judged
  nothing.

An absent component drops out and the others are renormalised.

**Gate** (:class:`AnalystGate`): ``score >= target_score`` (80 by default), at most
``max_unresolved_p0`` (0) open P0 findings and ``max_unresolved_p1`` (any, by default) open
P1, no blocked step, every review run, the pack's own ``min_judge_score`` when it sets one,
and every flag of ``required_flags`` clean. ``accepted`` is the gate.

**Repair targets** group the open findings (business findings by code, with the assistant
rule that controls them; failed facts; capability gaps; unexpected routes), worst first,
through the same grouping as the GUI run review bridge.

**requires_user_decision** is set when an open target needs a choice the coder cannot make:
a structured fact (``equals``, ``count``, ``includes``, ``present``) that fails on a captured
answer (the data contradicts the pack: whether the pack or the product is wrong is a business
call, and "fixing" it would mean guessing a missing observation), or a step whose question
references a value the earlier answers do not hold (the chain itself must be re-decided);
and when the gate fails with no open P0/P1 target left for the coder (a judge score below
the pack's minimum, say): going on would be guessing.

**Blocked**: a step has no answer because the assistant runtime failed (connection, timeout,
5xx, non-JSON, contract, lost session). The loop stops there instead of patching.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.core.clock import now_iso
from pipeline.core.models import StrictModel

from . import bridge
from .layout import RunLayout

WEIGHTS = {"business": 0.35, "truth": 0.30, "status": 0.20, "judge": 0.15}
STATUS_VALUE = {"accepted": 1.0, "partial": 0.5, "needs_exact_capability": 0.25, "blocked": 0.0}
BUSINESS_VALUE = {"pass": 1.0, "warn": 0.5, "fail": 0.0, "not_reviewed": 0.0}
SCORE_FORMULA = ("score = 100 * (0.35 B + 0.30 T + 0.20 S + 0.15 J) / (sum of the weights "
                 "present); B business usefulness per step (pass 1, P1 only 0.5, P0 or no "
                 "answer 0), T facts that hold / facts checked, S step status (accepted 1, "
                 "partial 0.5, needs_exact_capability 0.25, blocked 0), J judge score / 100")
FLAGS = ("business_usefulness", "direct_answer", "temporal_honesty", "field_truth",
         "answer_layering", "no_technical_garbage")
Flag = Literal["business_usefulness", "direct_answer", "temporal_honesty", "field_truth",
               "answer_layering", "no_technical_garbage"]
# capture errors of the assistant runtime (the client's error kinds): nothing to patch
RUNTIME_ERRORS = {"connect", "disconnected", "timeout", "http_5xx", "http_429", "http_4xx",
                  "not_json", "contract", "session_lost", "error"}
# where a repair of a target of this code would start, besides the rules file
RUNTIME_FILES = {
    "rule": ["workspace/scenarios/assistant_rules.json", "pipeline/assistant/answers.py"],
    "technical_garbage": ["pipeline/assistant/answers.py", "pipeline/assistant/app.py"],
    "empty_answer": ["pipeline/assistant/answers.py", "pipeline/assistant/app.py"],
    "capability_gap": ["pipeline/assistant/answers.py", "pipeline/assistant/domain.py"],
    "route_mismatch": ["pipeline/assistant/answers.py"],
    "fact_mismatch": ["pipeline/assistant/domain.py", "pipeline/assistant/answers.py"],
    "fact_not_stated": ["pipeline/assistant/answers.py",
                        "workspace/scenarios/assistant_rules.json"],
    "unresolved_reference": ["pipeline/assistant/answers.py"],
}
DECISION_CODES = {
    "fact_mismatch": "the captured data contradicts a fact the pack expects: whether the pack "
                     "or the product is wrong is a business call, and a patch would have to "
                     "guess the missing observation",
    "unresolved_reference": "a question references a value the earlier answers do not hold: "
                            "the scenario chain itself has to be re-decided",
}


class AnalystGate(StrictModel):
    """When the analyst accepts a run (see the module docstring)."""

    target_score: float = Field(80, ge=0, le=100)
    max_unresolved_p0: int = Field(0, ge=0)
    max_unresolved_p1: int | None = Field(None, ge=0)
    required_flags: list[Flag] = []


def stage_gate() -> AnalystGate:
    """The default stage gate: stricter than a pack's."""
    return AnalystGate(target_score=88, max_unresolved_p0=0, max_unresolved_p1=0,
                       required_flags=["business_usefulness", "direct_answer",
                                       "temporal_honesty", "field_truth", "answer_layering"])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def components(layout: RunLayout, result: dict, reviews: dict) -> dict[str, dict]:
    """The score's components: ``{name: {value 0..1, weight, detail}}`` (present ones only)."""
    truth, business, judge = reviews.get("truth"), reviews.get("business"), reviews.get("judge")
    steps = [s for sc in result["scenarios"] for s in sc["steps"]]
    out: dict[str, dict] = {}
    b_steps = (business or {}).get("steps") or []
    if b_steps:
        values = [BUSINESS_VALUE.get(s.get("business_status"), 0.0) for s in b_steps]
        out["business"] = {"value": _mean(values),
                           "detail": f"{sum(v == 1.0 for v in values)}/{len(values)} answers "
                                     "pass the business review"}
    elif steps:
        out["business"] = {"value": 0.0, "detail": "no business review"}
    t_sum = (truth or {}).get("summary") or {}
    if truth and t_sum.get("overall_status") != "not_checked":
        # the facts of a step without an answer were never checked: each counts as failed
        spec_facts = {st.key: len((st.spec.get("expect") or {}).get("facts", []))
                      for st in layout.steps()}
        unchecked = sum(spec_facts.get(f"{st['scenario_id']}/{st['step_id']}", 0)
                        for st in truth.get("steps", []) if st.get("status") == "missing")
        n = t_sum.get("facts_total", 0) + unchecked
        held = t_sum.get("facts_passed", 0)
        out["truth"] = {"value": held / n if n else 0.0, "detail": f"{held}/{n} facts hold"}
    if steps:
        values = [STATUS_VALUE.get(s["status"], 0.0) for s in steps]
        out["status"] = {"value": _mean(values),
                         "detail": f"{sum(s['status'] == 'accepted' for s in steps)}/"
                                   f"{len(steps)} steps accepted"}
    if judge and judge.get("score") is not None:
        out["judge"] = {"value": float(judge["score"]) / 100.0,
                        "detail": f"judge score {judge['score']}"}
    for name, comp in out.items():
        comp["weight"] = WEIGHTS[name]
        comp["value"] = round(comp["value"] or 0.0, 4)
    return out


def score_of(comps: dict[str, dict]) -> float:
    """The weighted score 0-100 of the present components (0 when none)."""
    weight = sum(c["weight"] for c in comps.values())
    if not weight:
        return 0.0
    return round(100 * sum(c["value"] * c["weight"] for c in comps.values()) / weight, 1)


def flags(result: dict, reviews: dict) -> dict[str, bool]:
    """The clean/not-clean flags the stage gate may require."""
    truth, business = reviews.get("truth"), reviews.get("business")
    bflags = ((business or {}).get("summary") or {}).get("flags") or {}
    bsum = (business or {}).get("summary") or {}
    reviewed = business is not None and not bsum.get("steps_not_reviewed")
    return {
        "business_usefulness": reviewed and bsum.get("business_answer_failures", 1) == 0,
        "direct_answer": reviewed and bool(bflags.get("direct_answer")),
        "temporal_honesty": reviewed and bool(bflags.get("temporal_honesty")),
        "field_truth": ((truth or {}).get("summary") or {}).get("overall_status") == "pass",
        "answer_layering": reviewed and bool(bflags.get("answer_layering")),
        "no_technical_garbage": reviewed and bool(bflags.get("no_technical_garbage")),
    }


# -- repair targets ----------------------------------------------------------------------
def _finding(layout: RunLayout, scenario_id: str, step_id: str, severity: str, code: str,
             message: str, evidence: str = "", rule: str | None = None) -> dict:
    """A finding in the GUI bridge's shape, so both group into targets the same way."""
    step = next((s for s in layout.steps()
                 if s.scenario_id == scenario_id and s.step_id == step_id), None)
    state = (step.state() if step else None) or {}
    reply = str(((step.response() if step else None) or {}).get("reply", ""))
    return {"severity": severity, "code": code, "message": message, "evidence": evidence[:200],
            "rule": rule, "session_id": state.get("session_id"), "turn": state.get("turn"),
            "question": state.get("question") or (step.spec.get("question") if step else ""),
            "first_line": (reply.strip().splitlines() or [""])[0],
            "scenario_id": scenario_id, "step_id": step_id}


def findings(layout: RunLayout, result: dict, reviews: dict) -> list[dict]:
    """Every open finding of the run: business, truth, capability, route, reference."""
    out: list[dict] = []
    for f in (reviews.get("business") or {}).get("findings", []):
        if f.get("resolved"):
            continue
        out.append(_finding(layout, f["scenario_id"], f["step_id"], f["severity"], f["code"],
                            f["message"], f.get("evidence", ""), f.get("rule")))
    for st in (reviews.get("truth") or {}).get("steps", []):
        for r in st.get("facts", []):
            if r["status"] != "fail":
                continue
            if r["check"] == "reply_contains":
                out.append(_finding(layout, st["scenario_id"], st["step_id"], "P1",
                                    "fact_not_stated", r["message"], str(r.get("actual", ""))))
            else:
                out.append(_finding(layout, st["scenario_id"], st["step_id"], "P0",
                                    "fact_mismatch", r["message"],
                                    f"expected {r.get('expected')!r}, got {r.get('actual')!r}"))
    for sc in result["scenarios"]:
        for s in sc["steps"]:
            state = next((x.state() for x in layout.steps()
                          if x.scenario_id == sc["scenario_id"] and x.step_id == s["step_id"]),
                         None) or {}
            kind = (state.get("error") or {}).get("kind")
            if s["status"] == "needs_exact_capability":
                out.append(_finding(layout, sc["scenario_id"], s["step_id"], "P1",
                                    "capability_gap", "the assistant has no route for this "
                                    "question", "; ".join(s["reasons"])))
            elif s["status"] == "blocked" and kind in ("unresolved_placeholder",
                                                       "unknown_step_reference"):
                out.append(_finding(layout, sc["scenario_id"], s["step_id"], "P0",
                                    "unresolved_reference", "; ".join(s["reasons"])[:300]))
            for reason in s["reasons"]:
                if reason.startswith("route hardening:"):
                    out.append(_finding(layout, sc["scenario_id"], s["step_id"], "P1",
                                        "route_mismatch", reason.split(": ", 1)[1], reason))
    return out


def repair_targets(run_id: str, found: list[dict]) -> list[dict]:
    """Findings grouped into targets (the bridge's grouping), enriched for a repair."""
    targets = bridge.repair_targets(run_id, found)["targets"]
    for t in targets:
        extra = RUNTIME_FILES.get("rule" if t.get("rule") else t["code"], [])
        t["candidate_files"] = list(dict.fromkeys(list(t["candidate_files"]) + extra))
        reason = DECISION_CODES.get(t["code"])
        t["requires_user_decision"] = reason is not None
        t["decision_reason"] = reason
        steps = [f"{f['scenario_id']}/{f['step_id']}" for f in found
                 if f["severity"] == t["priority"] and f["code"] == t["code"]
                 and f.get("scenario_id")]
        t["steps"] = list(dict.fromkeys(steps))
    return targets


# -- the verdict -------------------------------------------------------------------------
def verdict(layout: RunLayout, result: dict, reviews: dict, gate: AnalystGate,
            iteration: int | None = None, review_failed: bool = False) -> dict[str, Any]:
    """The analyst verdict of a reviewed run (``result`` is :func:`status.evaluate`'s)."""
    comps = components(layout, result, reviews)
    score = score_of(comps)
    flag_values = flags(result, reviews)
    found = findings(layout, result, reviews)
    targets = repair_targets(layout.run_id, found)
    open_p0 = sum(1 for f in found if f["severity"] == "P0")
    open_p1 = sum(1 for f in found if f["severity"] == "P1")
    steps = [(sc["scenario_id"], s) for sc in result["scenarios"] for s in sc["steps"]]
    runtime_blocked = []
    for st in layout.steps():
        state = st.state() or {}
        row = next((s for sid, s in steps if sid == st.scenario_id
                    and s["step_id"] == st.step_id), None)
        kind = (state.get("error") or {}).get("kind")
        if row and row["status"] == "blocked" and (not state or kind in RUNTIME_ERRORS
                                                   or kind is None):
            runtime_blocked.append(f"{st.key}: {'; '.join(row['reasons'])}")
    conditions = [
        ("score", score >= gate.target_score, f"score {score:g} (needs >= "
                                              f"{gate.target_score:g})"),
        ("unresolved_p0", open_p0 <= gate.max_unresolved_p0,
         f"{open_p0} open P0 (at most {gate.max_unresolved_p0})"),
    ]
    if gate.max_unresolved_p1 is not None:
        conditions.append(("unresolved_p1", open_p1 <= gate.max_unresolved_p1,
                           f"{open_p1} open P1 (at most {gate.max_unresolved_p1})"))
    conditions.append(("not_blocked", not runtime_blocked,
                       f"{len(runtime_blocked)} step(s) without an answer from the runtime"))
    conditions.append(("reviews_complete", not review_failed and "business" in reviews,
                       "every review ran" if not review_failed else "a review failed"))
    min_judge = layout.acceptance_gate.get("min_judge_score")
    if min_judge is not None:  # the pack's own gate asks for a judge score: honour it too
        judged = (reviews.get("judge") or {}).get("score")
        conditions.append(("pack_min_judge_score", judged is not None and judged >= min_judge,
                           f"judge score {judged} (the pack needs >= {min_judge:g})"))
    for name in gate.required_flags:
        conditions.append((f"flag_{name}", flag_values[name],
                           f"{name} {'clean' if flag_values[name] else 'NOT clean'}"))
    rows = [{"name": n, "passed": bool(ok), "detail": d} for n, ok, d in conditions]
    accepted = all(r["passed"] for r in rows)
    decisions = [{"target_id": t["target_id"], "code": t["code"], "reason": t["decision_reason"],
                  "steps": t["steps"]} for t in targets if t["requires_user_decision"]]
    repairable = [t for t in targets
                  if not t["requires_user_decision"] and t["priority"] in ("P0", "P1")]
    if not accepted and not runtime_blocked and not repairable and not decisions:
        # nothing left for the coder, yet the gate fails: going on would mean guessing
        failed = ", ".join(r["name"] for r in rows if not r["passed"])
        decisions.append({"target_id": None, "code": "gate_without_repair_target",
                          "reason": f"the gate is not met ({failed}) but no open P0/P1 "
                                    "target is left for the coder: lower the target or "
                                    "decide what to change",
                          "steps": []})
    requires = bool(decisions) and not accepted and not runtime_blocked
    if accepted:
        outcome = "accepted"
    elif runtime_blocked:
        outcome = "blocked"
    elif requires:
        outcome = "requires_user_decision"
    else:
        outcome = "needs_repair"
    reason = None
    if requires:
        reason = "; ".join(f"{d['code']}"
                           + (f" ({', '.join(d['steps'][:3])})" if d["steps"] else "")
                           + f": {d['reason']}" for d in decisions)
    return {
        "kind": "analyst_verdict", "run_id": layout.run_id, "iteration": iteration,
        "verdict": outcome, "accepted": accepted, "score": score,
        "target_score": gate.target_score, "score_formula": SCORE_FORMULA,
        "components": comps, "pack_final_status": result["final_status"],
        "reviews": result["reviews"], "flags": flag_values,
        "unresolved": {"p0": open_p0, "p1": open_p1},
        "requires_user_decision": requires, "user_decision_reason": reason,
        "user_decisions": decisions if requires else [],
        "blocked": bool(runtime_blocked), "blocked_reason": "; ".join(runtime_blocked)[:1000]
        or None,
        "gate": {**gate.model_dump(mode="json"), "passed": accepted, "conditions": rows},
        "repair_targets": targets, "decided_at": now_iso(),
    }


def render_md(v: dict) -> str:
    """``analyst_verdict.md``: the verdict, the score's parts, the gate, the targets."""
    head = f"# Analyst verdict: {v['verdict']} (score {v['score']:g} / target " \
           f"{v['target_score']:g})"
    lines = [head, "", f"Run `{v['run_id']}`"
             + (f", iteration {v['iteration']}" if v.get("iteration") else "")
             + f"; pack status {v['pack_final_status']}; open P0 {v['unresolved']['p0']}, "
             f"P1 {v['unresolved']['p1']}.", ""]
    if v["requires_user_decision"]:
        lines += ["**Requires a user decision:** " + (v["user_decision_reason"] or ""), ""]
    if v["blocked"]:
        lines += ["**Blocked:** " + (v["blocked_reason"] or ""), ""]
    lines += ["## Score", "", f"`{v['score_formula']}`", ""]
    for name, c in v["components"].items():
        lines.append(f"- {name} (weight {c['weight']:g}): {c['value']:.3f}: {c['detail']}")
    lines += ["", "## Gate", ""]
    lines += [f"- [{'x' if c['passed'] else ' '}] {c['name']}: {c['detail']}"
              for c in v["gate"]["conditions"]]
    lines += ["", "## Flags", ""]
    lines += [f"- {k}: {'clean' if ok else 'NOT clean'}" for k, ok in v["flags"].items()]
    if v["repair_targets"]:
        lines += ["", "## Repair targets", ""]
        for t in v["repair_targets"]:
            change = f"; suggested {t['suggested_change']}" if t.get("suggested_change") else ""
            dec = " (needs a user decision)" if t["requires_user_decision"] else ""
            lines.append(f"- {t['target_id']} **{t['priority']}** `{t['code']}` x{t['count']}: "
                         f"{t['message']}{change}{dec}")
    return "\n".join(lines) + "\n"
