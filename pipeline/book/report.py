"""The book's report page: one self-contained HTML file (no script, no network).

It shows the scene x phase matrix (status, cost, cache, why a phase is stale), cost and
tokens per phase and per scene as SVG bar charts drawn here, what the response cache
saved, the prompt-change history with reasons and old/new hashes, the diffs of the last
changes, and the manuscript. ``render`` takes plain data (see ``ReportData``), so the
page can be tested without a build.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Cell:
    """One phase of one scene."""

    status: str  # success | fail | not run
    stale: str = ""  # why it would run next, "" when up to date
    cost_usd: float = 0.0
    cache: str = ""  # hit | miss | "" (no LLM call)
    tokens: int = 0


@dataclass
class SceneRow:
    id: str
    title: str
    cells: dict[str, Cell]


@dataclass
class ReportData:
    """Everything the page shows, gathered by ``doit report``."""

    book: str
    title: str
    phases: list[str]
    scenes: list[SceneRow]
    per_phase: dict[str, dict[str, float]]  # phase -> calls, hits, tokens, cost, avoided
    per_scene: dict[str, dict[str, float]]  # scene -> tokens, cost
    totals: dict[str, float]
    prompt_changes: list[dict] = field(default_factory=list)
    diffs: list[dict] = field(default_factory=list)  # task, from, to, reason, lines
    manuscript_html: str = ""
    stand_in: bool = False
    generated: str = ""
    build: int = 0  # the build DB's generation the page shows (moved by every commit)
    tries: list[dict] = field(default_factory=list)  # name, scenes, templates, status, page


def _e(value) -> str:
    return html.escape(str(value))


def bar_chart(title: str, items: list[tuple[str, float]], unit: str, css_id: str) -> str:
    """A horizontal bar chart as inline SVG (one labelled bar per item)."""
    bar_h, gap, label_w, chart_w = 18, 6, 150, 420
    height = max(1, len(items)) * (bar_h + gap) + 30
    top = max((v for _, v in items), default=0) or 1
    parts = [f'<svg class="chart" id="{css_id}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{label_w + chart_w + 110}" height="{height}" role="img" '
             f'aria-label="{_e(title)}">',
             f'<text x="0" y="14" font-weight="bold" font-size="13">{_e(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = 24 + i * (bar_h + gap)
        width = max(1.0, chart_w * value / top) if value else 0
        shown = (f"{value:.4f}" if unit == "$" else f"{value:.1f}" if unit == "s"
                 else f"{int(value)}")
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{_e(label)}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{y}" width="{width:.1f}" '
                     f'height="{bar_h}" fill="#3b6ea5"><title>{_e(label)}: {_amount(unit, shown)}'
                     "</title></rect>")
        parts.append(f'<text x="{label_w + width + 6:.1f}" y="{y + 13}" font-size="12">'
                     f"{_amount(unit, shown)}</text>")
    if not items:
        parts.append('<text x="0" y="40" font-size="12">no LLM calls yet</text>')
    parts.append("</svg>")
    return "".join(parts)


def _amount(unit: str, shown: str) -> str:
    return f"${shown}" if unit == "$" else f"{shown} s" if unit == "s" else shown


def _charts(data: ReportData) -> str:
    """Cost and tokens per phase and per scene; a free model (nothing spent) shows the
    model's time instead of dollars: bars of $0 would be labels without bars."""
    def items(rows: dict[str, dict], key: str) -> list[tuple[str, float]]:
        return [(name, r.get(key, 0.0)) for name, r in rows.items()]

    if data.totals.get("cost", 0) or not data.totals.get("calls"):
        money = [("Cost per phase", items(data.per_phase, "cost"), "$", "chart-cost-phase"),
                 ("Cost per scene", items(data.per_scene, "cost"), "$", "chart-cost-scene")]
        note = ""
    else:
        money = [("Model time per phase (seconds; this model costs nothing)",
                  items(data.per_phase, "seconds"), "s", "chart-time-phase"),
                 ("Model time per scene (seconds)", items(data.per_scene, "seconds"), "s",
                  "chart-time-scene")]
        note = ('<p class="small">Nothing was spent (a free model): the charts show the '
                "model's time and the tokens instead of dollars.</p>")
    charts = [money[0], ("Tokens per phase", items(data.per_phase, "tokens"), "",
                         "chart-tokens-phase"),
              money[1], ("Tokens per scene", items(data.per_scene, "tokens"), "",
                         "chart-tokens-scene")]
    return note + '<div class="charts">' + "".join(bar_chart(*c) for c in charts) + "</div>"


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 6px;
vertical-align:top;text-align:left}td.success{background:#e6f4e6}td.fail{background:#f8d7d7}
td.not-run{background:#eee;color:#777}td.stale{outline:2px solid #d89b00;outline-offset:-2px}
.why{display:block;font-size:11px;color:#8a5a00}.small{font-size:12px;color:#555}
.charts{display:flex;flex-wrap:wrap;gap:2em}pre{background:#f6f6f6;padding:0.5em;
white-space:pre-wrap}del{background:#fdd}ins{background:#dfd;text-decoration:none}
.manuscript{border-top:2px solid #ccc;margin-top:2em;max-width:40em;font:1.05em/1.6 Georgia,serif}
.manuscript .note{font:0.85em sans-serif;color:#555}.stand-in{border:1px solid #c90;
background:#fff8e0;padding:0.5em 1em}"""


def _matrix(data: ReportData) -> str:
    head = "".join(f"<th>{_e(p)}</th>" for p in data.phases)
    rows = []
    for scene in data.scenes:
        cells = []
        for phase in data.phases:
            cell = scene.cells.get(phase) or Cell("not run")
            classes = [cell.status.replace(" ", "-")] + (["stale"] if cell.stale else [])
            detail = []
            if cell.cache:
                detail.append(f"{cell.cache}, ${cell.cost_usd:.4f}, {cell.tokens} tok")
            text = _e(cell.status) + (f'<span class="small"><br>{_e(detail[0])}</span>'
                                      if detail else "")
            if cell.stale:
                text += f'<span class="why">would run: {_e(cell.stale)}</span>'
            cells.append(f'<td class="{" ".join(classes)}">{text}</td>')
        rows.append(f'<tr class="scene-row" id="row-{_e(scene.id)}"><th>{_e(scene.id)}'
                    f'<br><span class="small">{_e(scene.title)}</span></th>{"".join(cells)}</tr>')
    return (f'<table id="matrix"><thead><tr><th>scene</th>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _costs(data: ReportData) -> str:
    rows = "".join(
        f"<tr><td>{_e(p)}</td><td>{int(r.get('calls', 0))}</td><td>{int(r.get('hits', 0))}</td>"
        f"<td>{int(r.get('tokens', 0))}</td><td>${r.get('cost', 0):.4f}</td>"
        f"<td>${r.get('avoided', 0):.4f}</td></tr>" for p, r in data.per_phase.items())
    t = data.totals
    return ("<table id=\"costs\"><tr><th>phase</th><th>calls</th><th>cache hits</th>"
            "<th>tokens</th><th>spent</th><th>avoided by the cache</th></tr>" + rows
            + f"<tr><th>total</th><th>{int(t.get('calls', 0))}</th>"
            f"<th>{int(t.get('hits', 0))}</th><th>{int(t.get('tokens', 0))}</th>"
            f"<th>${t.get('cost', 0):.4f}</th><th>${t.get('avoided', 0):.4f}</th></tr></table>")


def _prompt_changes(data: ReportData) -> str:
    if not data.prompt_changes:
        return "<p>No prompt change accepted so far.</p>"
    rows = []
    for ch in data.prompt_changes:
        templates = "<br>".join(f"{_e(t['path'])}: {_e((t.get('hash_prev') or '')[:8])} &rarr; "
                                f"{_e((t.get('hash_new') or '')[:8])}"
                                for t in ch.get("templates", []))
        rows.append(f"<tr><td>{_e(ch['task'])}</td><td>{_e(ch.get('timestamp') or '')}</td>"
                    f"<td>{_e(ch.get('reason') or '')}</td>"
                    f"<td>{_e((ch.get('prev') or '')[:8])} &rarr; {_e((ch.get('new') or '')[:8])}"
                    f"</td><td>{templates}</td></tr>")
    return ('<table id="prompt-changes"><tr><th>task</th><th>when</th><th>reason</th>'
            "<th>prompt hash</th><th>templates (old &rarr; new)</th></tr>" + "".join(rows)
            + "</table>")


def _diff_html(line: str) -> str:
    """A diff line with [-removed-] / {+added+} marks as <del>/<ins>."""
    out = _e(line)
    for a, b, tag in (("[-", "-]", "del"), ("{+", "+}", "ins")):
        while a in out and b in out[out.index(a):]:
            i = out.index(a)
            j = out.index(b, i)
            out = out[:i] + f"<{tag}>" + out[i + 2:j] + f"</{tag}>" + out[j + 2:]
    return out


def _diffs(data: ReportData) -> str:
    if not data.diffs:
        return "<p>No phase has more than one version yet.</p>"
    parts = []
    for d in data.diffs:
        body = "\n".join(_diff_html(line) for line in d["lines"]) or "no difference"
        parts.append(f"<h3>{_e(d['task'])}: version {d['from']} &rarr; {d['to']} "
                     f'<span class="small">({_e(d.get("reason", ""))})</span></h3>'
                     f"<pre>{body}</pre>")
    return "".join(parts)


def _tries(data: ReportData) -> str:
    if not data.tries:
        return ("<p>No try so far (<code>doit try NAME SCENE...</code> builds scenes with "
                "other templates beside the book).</p>")
    rows = []
    for t in data.tries:
        page = (f'<a href="{_e(t["page"])}">its page</a>' if t.get("page") else
                f"<code>doit report try:{_e(t['name'])}</code>")
        rows.append(f'<tr class="try-row" id="try-{_e(t["name"])}"><td>{_e(t["name"])}</td>'
                    f"<td>{_e(t.get('reason', ''))}</td><td>{_e(', '.join(t.get('scenes', [])))}"
                    f"</td><td>{'<br>'.join(_e(x) for x in t.get('templates', []))}</td>"
                    f"<td>{int(t.get('calls_paid', 0))}, ${float(t.get('cost', 0.0)):.4f}</td>"
                    f"<td>{_e(t.get('status', ''))}</td><td>{page}</td></tr>")
    return ('<table id="tries"><tr><th>try</th><th>reason</th><th>scenes</th><th>templates '
            "changed</th><th>calls paid</th><th>status</th><th>against the book</th></tr>"
            + "".join(rows) + "</table>")


def render(data: ReportData) -> str:
    """The report page."""
    stand_in = ('<p class="stand-in"><strong>Text from the offline stand-in model: placeholder '
                "prose.</strong></p>" if data.stand_in else "")
    t = data.totals
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Report: {_e(data.title)}</title><style>{_STYLE}</style>"
        "</head>\n<body>\n"
        f"<h1>Report: {_e(data.title)}</h1>"
        f'<p class="small" id="made">book <code>{_e(data.book)}</code>, written '
        f"{_e(data.generated)} by <code>doit report</code> from build {_e(data.build)} of its "
        "build DB: a later run is not in it until <code>doit report</code> writes it again</p>"
        + stand_in
        + "<h2>Scenes and phases</h2>" + _matrix(data)
        + "<h2>Cost and tokens</h2>"
        f"<p>{int(t.get('calls', 0))} LLM calls, {int(t.get('hits', 0))} served by the response "
        f"cache; spent ${t.get('cost', 0):.4f}; the cache avoided ${t.get('avoided', 0):.4f}.</p>"
        + _costs(data) + _charts(data)
        + "<h2>Prompt changes</h2>" + _prompt_changes(data)
        + "<h2>Tries</h2>" + _tries(data)
        + "<h2>Last changes</h2>" + _diffs(data)
        + '<div class="manuscript" id="manuscript">' + data.manuscript_html + "</div>"
        + "\n</body></html>\n")
