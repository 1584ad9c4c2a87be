"""The accepted scenes against each try, scene by scene (``doit compare``, ``doit report
try:NAME``): prose side by side, the scene card's and the state patch's JSON diffs, lint
findings, tokens, cost and the judge's score (pipeline/book/judge.py).

``gather`` reads what the builds left (their files and build records); ``text`` and
``page`` show it. The page is one self-contained HTML file (no script, nothing fetched).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.book import phases
from pipeline.book.judge import Judge, Judgement
from pipeline.book.phase_table import LLM_PHASES
from pipeline.book.versions import json_diff, prose_diff
from pipeline.book.workspace import Book

# what a scene is compared by: the final prose and state patch (lint's: repair's and
# state_repair's, or its repair rounds' last), the card, lint's report
PROSE, CARD, PATCH, LINT = ("lint", "prose"), ("plan", "scene_card"), \
    ("lint", "state_patch"), ("lint", "report")


@dataclass
class Built:
    """One scene as one side (the accepted book, or a try) built it."""

    label: str
    prose: str | None = None
    card: dict | None = None
    patch: dict | None = None
    lint: dict | None = None
    tokens: int = 0
    cost: float = 0.0
    stand_in: bool = False  # the offline stand-in wrote it
    judgement: Judgement | None = None

    @property
    def words(self) -> int:
        return len((self.prose or "").split())

    def lint_text(self) -> str:
        if self.lint is None:
            return "not built"
        findings = self.lint.get("findings") or []
        errors = sum(f.get("severity") == "error" for f in findings)
        warnings = len(findings) - errors
        text = "pass" if self.lint.get("passed") else "fail"
        extra = [f"{n} {w}{'s' if n > 1 else ''}" for n, w in ((errors, "error"),
                                                              (warnings, "warning")) if n]
        return text + (f" ({', '.join(extra)})" if extra else "")

    def score_text(self) -> str:
        j = self.judgement
        if j is None:
            return "-"
        return f"{j.score:.2f}" if j.score is not None else "no answer"


@dataclass
class SceneRow:
    id: str
    title: str
    sides: list[Built]  # the accepted scene first, then each try's


@dataclass
class TryHead:
    """What one try is (``doit tries`` says the same)."""

    name: str
    reason: str
    scenes: list[str]
    templates: list[str]
    calls_paid: int
    cost: float
    made: str
    status: str


@dataclass
class Comparison:
    book: str
    title: str
    tries: list[TryHead]
    scenes: list[SceneRow]
    judge: str = ""  # which model scores ('' when no rubric)
    judge_stand_in: bool = False
    judge_spec: str = ""
    generated: str = ""
    notes: list[str] = field(default_factory=list)


def _read(path: str, as_json: bool):
    try:
        text = Path(path).read_text(encoding="utf-8")
        return json.loads(text) if as_json else text
    except (OSError, ValueError):
        return None


def built(book: Book, sid: str, label: str, values: Callable[[str], dict],
          cost_of: Callable[[str], float | None]) -> Built:
    """Scene ``sid`` as ``book`` (the accepted book, or a try's view of it) built it;
    ``values(task_id)`` gives a task's recorded values, ``cost_of(request_hash)`` what its
    answer cost when it was paid for (None: not known)."""
    files = phases.layout(book, sid)
    out = Built(label)
    out.prose = _read(files[PROSE[0]].outputs[PROSE[1]], False)
    out.card = _read(files[CARD[0]].outputs[CARD[1]], True)
    out.patch = _read(files[PATCH[0]].outputs[PATCH[1]], True)
    out.lint = _read(files[LINT[0]].outputs[LINT[1]], True)
    for phase in LLM_PHASES:
        llm = values(f"{phase}:{sid}").get("llm") or {}
        if not llm:
            continue
        out.tokens += int(llm.get("tokens_in", 0)) + int(llm.get("tokens_out", 0))
        paid = cost_of(llm.get("request_hash") or "")
        out.cost += paid if paid is not None else float(llm.get("cost_usd") or 0.0)
        out.stand_in |= llm.get("provider") == "offline"
    return out


def judge_all(comparison: Comparison, judge: Judge, score: Callable[..., Judgement],
              book: Book) -> None:
    """Score every built prose of the comparison (``score(scene, card, prose, sid)``)."""
    for row in comparison.scenes:
        scene = book.scene(row.id).model_dump()
        for side in row.sides:
            if side.prose:
                side.judgement = score(scene, side.card, side.prose, row.id)
    comparison.judge = judge.label
    comparison.judge_stand_in = judge.stand_in
    comparison.judge_spec = judge.path


# -- as text ------------------------------------------------------------------------------
def _diffs(old: Built, new: Built) -> list[str]:
    lines: list[str] = []
    if old.prose is not None and new.prose is not None and old.prose != new.prose:
        lines += ["prose:", *prose_diff(old.prose, new.prose)]
    for name, a, b in (("scene card", old.card, new.card), ("state patch", old.patch,
                                                            new.patch)):
        if a is not None and b is not None and a != b:
            lines += [f"{name}:", *("  " + d for d in json_diff(a, b))]
    return lines


def text(c: Comparison, diffs: bool = True) -> str:
    """The comparison for a terminal: per scene a table, then each try's diffs."""
    names = ", ".join(f"try {t.name}" for t in c.tries)
    out = [f"compare: book '{c.book}', the accepted scenes against {names}"]
    if c.judge:
        out.append(f"judge: {c.judge} (rubric {c.judge_spec}: weighted mean of 1-5)")
    out += c.notes
    for row in c.scenes:
        heads = [s.label for s in row.sides]
        table = [["", *heads],
                 ["judge", *(s.score_text() for s in row.sides)],
                 ["words", *(str(s.words) if s.prose is not None else "-" for s in row.sides)],
                 ["lint", *(s.lint_text() for s in row.sides)],
                 ["tokens", *(str(s.tokens) for s in row.sides)],
                 ["cost $", *(f"{s.cost:.4f}" for s in row.sides)]]
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        out += ["", f"{row.id}: {row.title}"]
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
                .rstrip() for r in table]
        if not diffs:
            continue
        accepted = row.sides[0]
        for side in row.sides[1:]:
            found = _diffs(accepted, side)
            out.append(f"  {side.label} against the accepted scene:"
                       + ("" if found else " the same"))
            out += ["    " + line for line in found]
    return "\n".join(out) + "\n"


