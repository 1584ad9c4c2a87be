"""The report page of a scenario pack run or pack loop: one self-contained HTML file.

A pack run: its status and acceptance gate (each condition with its detail), then one row
per step with its question, its status, and the three reviews side by side: truth (facts
passed / checked), business (status, findings) and the judge (score, per criterion; its
colour says whether the score meets the pack's ``min_judge_score``, and stays neutral when
the pack sets none: the judge's own pass mark is not part of the gate). Every run the loop
produces renders: clean, with findings, blocked, partial, interrupted (steps not captured
or not reviewed yet are shown as such).
A pack loop (a folder with ``loop_state.json``): its iterations side by side (score,
verdict, each score component, each gate condition, repair targets), then each
iteration's pack run as above. Read only from the files the run wrote, so it changes
nothing.
"""

from __future__ import annotations

import html
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json

REVIEWS = ("truth_review.json", "business_review.json", "judge_review.json")

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:3px 6px;vertical-align:top;text-align:left;font-size:13px}
.pass,.accepted{background:#e6f4e6}
.fail,.blocked,.below{background:#f8d7d7}.partial,.needs_exact_capability{background:#fff3cd}
.small{font-size:11px;color:#555}.judge{background:#f4f4f4}"""


def _e(value) -> str:
    return html.escape(str(value))


def _key(step: dict) -> tuple[str, str]:
    return step.get("scenario_id", ""), step.get("step_id", "")


def load(run_dir: Path) -> tuple[dict, dict[str, dict]]:
    """The run's state and the reviews it has (a review not run yet is absent)."""
    state_path = run_dir / "pack_state.json"
    if not state_path.exists():
        raise UserError("not a scenario pack run or loop: pack_state.json is missing",
                        path=display_path(state_path),
                        fix="run scenemake-scenario run-pack --pack PACK first")
    reviews = {name: read_json(run_dir / name, "review", max_text=None) for name in REVIEWS
               if (run_dir / name).exists()}
    return read_json(state_path, "pack state", max_text=None), reviews


def _gate(state: dict) -> str:
    gate = state.get("acceptance_gate") or {}
    rows = "".join(f'<tr><td>{_e(c["name"])}</td>'
                   f'<td class="{"pass" if c["passed"] else "fail"}">'
                   f'{"passed" if c["passed"] else "not passed"}</td>'
                   f'<td>{_e(c["detail"])}</td></tr>' for c in gate.get("conditions", []))
    return ('<table id="gate"><tr><th>condition</th><th></th><th>detail</th></tr>' + rows
            + "</table>")


def _findings(business: dict) -> dict[str, dict]:
    """The business review's findings by id (a step lists the ids of its own)."""
    return {f["id"]: f for f in business.get("findings", [])
            if isinstance(f, dict) and isinstance(f.get("id"), str)}


def _finding_text(ref, by_id: dict[str, dict]) -> str:
    finding = by_id.get(ref) if isinstance(ref, str) else ref
    if not isinstance(finding, dict):
        return str(ref)
    text = f"{finding.get('severity', '')} {finding.get('message', '')}".strip()
    return text + (" (resolved)" if finding.get("resolved") else "")


def min_judge_score(run_dir: Path) -> float | None:
    """The pack's ``acceptance_gate.min_judge_score`` as the run recorded it (None: unset)."""
    path = run_dir / "pack_manifest.json"
    manifest = read_json(path, "pack manifest") if path.exists() else {}
    value = ((manifest or {}).get("acceptance_gate") or {}).get("min_judge_score")
    return float(value) if isinstance(value, int | float) else None


def _judge_cell(j: dict | None, threshold: float | None) -> str:
    if not j:
        return "<td>not judged</td>"
    score = j.get("score")
    if threshold is None or not isinstance(score, int | float):
        css, note = "judge", "" if threshold is None else " (no score)"
    else:
        css = "pass" if score >= threshold else "fail"
        note = f" (gate: >= {threshold:g})"
    crit = ", ".join(f"{name} {c.get('score')}" for name, c in
                     (j.get("criteria") or {}).items() if isinstance(c, dict))
    return (f'<td class="{css}">{_e(score)}{_e(note)}<br>'
            f'<span class="small">{_e(crit)}</span></td>')


def _steps(run_dir: Path, state: dict, reviews: dict[str, dict]) -> str:
    truth = {_key(s): s for s in reviews.get("truth_review.json", {}).get("steps", [])}
    business_review = reviews.get("business_review.json", {})
    business = {_key(s): s for s in business_review.get("steps", [])}
    by_id = _findings(business_review)
    judge = {_key(s): s for s in reviews.get("judge_review.json", {}).get("steps", [])}
    threshold = min_judge_score(run_dir)
    rows = []
    for scenario in state.get("scenarios", []):
        sid = scenario["scenario_id"]
        path = run_dir / "scenarios" / sid / "scenario_state.json"
        steps = (read_json(path, "scenario state", max_text=None).get("steps", [])
                 if path.exists() else [])
        if not steps:
            rows.append(f'<tr class="step-row" id="scenario-{_e(sid)}"><td>{_e(sid)}</td>'
                        '<td colspan="6">not captured yet (the run stopped before it: run '
                        "the same command again to resume)</td></tr>")
        for step in steps:
            key = (sid, step["step_id"])
            t, b, j = truth.get(key), business.get(key), judge.get(key)
            facts = t.get("facts", []) if t else []
            t_cell = (f'<td class="{_e(t["status"])}">{_e(t["status"])}<br><span class="small">'
                      f'{sum(f["status"] == "pass" for f in facts)}/{len(facts)} facts</span></td>'
                      if t else "<td>not reviewed</td>")
            findings = "; ".join(_finding_text(f, by_id) for f in (b or {}).get("findings", []))
            b_cell = (f'<td class="{_e(b["business_status"])}">{_e(b["business_status"])}'
                      f'<br><span class="small">{_e(findings)}</span></td>'
                      if b else "<td>not reviewed</td>")
            # a step the run never reached (it was stopped): not a blocked answer
            status = (step.get("status") or "") if step.get("finished", True) else \
                "not captured yet"
            rows.append(f'<tr class="step-row" id="step-{_e(sid)}-{_e(step["step_id"])}">'
                        f"<td>{_e(sid)}</td><td>{_e(step['step_id'])}</td>"
                        f"<td>{_e(step.get('question') or '')}</td>"
                        f'<td class="{_e(status)}">{_e(status)}</td>'
                        f"{t_cell}{b_cell}{_judge_cell(j, threshold)}</tr>")
    return ('<table id="steps"><tr><th>scenario</th><th>step</th><th>question</th><th>status</th>'
            "<th>truth</th><th>business</th><th>judge</th></tr>" + "".join(rows) + "</table>")


def _iterations(loop_dir: Path, loop: dict) -> str:
    verdicts = []
    for it in loop.get("iterations", []):
        path = loop_dir / it.get("dir", f"iterations/{it['iteration']}") / "analyst_verdict.json"
        verdicts.append((it, read_json(path, "analyst verdict", max_text=None)
                         if path.exists() else {}))
    head = "".join(f"<th>iteration {it['iteration']}</th>" for it, _ in verdicts)

    def row(label: str, cell) -> str:
        return f"<tr><th>{_e(label)}</th>" + "".join(cell(it, v) for it, v in verdicts) + "</tr>"

    def plain(text, css: str = "") -> str:
        return f'<td class="{_e(css)}">{_e(text)}</td>'

    rows = [row("score", lambda it, v: plain(v.get("score", it.get("score", "-")))),
            row("verdict", lambda it, v: plain(v.get("verdict", it.get("verdict", "-")),
                                               "pass" if v.get("accepted") else "fail")),
            row("pack status", lambda it, v: plain(v.get("pack_final_status",
                                                         it.get("pack_final_status", "-"))))]
    names = dict.fromkeys(n for _, v in verdicts for n in (v.get("components") or {}))
    for name in names:
        rows.append(row(name, lambda it, v, n=name: plain(
            ((v.get("components") or {}).get(n) or {}).get("detail", "-"))))
    conds = dict.fromkeys(c["name"] for _, v in verdicts
                          for c in (v.get("gate") or {}).get("conditions", []))
    for name in conds:
        def gate_cell(it, v, n=name) -> str:
            c = next((c for c in (v.get("gate") or {}).get("conditions", [])
                      if c["name"] == n), None)
            return plain(c["detail"], "pass" if c["passed"] else "fail") if c else plain("-")
        rows.append(row(f"gate: {name}", gate_cell))
    rows.append(row("repair targets", lambda it, v: plain(len(v.get("repair_targets") or []))))
    return (f'<table id="iterations"><tr><th></th>{head}</tr>' + "".join(rows) + "</table>")


def render_loop(loop_dir: Path) -> str:
    """The report page of the pack loop in ``loop_dir``."""
    loop = read_json(loop_dir / "loop_state.json", "loop state", max_text=None)
    runs = []
    for it in loop.get("iterations", []):
        run_dir = loop_dir / it.get("dir", f"iterations/{it['iteration']}") / "pack_run"
        if (run_dir / "pack_state.json").exists():
            state, reviews = load(run_dir)
            runs.append(f"<h2>Iteration {it['iteration']}: pack run {_e(state.get('run_id'))}"
                        f"</h2>" + _steps(run_dir, state, reviews))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Loop report: {_e(loop.get('loop_id'))}</title><style>{_STYLE}</style>"
        f"</head>\n<body>\n<h1>Pack loop {_e(loop.get('loop_id'))}</h1>"
        f"<p>pack {_e(loop.get('pack_id'))}; status <strong>{_e(loop.get('status'))}</strong>"
        f" after {len(loop.get('iterations', []))} iteration(s) (at most "
        f"{_e(loop.get('max_iterations'))}, target score {_e(loop.get('target_score'))}): "
        f"{_e(loop.get('stop_reason') or '')}; loop dir {_e(display_path(loop_dir))}</p>"
        "<h2>Iterations side by side</h2>" + _iterations(loop_dir, loop)
        + "".join(runs) + "\n</body></html>\n")


def render(run_dir: Path) -> str:
    """The report page of the pack run (or pack loop) in ``run_dir``."""
    if (run_dir / "loop_state.json").exists():
        return render_loop(run_dir)
    state, reviews = load(run_dir)
    r = state.get("reviews") or {}
    counts = state.get("counts") or {}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Pack report: {_e(state.get('run_id'))}</title><style>{_STYLE}</style>"
        f"</head>\n<body>\n<h1>Pack run {_e(state.get('run_id'))}</h1>"
        f"<p>pack {_e(state.get('pack_id'))}; final status <strong>"
        f"{_e(state.get('final_status'))}</strong>; acceptance gate "
        f"<strong>{'passed' if state.get('acceptance_gate_passed') else 'not passed'}</strong>;"
        f" truth {_e(r.get('truth', '-'))}, business {_e(r.get('business', '-'))}, judge score "
        f"{_e(r.get('judge_score', '-'))}; steps: "
        + ", ".join(f"{n} {_e(k)}" for k, n in counts.items())
        + f"; run dir {_e(display_path(run_dir))}</p>"
        "<h2>Acceptance gate</h2>" + _gate(state)
        + "<h2>Steps and their reviews</h2>" + _steps(run_dir, state, reviews)
        + "\n</body></html>\n")
