"""Truth review: do the captured answers hold the facts the spec expects?

Facts are checked against the structured answer (``entries``, ``semantic_memory``, any
field, by the placeholder path grammar) and the visible reply. ``summary.overall_status``
is ``pass`` (at least one fact, all hold, every step with facts answered), ``fail``, or
``not_checked`` (the spec states no facts: nothing proves the answers true).
"""

from __future__ import annotations

from typing import Any

from . import placeholders
from .capture import evidence_edits
from .contracts import Fact
from .layout import RunLayout, StepRef

_MISSING = object()


def _get(response: dict, path: str) -> Any:
    """The value at ``path`` in the answer, or _MISSING."""
    ph = placeholders.Placeholder("{{" + path + "}}", placeholders.parse_path(path))
    value: Any = response
    for part in ph.path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return _MISSING
        elif not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return abs(float(expected) - float(actual)) < 1e-9
    return expected == actual


def check_fact(fact: Fact, response: dict) -> dict:
    """One fact's result: status pass/fail, expected, actual, message."""
    check = fact.check
    out: dict[str, Any] = {"fact": fact.model_dump(mode="json", exclude_unset=True),
                           "check": check}
    if check == "reply_contains":
        reply = str(response.get("reply", ""))
        ok = fact.reply_contains.lower() in reply.lower()  # type: ignore[union-attr]
        out.update(expected=fact.reply_contains, actual=reply[:200],
                   message="" if ok else f"the visible answer does not say "
                                         f"'{fact.reply_contains}'")
    elif check == "includes":
        path = fact.path or "entries"
        value = _get(response, path)
        wanted = fact.includes if isinstance(fact.includes, list) else [fact.includes]
        if not isinstance(value, list):
            ok = False
            out.update(expected=fact.includes, actual=None if value is _MISSING else value,
                       message=f"{path} is not a list")
        else:
            missing = [w for w in wanted
                       if not any(isinstance(e, dict)
                                  and all(k in e and _same(v, e[k]) for k, v in w.items())
                                  for e in value)]
            ok = not missing
            out.update(expected=fact.includes, actual=f"{len(value)} entries",
                       message="" if ok else f"no entry of {path} matches {missing[0]}")
    else:
        value = _get(response, fact.path or "")
        actual = None if value is _MISSING else value
        if check == "present":
            ok = (value is not _MISSING and value is not None) == fact.present
            out.update(expected=fact.present, actual=actual is not None,
                       message="" if ok else f"{fact.path} is "
                                             f"{'absent' if fact.present else 'present'}")
        elif check == "count":
            ok = isinstance(value, list) and len(value) == fact.count
            n = len(value) if isinstance(value, list) else None
            out.update(expected=fact.count, actual=n,
                       message="" if ok else f"{fact.path} has {n} item(s), expected "
                                             f"{fact.count}")
        else:
            ok = value is not _MISSING and _same(fact.equals, value)
            out.update(expected=fact.equals, actual=actual,
                       message="" if ok else f"{fact.path} is {actual!r}, expected "
                                             f"{fact.equals!r}")
    out["status"] = "pass" if ok else "fail"
    return out


def review_step(step: StepRef) -> dict:
    """A step's truth result: pass, fail, missing (facts but no answer) or not_checked."""
    facts = [Fact.model_validate(f) for f in (step.spec.get("expect") or {}).get("facts", [])]
    row: dict[str, Any] = {"scenario_id": step.scenario_id, "step_id": step.step_id,
                           "facts": []}
    if not facts:
        row["status"] = "not_checked"
        return row
    response = step.response()
    if response is None:
        row["status"] = "missing"
        row["message"] = "no captured answer to check"
        return row
    row["facts"] = [check_fact(f, response) for f in facts]
    row["status"] = "fail" if any(r["status"] == "fail" for r in row["facts"]) else "pass"
    edited = evidence_edits(step.dir, step.state())
    if edited:
        # facts that hold on an edited answer prove nothing about the assistant
        row["status"] = "fail"
        row["evidence_edited"] = edited
        row["message"] = (f"{', '.join(edited)} changed after capture: the facts were "
                          "checked against the edited text")
    return row


def build(layout: RunLayout) -> dict:
    """``truth_review.json`` for a run."""
    steps = [review_step(s) for s in layout.steps()]
    results = [f for s in steps for f in s["facts"]]
    failed = sum(1 for r in results if r["status"] == "fail")
    missing = sum(1 for s in steps if s["status"] == "missing")
    checked = [s for s in steps if s["status"] != "not_checked"]
    edited = sum(1 for s in steps if s.get("evidence_edited"))
    if not checked:
        overall = "not_checked"
    elif failed or missing or edited:
        overall = "fail"
    else:
        overall = "pass"
    return {
        "kind": "truth_review", "run_id": layout.run_id,
        "summary": {"overall_status": overall, "facts_total": len(results),
                    "facts_passed": len(results) - failed, "facts_failed": failed,
                    "steps_checked": len(checked),
                    "steps_failed": sum(1 for s in steps if s["status"] == "fail"),
                    "steps_missing": missing,
                    "steps_edited": edited},
        "steps": steps,
    }


def render_md(review: dict) -> str:
    """``truth_review.md``."""
    s = review["summary"]
    lines = [f"# Truth review: {review['run_id']}", "",
             f"**Overall: {s['overall_status']}**: {s['facts_passed']}/{s['facts_total']} "
             f"facts hold; {s['steps_failed']} step(s) failed, {s['steps_missing']} without an "
             "answer.", ""]
    for step in review["steps"]:
        lines.append(f"## {step['scenario_id']}/{step['step_id']}: {step['status']}")
        if step.get("message"):
            lines.append(f"- {step['message']}")
        for r in step["facts"]:
            mark = "ok" if r["status"] == "pass" else "FAIL"
            desc = r["message"] or r["fact"].get("note") or f"{r['check']} {r['expected']!r}"
            where = r["fact"].get("path") or ("reply" if r["check"] == "reply_contains"
                                               else "entries")
            lines.append(f"- [{mark}] {where} {r['check']}: {desc}")
        lines.append("")
    return "\n".join(lines)
