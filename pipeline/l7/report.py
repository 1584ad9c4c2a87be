"""The report page of an L7 session: one self-contained HTML file made from its out-dir.

Per scene, its candidates side by side (prompt, weighted score, each criterion's score
and reason), the winner and why each other candidate lost, round by round (a revision
is a second round); then the continuity audit: each pair's findings and what remains after
revision. Read only from the published documents, so any out-dir can be reported on.
"""

from __future__ import annotations

import html
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path, read_json

DOCUMENTS = ("session_output.json", "candidates_prompt.json", "evaluation_report_prompt.json",
             "selection_trace_prompt.json", "continuity_audit_prompt.json")

_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
.cands{display:flex;gap:1em;flex-wrap:wrap;margin-bottom:1em}.cand{flex:1 1 18em;
border:1px solid #ccc;padding:0.6em;border-radius:4px}.cand.won{border:3px solid #2d7a2d;
background:#f2faf2}.cand.lost{background:#fafafa}.score{font-size:1.4em;font-weight:bold}
.reason{color:#8a3a00}.cand.won .reason{color:#2d7a2d}table{border-collapse:collapse}
th,td{border:1px solid #ddd;padding:2px 5px;font-size:12px;text-align:left;vertical-align:top}
td.fail{background:#fbe3e3}.prompt{font-family:Georgia,serif;font-size:13px}
.error{color:#b00}.warning{color:#8a5a00}"""


def _e(value) -> str:
    return html.escape(str(value))


def load(out_dir: Path) -> dict[str, dict]:
    """The session's published documents; a missing one is a UserError naming it."""
    docs = {}
    for name in DOCUMENTS:
        path = out_dir / name
        if not path.exists():
            raise UserError("not an L7 out-dir: a published document is missing",
                            path=display_path(path),
                            fix="run the L7 runner with --out-dir here first")
        docs[name] = read_json(path, "L7 output", max_text=None)
    return docs


def _criteria(evaluation: dict) -> str:
    rows = "".join(
        f'<tr><td>{_e(c["criterion_id"])}</td><td class="{"" if c["passed"] else "fail"}">'
        f'{c["score"]:.2f}</td><td>{_e(c["reason"])}</td></tr>'
        for c in evaluation.get("criteria", []))
    return f"<table><tr><th>criterion</th><th>score</th><th>reason</th></tr>{rows}</table>"


def _scene(sid: str, candidates: list[dict], evaluations: dict[str, dict], trace: dict) -> str:
    parts = [f'<section class="scene" id="scene-{_e(sid)}"><h2>{_e(sid)}: '
             f'{_e(trace.get("status", ""))}, winner {_e(trace.get("winner"))}</h2>']
    by_id = {c["candidate_id"]: c for c in candidates}
    for rnd in trace.get("rounds", []):
        parts.append(f"<h3>round: {_e(rnd.get('round'))}</h3><div class=\"cands\">")
        for rank in rnd.get("ranking", []):
            cid = rank["candidate_id"]
            cand = by_id.get(cid, {})
            parts.append(
                f'<div class="cand {_e(rank.get("outcome", ""))}" id="cand-{_e(cid)}">'
                f"<div><strong>{_e(cid)}</strong> (rank {rank.get('rank')})</div>"
                f'<div class="score">{rank.get("weighted_score", 0):.3f}</div>'
                f'<div class="reason">{_e(rank.get("reason", ""))}</div>'
                f'<p class="prompt">{_e(cand.get("prompt", ""))}</p>'
                + (_criteria(evaluations[cid]) if cid in evaluations else "") + "</div>")
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _findings(audit: dict) -> str:
    rows = []
    for pair in audit.get("pairs", []):
        remaining = {f["finding_id"] for f in pair.get("remaining", [])}
        for f in pair.get("findings", []):
            state = "remains" if f["finding_id"] in remaining else "fixed by revision"
            rows.append(f"<tr><td>{_e(' + '.join(pair['pair']))}</td><td>{_e(f['scene_id'])}</td>"
                        f'<td class="{_e(f["severity"])}">{_e(f["severity"])}</td>'
                        f"<td>{_e(f['category'])}</td><td>{_e(f['message'])}</td>"
                        f"<td>{_e(f.get('expected', ''))}</td><td>{state}</td></tr>")
    if not rows:
        return "<p>No continuity finding between neighbouring scenes.</p>"
    return ('<table id="findings"><tr><th>pair</th><th>scene</th><th>severity</th>'
            "<th>category</th><th>finding</th><th>expected</th><th>after revision</th></tr>"
            + "".join(rows) + "</table>")


def render(out_dir: Path) -> str:
    """The report page of the session published in ``out_dir``."""
    docs = load(out_dir)
    out = docs["session_output.json"]
    candidates = {s["scene_id"]: s["candidates"]
                  for s in docs["candidates_prompt.json"].get("scenes", [])}
    evaluations = {e["candidate_id"]: e for s in docs["evaluation_report_prompt.json"]
                   .get("scenes", []) for e in s["evaluations"]}
    traces = docs["selection_trace_prompt.json"]
    scenes = "".join(_scene(t["scene_id"], candidates.get(t["scene_id"], []), evaluations, t)
                     for t in traces.get("scenes", []))
    merged = traces.get("merged_from_base") or []
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>L7 report: {_e(out.get('session_id'))}</title><style>{_STYLE}</style>"
        f"</head>\n<body>\n<h1>L7 session {_e(out.get('session_id'))}</h1>"
        f"<p>objective {_e(out.get('objective_id'))}; status <strong>{_e(out.get('status'))}"
        f"</strong> (exit {_e(out.get('exit_code'))}); failed gate: "
        f"{_e(out.get('failed_gate') or 'none')}; out-dir {_e(display_path(out_dir))}</p>"
        f"<p>Tie-break: {_e(traces.get('tie_break', ''))}</p>"
        + (f"<p>Merged unchanged from the base pack: {_e(', '.join(merged))}</p>" if merged
           else "")
        + scenes + "<h2>Continuity between neighbouring scenes</h2>"
        + _findings(docs["continuity_audit_prompt.json"]) + "\n</body></html>\n")
