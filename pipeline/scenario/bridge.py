"""The GUI run review bridge: a saved ``assistant-stage1-<id>`` run -> machine-readable review.

Reads ``<runs_dir>/llm_normalizer/reports/<run_id>.md`` and
``<runs_dir>/llm_normalizer/data/assistant_sessions/<run_id>-*.json`` and writes, under
``<artifacts>/gui_run_reviews/<run_id>/``: ``conversation_pairs.json``, ``run_review.json``,
``run_review.md``, ``question_quality_review.json`` and ``repair_targets.json``.

Business-first: each pair's question and visible answer are reviewed (the business
review's checks) before route ids and debug fields; the questions themselves get a
deterministic quality review. Nothing here calls an LLM.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.assistant.sessions import reports_dir, session_order, sessions_dir
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, loads
from pipeline.core.store import atomic_write_json, atomic_write_text

from .business_review import review_answer, summarize

RULES_FILE = "workspace/scenarios/assistant_rules.json"
SUGGESTED = {"direct_answer_first": True, "state_data_date": True, "show_route_ids": False,
             "include_raw_json": False, "max_list_items": 5, "layered_answer": True}
OUTPUTS = ("run_review.json", "run_review.md", "conversation_pairs.json",
           "question_quality_review.json", "repair_targets.json")

_FOLLOW_UP_RE = re.compile(r"\b(those|these|them|they|it|that|this one|same|result set|"
                           r"previous|above|rs-[0-9a-z-]+)\b", re.I)
_DIRECT_RE = re.compile(r"^(what|which|how|who|whom|when|where|why|is|are|do|does|did|can|"
                        r"could|should|will|show|list|give|tell|name)\b", re.I)
_REPORT_RE = re.compile(r"\b(report|summary|summari[sz]e|overview|analysis|analy[sz]e|"
                        r"breakdown|trend|compare|comparison|dashboard)\b", re.I)
_BUSINESS_NOUNS = re.compile(
    r"\b(stock|inventory|reorder|supplier|suppliers|movement|movements|shipment|shipped|"
    r"received|value|cost|price|item|items|warehouse|order|orders|lead time|units?|sku|"
    r"location|depot|hub|customer|revenue|sales|demand)\b", re.I)
_NUMBER_OR_DATE = re.compile(r"\d")


def sources(runs_dir: Path, run_id: str) -> tuple[Path | None, list[Path]]:
    """(report, session files) of a run; UserError naming both places when neither exists."""
    report = reports_dir(runs_dir) / f"{run_id}.md"
    found = []
    try:
        candidates = sorted(sessions_dir(runs_dir).glob(f"{run_id}-*.json"))
    except OSError as exc:  # e.g. the folder is a symlink loop
        raise _unreadable(sessions_dir(runs_dir), exc) from None
    for path in candidates:
        data = _read_session(path)
        # assistant-stage1-a-*.json also matches run assistant-stage1-a-b: check the owner
        if data.get("run_id", run_id) == run_id:
            found.append(path)
    if not found and not report.exists():
        raise UserError(f"no saved run {run_id}: neither {display_path(report)} nor "
                        f"{display_path(sessions_dir(runs_dir))}/{run_id}-*.json exists",
                        fix="check the run id and --runs-dir")
    return (report if report.exists() else None), found


def _of(value: Any, kind: type, default: Any) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else default


def _unreadable(path: Path, why: Any) -> UserError:
    return UserError(f"the run's evidence is unreadable: {why}", path=display_path(path),
                     fix="restore the file from the GUI run (or remove it) and review again; "
                         "an unreadable run is never reviewed as a clean one")


def _read_session(path: Path) -> dict:
    """A session file's JSON; unreadable, not JSON, not UTF-8 or the wrong shape: an error
    (a broken run must never read as a clean one)."""
    try:
        data = loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _unreadable(path, "not UTF-8 text") from None
    except ValueError as exc:
        raise _unreadable(path, f"not JSON ({str(exc)[:120]})") from None
    except OSError as exc:
        raise _unreadable(path, exc.strerror or exc) from None
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
        raise _unreadable(path, "not a session (an object with a 'turns' list)")
    for i, turn in enumerate(data["turns"]):
        if not isinstance(turn, dict):
            raise _unreadable(path, f"turns[{i}] is not an object")
    return data


def conversation_pairs(session_files: list[Path]) -> tuple[list[dict], list[dict], int]:
    """(question/answer pairs in session order, skipped files (none: an unreadable file is
    an error), session count)."""
    sessions = [_read_session(path) for path in session_files]
    skipped: list[dict] = []
    sessions.sort(key=session_order)
    pairs = []
    for s in sessions:
        for t in s["turns"]:
            # a field of the wrong type reads as absent (the business review then says so)
            debug = _of(t.get("debug"), dict, {})
            entries = _of(t.get("entries"), list, [])
            pairs.append({
                "index": len(pairs) + 1, "session_id": s.get("session_id"),
                "turn": _of(t.get("turn"), int, None), "question": str(t.get("message", "")),
                "answer": str(t.get("reply", "")),
                "capability": str(_of(t.get("capability"), dict, {}).get("status",
                                                                         "answered")),
                "entries_count": len(entries),
                "route": _of(debug.get("route"), str, None),
                "route_id": debug.get("route_id"),
                "entries": entries, "debug": debug,
            })
    return pairs, skipped, len(sessions)


def _norm(q: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", q.lower()).split())


def question_quality(pairs: list[dict]) -> dict:
    """Deterministic review of the questions asked in the run."""
    questions = [p["question"] for p in pairs]
    n = len(questions) or 1
    anchors: set[str] = set()
    for p in pairs:
        for e in p["entries"][:50]:
            if isinstance(e, dict):
                anchors.update(str(v).lower() for v in e.values()
                               if isinstance(v, str) and len(v) >= 3)
    follow = [p for p in pairs if (p["turn"] or 1) > 1 and _FOLLOW_UP_RE.search(p["question"])]
    direct = [q for q in questions if q.strip().endswith("?") or _DIRECT_RE.match(q.strip())]
    report = [q for q in questions if _REPORT_RE.search(q)]
    routes = sorted({p["route"] for p in pairs if p["route"]})
    seen: dict[str, int] = {}
    for q in questions:
        seen[_norm(q)] = seen.get(_norm(q), 0) + 1
    dups = sorted(q for q, c in seen.items() if c > 1)
    weak = [p["question"] for p in pairs
            if not _BUSINESS_NOUNS.search(p["question"])
            and not _NUMBER_OR_DATE.search(p["question"])
            and not any(a in p["question"].lower() for a in anchors)
            and not _FOLLOW_UP_RE.search(p["question"])]
    min_topics = min(3, len(questions))
    metrics = {
        "follow_up_density": {"value": round(len(follow) / n, 3), "count": len(follow),
                              "threshold": ">= 0.3", "passed": len(follow) / n >= 0.3,
                              "what": "share of later questions that build on an earlier "
                                      "answer"},
        "direct_questions": {"value": round(len(direct) / n, 3), "count": len(direct),
                             "threshold": ">= 0.6", "passed": len(direct) / n >= 0.6,
                             "what": "share of questions a one-line answer can settle"},
        "report_style_analysis": {"value": round(len(report) / n, 3), "count": len(report),
                                  "threshold": "<= 0.5", "passed": len(report) / n <= 0.5,
                                  "examples": report[:5],
                                  "what": "share of questions asking for a report or analysis"},
        "domain_diversity": {"value": len(routes), "routes": routes,
                             "threshold": f">= {min_topics} distinct routes",
                             "passed": len(routes) >= min_topics,
                             "what": "distinct capabilities the questions exercise"},
        "duplicates": {"value": len(dups), "examples": dups[:5], "threshold": "0",
                       "passed": not dups, "what": "questions asked twice"},
        "weak_business_anchors": {"value": len(weak), "examples": weak[:5], "threshold": "0",
                                  "passed": not weak,
                                  "what": "questions naming no item, supplier, place, number, "
                                          "date or business measure"},
    }
    return {"questions": len(questions),
            "overall": "pass" if all(m["passed"] for m in metrics.values()) else "needs_work",
            "metrics": metrics}


def review_pairs(pairs: list[dict]) -> list[dict]:
    """Business findings for every pair (plus capability gaps), numbered by pair."""
    findings = []
    for p in pairs:
        found = review_answer(p["question"], p["answer"], p["entries"], p["capability"],
                              p["debug"])
        if p["capability"] == "unsupported":
            found.append({"severity": "P2", "code": "capability_gap", "rule": None,
                          "message": "the assistant has no route for this question",
                          "evidence": p["answer"].splitlines()[0][:200] if p["answer"] else ""})
        for f in found:
            first = p["answer"].strip().splitlines()[0] if p["answer"].strip() else ""
            f.update(id=f"pair{p['index']}#{len(findings) + 1}", pair=p["index"],
                     session_id=p["session_id"], turn=p["turn"], question=p["question"],
                     first_line=first, resolved=False)
            findings.append(f)
    return findings


def pair_status(findings: list[dict], index: int) -> str:
    own = [f for f in findings if f["pair"] == index]
    if any(f["severity"] == "P0" for f in own):
        return "fail"
    return "warn" if any(f["severity"] == "P1" for f in own) else "pass"


def repair_targets(run_id: str, findings: list[dict]) -> dict:
    """Findings grouped into repair targets, worst first, each pointing at what to change."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for f in findings:
        groups.setdefault((f["severity"], f["code"]), []).append(f)
    order = {"P0": 0, "P1": 1, "P2": 2}
    targets = []
    for (sev, code), items in sorted(groups.items(), key=lambda kv: (order[kv[0][0]],
                                                                       -len(kv[1]), kv[0][1])):
        rule = items[0].get("rule")
        targets.append({
            "target_id": f"RT-{len(targets) + 1:02d}", "priority": sev, "code": code,
            "count": len(items), "rule": rule,
            "candidate_files": [RULES_FILE] if rule else [],
            "suggested_change": {rule: SUGGESTED[rule]} if rule in SUGGESTED else None,
            "message": items[0]["message"],
            "samples": [{"session_id": f["session_id"], "turn": f["turn"],
                         "question": f["question"], "first_line": f["first_line"],
                         "evidence": f["evidence"]} for f in items[:3]],
        })
    return {"kind": "repair_targets", "run_id": run_id, "targets": targets}