# -- as a page ----------------------------------------------------------------------------
def _e(value) -> str:
    return html.escape(str(value))


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
table{border-collapse:collapse;margin:0.5em 0 1.2em}th,td{border:1px solid #ccc;padding:3px 7px;
vertical-align:top;text-align:left}.small{font-size:12px;color:#555}.columns{display:grid;
grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:1em}.column{border:1px solid #ddd;
padding:0 1em;background:#fcfcfa}.column h4{margin:0.6em 0}.prose p{font:1em/1.55 Georgia,serif}
pre{background:#f6f6f6;padding:0.5em;white-space:pre-wrap}td.best{background:#e6f4e6;
font-weight:bold}td.fail{background:#f8d7d7}.stand-in{border:1px solid #c90;background:#fff8e0;
padding:0.5em 1em}section.scene{border-top:2px solid #ccc;margin-top:1.5em}"""


def _scores(c: Comparison) -> str:
    heads = ["accepted"] + [f"try {t.name}" for t in c.tries]
    rows = []
    for row in c.scenes:
        values = [s.judgement.score if s.judgement and s.judgement.score is not None else None
                  for s in row.sides]
        top = max((v for v in values if v is not None), default=None)
        cells = []
        for side, value in zip(row.sides, values, strict=True):
            cls = "best" if value is not None and value == top and len(row.sides) > 1 else ""
            if side.lint is not None and not side.lint.get("passed"):
                cls = "fail"
            cells.append(f'<td class="{cls}" data-side="{_e(side.label)}">'
                         f"{_e(side.score_text())}<br><span class=\"small\">"
                         f"{side.words} words, {_e(side.lint_text())}, {side.tokens} tokens, "
                         f"${side.cost:.4f}</span></td>")
        rows.append(f'<tr class="score-row" id="score-{_e(row.id)}"><th><a href="#scene-'
                    f'{_e(row.id)}">{_e(row.id)}</a><br><span class="small">{_e(row.title)}'
                    f'</span></th>{"".join(cells)}</tr>')
    return ('<table id="scores"><thead><tr><th>scene</th>'
            + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _tries(c: Comparison) -> str:
    rows = "".join(
        f'<tr class="try-row" id="try-{_e(t.name)}"><td>{_e(t.name)}</td><td>{_e(t.reason)}</td>'
        f"<td>{_e(', '.join(t.scenes))}</td><td>{'<br>'.join(_e(x) for x in t.templates)}</td>"
        f"<td>{t.calls_paid}</td><td>${t.cost:.4f}</td><td>{_e(t.made)}</td>"
        f"<td>{_e(t.status)}</td></tr>" for t in c.tries)
    return ('<table id="tries"><tr><th>try</th><th>reason</th><th>scenes</th>'
            "<th>templates changed</th><th>calls paid</th><th>cost</th><th>made</th>"
            "<th>status</th></tr>" + rows + "</table>")


def _paragraphs(prose: str | None) -> str:
    if prose is None:
        return '<p class="small">not built</p>'
    paras = [p.strip() for p in prose.split("\n\n") if p.strip()]
    return "".join(f"<p>{_e(' '.join(p.split()))}</p>" for p in paras)


def _judgement(side: Built) -> str:
    j = side.judgement
    if j is None:
        return ""
    if j.score is None:
        return f'<p class="small">judge: no valid answer ({_e(j.error)})</p>'
    rows = "".join(f"<tr><td>{_e(cid)}</td><td>{_e(v.get('score'))}</td>"
                   f"<td>{_e(v.get('reason'))}</td></tr>" for cid, v in j.criteria.items())
    return (f'<table class="judgement"><tr><th>criterion</th><th>1-5</th><th>reason</th></tr>'
            f"{rows}</table>")


def _lint(side: Built) -> str:
    findings = (side.lint or {}).get("findings") or []
    if not findings:
        return f'<p class="small">lint: {_e(side.lint_text())}</p>'
    items = "".join(f"<li>{_e(f.get('severity'))}: {_e(f.get('message'))}</li>"
                    for f in findings)
    return f'<p class="small">lint: {_e(side.lint_text())}</p><ul class="lint">{items}</ul>'


def _scene(row: SceneRow) -> str:
    columns = "".join(
        f'<div class="column" data-side="{_e(s.label)}"><h4>{_e(s.label)}: '
        f"{_e(s.score_text())}</h4><div class=\"prose\">{_paragraphs(s.prose)}</div>"
        f"{_lint(s)}{_judgement(s)}</div>" for s in row.sides)
    diffs = []
    accepted = row.sides[0]
    for side in row.sides[1:]:
        for name, a, b in (("scene card", accepted.card, side.card),
                           ("state patch", accepted.patch, side.patch)):
            if a is None or b is None:
                continue
            lines = json_diff(a, b)
            diffs.append(f"<h4>{_e(name)}: {_e(side.label)} against the accepted scene</h4>"
                         f"<pre class=\"json-diff\">{_e(chr(10).join(lines) or 'the same')}</pre>")
    return (f'<section class="scene" id="scene-{_e(row.id)}"><h2>{_e(row.id)}: '
            f'{_e(row.title)}</h2><div class="columns" style="--n:{len(row.sides)}">'
            f"{columns}</div>{''.join(diffs)}</section>")


def page(c: Comparison) -> str:
    """The comparison as one self-contained page."""
    notes = []
    if any(s.stand_in for row in c.scenes for s in row.sides):
        notes.append("<strong>Text from the offline stand-in model: placeholder prose.</strong>")
    if c.judge_stand_in:
        notes.append(f"<strong>Judge: {_e(c.judge)}.</strong>")
    notes += [_e(n) for n in c.notes]
    judge = (f'<p id="judge">Judge: {_e(c.judge)}; rubric <code>{_e(c.judge_spec)}</code>, '
             "the weighted mean of its criteria scored 1-5.</p>" if c.judge else
             '<p id="judge">No judge: no rubric found.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Tries: {_e(c.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            f"<h1>Tries of {_e(c.title)}</h1><p class=\"small\">book <code>{_e(c.book)}</code>, "
            f"written {_e(c.generated)} by <code>doit compare</code> / <code>doit report "
            "try:NAME</code></p>"
            + "".join(f'<p class="stand-in">{n}</p>' for n in notes)
            + "<h2>The tries</h2>" + _tries(c) + judge
            + "<h2>Scores</h2>" + _scores(c)
            + "".join(_scene(row) for row in c.scenes)
            + "\n</body></html>\n")
