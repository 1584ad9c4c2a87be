"""``doit report``: one self-contained page, opened in a real browser (Debian's chromium)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from support import browser
from support.project import Project

SCENES = ["ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003"]


def _report(project: Project) -> Path:
    proc = project.build("report")
    assert proc.stdout.strip() == "report: workspace/books/example/draft/report.html"
    return project.draft / "report.html"


def test_the_page_is_self_contained_and_complete(built: Project):
    page = _report(built).read_text()
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing to fetch
    for sid in SCENES:
        assert f'id="row-{sid}"' in page
    assert page.count('<svg class="chart"') == 4
    assert "Text from the offline stand-in model" in page
    md = (built.draft / "manuscript.md").read_text()
    first = md.split("### The Last Ferry\n\n")[1].split("\n")[0]
    assert first[:60] in html.unescape(page)


@pytest.mark.slow
def test_report_shows_prompt_changes_diffs_and_why_stale(built: Project):
    override = built.book / "templates" / "repair.j2"
    override.parent.mkdir(exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    override.write_text((repo / "pipeline/book/templates/repair.j2").read_text() + "\nBe terse.\n")
    built.build("allow_prompt_change=1", "reason=terser repairs")
    built.edit_json("workspace/books/example/outline.json",
                    lambda o: o["chapters"][1]["scenes"][2].__setitem__("brief", "A new ending."))
    page = _report(built).read_text()
    assert "terser repairs" in page.split("<h2>Prompt changes</h2>")[1].split("<h2>")[0]
    last = page.split("<h2>Last changes</h2>")[1]
    assert "prompt change accepted: terser repairs" in last
    assert "<del>" in last or "<ins>" in last
    row = page.split('id="row-ch002_sc003"')[1].split("</tr>")[0]
    assert "would run: outline.json: scene ch002_sc003 `brief` changed" in row
    assert "would run" not in page.split('id="row-ch001_sc001"')[1].split("</tr>")[0]


@pytest.mark.slow
def test_the_page_renders_in_chromium(built: Project, tmp_path: Path):
    browser.chromium()
    page = _report(built)
    dom = browser.run(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r'<tr class="scene-row" id="row-(ch\d{3}_sc\d{3})"', html)
    assert rows == SCENES
    charts = re.findall(r'<svg class="chart" id="([\w-]+)"(.*?)</svg>', html, re.S)
    # the offline model costs nothing: its model time is charted, not $0 (labels, no bars)
    assert [c[0] for c in charts] == ["chart-time-phase", "chart-tokens-phase",
                                      "chart-time-scene", "chart-tokens-scene"]
    for name in ("chart-tokens-scene", "chart-time-scene"):
        widths = [float(w) for w in re.findall(r'<rect class="bar"[^>]* width="([\d.]+)"',
                                               dict(charts)[name])]
        assert len(widths) == len(SCENES) and min(widths) > 0, name
    assert "Uncaught" not in dom.stderr and ":CONSOLE(" not in dom.stderr
    shot = tmp_path / "report.png"
    proc = browser.run(page, f"--screenshot={shot}", "--window-size=1280,1600")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert browser.ink(shot) > 0.02  # text, tables and bars: not a blank page


def test_a_paid_model_s_charts_show_dollars(tmp_path: Path):
    from pipeline.book.report import Cell, ReportData, SceneRow, render

    def data(cost: float) -> ReportData:
        row = {"calls": 2, "hits": 0, "tokens": 100, "cost": cost, "seconds": 1.5}
        return ReportData(book="b", title="T", phases=["plan"],
                          scenes=[SceneRow("ch001_sc001", "One", {"plan": Cell("success")})],
                          per_phase={"plan": row}, per_scene={"ch001_sc001": row}, totals=row,
                          prompt_changes=[], diffs=[], manuscript_html="", stand_in=False,
                          generated="now")

    paid = render(data(0.25))
    assert 'id="chart-cost-phase"' in paid and "$0.2500" in paid and "chart-time" not in paid
    free = render(data(0.0))
    assert 'id="chart-time-phase"' in free and "1.5 s" in free and "chart-cost" not in free
    assert "costs nothing" in free


def test_the_page_says_which_build_it_shows_and_the_run_does_not_advertise_it(built):
    """issue #22 item 5: the run's last line named draft/report.html, which a plain doit
    never rewrote; now it does not, and the page says when and from which build it is."""
    import re

    page = _report(built).read_text()
    made = re.search(r'id="made">.*?from build (\d+) of its build DB', page)
    assert made, page[:2000]
    before = int(made.group(1))
    built.edit_json("workspace/books/example/outline.json", lambda d: d["chapters"][0]
                    ["scenes"][0].update(brief="The ferry comes in late."))
    proc = built.build()
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("scenemake: ") and "report" not in last, last
    again = re.search(r"from build (\d+)", _report(built).read_text())
    assert int(again.group(1)) > before