def next_action(summary: dict) -> str:
    """The stage loop's next step for this review."""
    if summary["unresolved_p0"]:
        return "continue_repair_from_gui_review_p0"
    if summary["unresolved_p1"]:
        return "continue_repair_from_gui_review_p1"
    return "manual_gui_confirmation_or_stage_close"


def build(run_id: str, runs_dir: Path, out_dir: Path) -> dict:
    """Review a saved run and write the five bridge files; returns ``run_review.json``."""
    report, session_files = sources(runs_dir, run_id)
    pairs, skipped, n_sessions = conversation_pairs(session_files)
    if not pairs:
        # "0 answers" is no evidence of a clean run: nothing was reviewed
        where = report if report is not None else sessions_dir(runs_dir)
        raise UserError(f"run {run_id} has no answers to review ({len(session_files)} session "
                        "file(s) with no turns)", path=display_path(where),
                        fix="review a run whose sessions were saved")
    findings = review_pairs(pairs)
    statuses = [pair_status(findings, p["index"]) for p in pairs]
    business = summarize(findings, statuses)
    quality = question_quality(pairs)
    review: dict[str, Any] = {
        "kind": "gui_run_review", "run_id": run_id,
        "sources": {"report": display_path(report) if report else None,
                    "sessions": [display_path(p) for p in session_files], "skipped": skipped},
        "summary": {"sessions": n_sessions, "pairs": len(pairs),
                    "overall_business_status": business["overall_business_status"],
                    "p0": business["p0"], "p1": business["p1"], "p2": business["p2"],
                    "unresolved_p0": business["unresolved_p0"],
                    "unresolved_p1": business["unresolved_p1"],
                    "business_answer_failures": business["business_answer_failures"],
                    "flags": business["flags"], "question_quality": quality["overall"],
                    "next_action": next_action(business)},
        "pairs": [{"index": p["index"], "session_id": p["session_id"], "turn": p["turn"],
                   "question": p["question"], "first_line": (p["answer"].strip().splitlines()
                                                             or [""])[0],
                   "business_status": s, "capability": p["capability"], "route": p["route"]}
                  for p, s in zip(pairs, statuses, strict=True)],
        "findings": findings,
    }
    public_pairs = [{k: v for k, v in p.items() if k not in ("entries", "debug")}
                    for p in pairs]
    atomic_write_json(out_dir / "conversation_pairs.json",
                      {"kind": "conversation_pairs", "run_id": run_id, "pairs": public_pairs})
    atomic_write_json(out_dir / "question_quality_review.json",
                      {"kind": "question_quality_review", "run_id": run_id, **quality})
    atomic_write_json(out_dir / "repair_targets.json", repair_targets(run_id, findings))
    atomic_write_json(out_dir / "run_review.json", review)
    atomic_write_text(out_dir / "run_review.md", render_md(review, quality))
    return review


