"""Business review: the visible answer first, as a business user reads it.

Deterministic checks of each reply (no LLM), each finding with a severity:

- P0 ``empty_answer``: nothing visible.
- P0 ``missing_direct_answer`` (rule ``direct_answer_first``): the first line is a
  preamble, a heading, or states no fact of the result (no count, value or name).
- P0 ``technical_garbage``: a traceback, an error dump or an unresolved ``{{placeholder}}``.
- P1 ``raw_json`` (``include_raw_json``): raw JSON pasted into the answer.
- P1 ``route_ids`` (``show_route_ids``): internal route / result set / session ids shown.
- P1 ``missing_data_date`` (``state_data_date``): an answer drawn from data that never says
  which date the data is from.
- P1 ``over_broad`` (``max_list_items``): more than 8 detail lines or 220 words.
- P1 ``not_layered`` (``layered_answer``): several results run together without a summary
  line and details.
- P2 ``long_first_line`` (``direct_answer_first``): the first line is over 40 words.

The rule in brackets is the reference assistant's rule that controls the finding
(``workspace/scenarios/assistant_rules.json``); repair targets point at it.

A step fails (a business-answer failure) on any unresolved P0; the run passes only with
no unresolved P0 or P1. A pack may waive a finding (``business_waivers``) with a reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .capture import evidence_edits
from .layout import RunLayout

EDITED = "evidence_edited"  # a captured answer changed after capture

RULE_OF = {
    "missing_direct_answer": "direct_answer_first", "long_first_line": "direct_answer_first",
    "raw_json": "include_raw_json", "route_ids": "show_route_ids",
    "missing_data_date": "state_data_date", "over_broad": "max_list_items",
    "not_layered": "layered_answer",
}
MAX_DETAIL_LINES = 8
MAX_WORDS = 220
MAX_FIRST_LINE_WORDS = 40

_FILLER_RE = re.compile(
    r"^(let me|let's|sure|okay|ok\b|of course|certainly|great question|good question|"
    r"i will|i'll|i am going|i'm going|here is|here are|here's|based on|according to|"
    r"i have checked|i checked|checking|hello|hi\b|thanks|thank you|as an ai)", re.I)
_TRACEBACK_RE = re.compile(
    r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+|"
    r"\b[A-Z][A-Za-z]*(Error|Exception): |internal error", re.M)
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}")
_ROUTE_RE = re.compile(r"\broute[_ ]?(id)?\s*[:=]|\[route\b|\broute:[a-z_]+\.|\bresult_set_id\b|"
                       r"\bsession_id\b|\brs-[0-9a-z]+-\d+\b", re.I)
_JSON_RE = re.compile(r'\[\{"|\{"[^"\n]{1,60}":\s*["\d\[{tfn-]|```json')
_DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\bas of\b", re.I)
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_CANNOT_RE = re.compile(r"\b(can't|cannot|can not|unable|not able|not available|"
                        r"don't have|do not have|no data|not supported|not in the)\b", re.I)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _looks_like_json(line: str) -> bool:
    s = line.strip().strip("`")
    if s.startswith(("{\"", "[{", "[\"", "```json")) or s == "```json":
        return True
    if s[:1] in "[{" and s[-1:] in "]}":
        try:
            json.loads(s)
            return True
        except ValueError:
            return False
    return False


def fact_tokens(entries: list[Any], limit: int = 10) -> tuple[set[str], set[str]]:
    """(numbers, names) a direct answer could state: entry values and the entry count."""
    numbers = {str(len(entries))}
    names: set[str] = set()
    for entry in entries[:limit]:
        if not isinstance(entry, dict):
            continue
        for value in entry.values():
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                numbers.add(f"{value:g}" if isinstance(value, float) else str(value))
            elif isinstance(value, str) and len(value) >= 3:
                names.add(value.lower())
            elif isinstance(value, list):
                names.update(str(v).lower() for v in value if isinstance(v, str))
    return numbers, names


def review_answer(question: str, reply: str, entries: list[Any] | None = None,
                  capability: str = "answered", debug: dict | None = None) -> list[dict]:
    """Findings for one visible answer: ``[{severity, code, message, evidence, rule}]``."""
    entries = entries or []
    findings: list[dict] = []

    def add(severity: str, code: str, message: str, evidence: str = "") -> None:
        findings.append({"severity": severity, "code": code, "message": message,
                         "evidence": evidence[:200], "rule": RULE_OF.get(code)})

    lines = _lines(reply or "")
    if not lines:
        add("P0", "empty_answer", "the assistant showed nothing")
        return findings
    first = lines[0]
    words = len(reply.split())

    # -- technical garbage first: it makes everything else moot for the user
    m = _TRACEBACK_RE.search(reply)
    if m:
        add("P0", "technical_garbage", "a traceback or error dump is shown to the user",
            m.group(0))
    m = _PLACEHOLDER_RE.search(reply)
    if m:
        add("P0", "technical_garbage", "an unresolved placeholder is shown to the user",
            reply[max(0, m.start() - 30): m.end() + 30])
    json_lines = [line for line in lines if _looks_like_json(line)]
    m = _JSON_RE.search(reply)
    if json_lines or m:
        add("P1", "raw_json", "raw JSON is pasted into the answer",
            json_lines[0] if json_lines else reply[m.start(): m.start() + 80])
    route_hits = [m.group(0) for m in _ROUTE_RE.finditer(reply)]
    for key in ("route", "route_id"):
        value = (debug or {}).get(key)
        if isinstance(value, str) and len(value) > 3 and value in reply:
            route_hits.append(value)
    if route_hits:
        add("P1", "route_ids", "internal route or result ids are shown to the user",
            ", ".join(dict.fromkeys(route_hits)))

    # -- direct answer in the first line
    if _FILLER_RE.match(first) or first.startswith("#") or first.endswith(":"):
        add("P0", "missing_direct_answer", "the first line is a preamble, not the answer", first)
    elif capability == "unsupported":
        if not _CANNOT_RE.search(first):
            add("P0", "missing_direct_answer",
                "the assistant cannot answer but the first line does not say so", first)
    elif capability == "clarification":
        if "?" not in first:
            add("P0", "missing_direct_answer",
                "the assistant needs a clarification but the first line asks nothing", first)
    elif entries:
        numbers, names = fact_tokens(entries)
        low = first.lower()
        said = {n.replace(",", "") for n in _NUMBER_RE.findall(first.replace(",", ""))}
        if not (said & numbers) and not any(name in low for name in names):
            add("P0", "missing_direct_answer",
                "the first line states no fact of the result (no count, value or name)", first)
    if len(first.split()) > MAX_FIRST_LINE_WORDS:
        add("P2", "long_first_line", f"the first line has {len(first.split())} words", first)

    # -- temporal honesty, breadth, layering (for answers drawn from data)
    if capability == "answered":
        if not _DATE_RE.search(reply):
            add("P1", "missing_data_date", "the answer never says which date the data is from")
        detail_lines = [line for line in lines if line.startswith(("- ", "* ", "• "))
                        or re.match(r"^\d+[.)] ", line)]
        if len(detail_lines) > MAX_DETAIL_LINES or words > MAX_WORDS:
            add("P1", "over_broad",
                f"{len(detail_lines)} detail lines and {words} words: too much for one answer")
        if len(entries) > 1 and len(lines) < 2:
            add("P1", "not_layered",
                "several results run together in one block, no summary line then details",
                first[:120])
    return findings


def _step_status(findings: list[dict]) -> str:
    open_ = [f for f in findings if not f.get("resolved")]
    if any(f["severity"] == "P0" for f in open_):
        return "fail"
    if any(f["severity"] == "P1" for f in open_):
        return "warn"
    return "pass"


def summarize(findings: list[dict], step_statuses: list[str]) -> dict:
    """Counts, flags and the overall status of a set of reviewed answers."""
    open_ = [f for f in findings if not f.get("resolved")]
    codes = {f["code"] for f in open_}

    def count(sev: str, unresolved: bool = False) -> int:
        pool = open_ if unresolved else findings
        return sum(1 for f in pool if f["severity"] == sev)

    failures = sum(1 for s in step_statuses if s == "fail")
    if count("P0", True) or count("P1", True):
        overall = "fail"
    elif any(s == "not_reviewed" for s in step_statuses) or not step_statuses:
        overall = "incomplete"
    else:
        overall = "pass"
    return {
        "overall_business_status": overall,
        "steps_reviewed": sum(1 for s in step_statuses if s != "not_reviewed"),
        "steps_not_reviewed": sum(1 for s in step_statuses if s == "not_reviewed"),
        "p0": count("P0"), "p1": count("P1"), "p2": count("P2"),
        "unresolved_p0": count("P0", True), "unresolved_p1": count("P1", True),
        "business_answer_failures": failures,
        "flags": {
            "direct_answer": "missing_direct_answer" not in codes,
            "no_technical_garbage": not codes & {"technical_garbage", "raw_json", "route_ids",
                                                 "empty_answer"},
            "temporal_honesty": "missing_data_date" not in codes,
            "not_over_broad": "over_broad" not in codes,
            "answer_layering": "not_layered" not in codes,
        },
    }


def build(layout: RunLayout) -> dict:
    """``business_review.json`` for a run."""
    waivers = {(w["scenario_id"], w["step_id"], w["code"]): w["reason"] for w in layout.waivers}
    findings: list[dict] = []
    steps: list[dict] = []
    for step in layout.steps():
        response = step.response()
        state = step.state() or {}
        row: dict[str, Any] = {"scenario_id": step.scenario_id, "step_id": step.step_id,
                               "question": state.get("question") or step.spec.get("question")}
        if response is None:
            row.update(business_status="not_reviewed", first_line=None,
                       message="no captured answer")
            steps.append(row)
            continue
        reply = str(response.get("reply", ""))
        found = review_answer(row["question"] or "", reply, response.get("entries"),
                              (response.get("capability") or {}).get("status", "answered"),
                              response.get("debug"))
        edited = evidence_edits(step.dir, state)
        if edited:
            found.insert(0, {"severity": "P0", "code": EDITED, "rule": None,
                             "message": f"{', '.join(edited)} changed after capture: this "
                                        "review read the edited text, not the assistant's",
                             "evidence": ", ".join(edited)})
        for i, f in enumerate(found, 1):
            # an edited capture is no answer of the assistant: no waiver makes it one
            reason = None if f["code"] == EDITED else \
                waivers.get((step.scenario_id, step.step_id, f["code"]))
            f.update(id=f"{step.key}#{i}", scenario_id=step.scenario_id,
                     step_id=step.step_id, resolved=reason is not None)
            if reason:
                f["waiver_reason"] = reason
        findings += found
        lines = _lines(reply)
        row.update(business_status=_step_status(found), first_line=lines[0] if lines else "",
                   findings=[f["id"] for f in found])
        steps.append(row)
    summary = summarize(findings, [s["business_status"] for s in steps])
    return {"kind": "business_review", "run_id": layout.run_id,
            "overall_business_status": summary["overall_business_status"],
            "summary": summary, "findings": findings, "steps": steps}


def render_md(review: dict) -> str:
    """``business_review.md``: the findings, worst first, with the user's view of each step."""
    s = review["summary"]
    lines = [f"# Business review: {review['run_id']}", "",
             f"**Overall: {review['overall_business_status']}**: P0 {s['p0']} "
             f"(unresolved {s['unresolved_p0']}), P1 {s['p1']} (unresolved {s['unresolved_p1']}),"
             f" P2 {s['p2']}; business-answer failures {s['business_answer_failures']}.", "",
             "Flags: " + ", ".join(f"{k} {'ok' if v else 'NO'}" for k, v in s["flags"].items()),
             ""]
    order = {"P0": 0, "P1": 1, "P2": 2}
    if review["findings"]:
        lines += ["## Findings", ""]
        for f in sorted(review["findings"], key=lambda f: (order[f["severity"]], f["id"])):
            tail = f" (waived: {f['waiver_reason']})" if f.get("resolved") else ""
            rule = f" [rule `{f['rule']}`]" if f.get("rule") else ""
            lines.append(f"- **{f['severity']}** `{f['code']}` {f['scenario_id']}/"
                         f"{f['step_id']}: {f['message']}{rule}{tail}")
            if f.get("evidence"):
                lines.append(f"  > {f['evidence']}")
        lines.append("")
    lines += ["## Steps", ""]
    for st in review["steps"]:
        lines.append(f"- {st['scenario_id']}/{st['step_id']}: {st['business_status']}: "
                     f"\"{st.get('first_line') or st.get('message', '')}\"")
    return "\n".join(lines) + "\n"