def render_md(review: dict, quality: dict) -> str:
    """``run_review.md``: verdict, then the user-facing failures, then question quality."""
    s = review["summary"]
    lines = [f"# GUI run review: {review['run_id']}", "",
             f"**Business: {s['overall_business_status']}**: {s['pairs']} answers in "
             f"{s['sessions']} session(s); P0 {s['p0']}, P1 {s['p1']}, P2 {s['p2']}. "
             f"Question quality: {s['question_quality']}. Next: `{s['next_action']}`.", ""]
    order = {"P0": 0, "P1": 1, "P2": 2}
    if review["findings"]:
        lines += ["## What the user saw go wrong", ""]
        for f in sorted(review["findings"], key=lambda f: (order[f["severity"]], f["pair"])):
            rule = f" [rule `{f['rule']}`]" if f.get("rule") else ""
            lines += [f"- **{f['severity']}** `{f['code']}` (session {f['session_id']} turn "
                      f"{f['turn']}): {f['message']}{rule}",
                      f"  - Q: {f['question']}", f"  - A: {f['first_line']}"]
        lines.append("")
    lines += ["## Question quality", ""]
    for name, m in quality["metrics"].items():
        lines.append(f"- {name}: {m['value']} ({m['threshold']}) "
                     f"{'ok' if m['passed'] else 'NEEDS WORK'}: {m['what']}")
    return "\n".join(lines) + "\n"


def summary_text(review: dict, out_dir: Path) -> str:
    """What ``review ... --print-summary`` prints."""
    s = review["summary"]
    return "\n".join([
        f"run {review['run_id']}: {s['pairs']} answers in {s['sessions']} session(s)",
        f"business: {s['overall_business_status']} (P0 {s['p0']}, P1 {s['p1']}, P2 {s['p2']}; "
        f"business-answer failures {s['business_answer_failures']})",
        f"question quality: {s['question_quality']}",
        f"next action: {s['next_action']}",
        f"review: {display_path(out_dir / 'run_review.md')}",
    ])
