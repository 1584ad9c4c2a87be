"""The page of ``doit report try:NAME`` and ``doit compare`` (pipeline/book/compare.py), opened
in a real browser (Debian's chromium) as a writer opens it to choose between tries."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from support import browser
from support.project import REPO, Project

from pipeline.book.compare import Built, Comparison, SceneRow, TryHead, page, text
from pipeline.book.judge import Judgement

TRIED = ["ch001_sc001", "ch001_sc002"]
OFFLINE_JUDGE = {"SCENEMAKE_MODEL": "offline:offline-1"}


def _variant(project: Project, name: str, line: str) -> str:
    folder = project.root / "variants" / name
    folder.mkdir(parents=True)
    (folder / "write.j2").write_text((REPO / "pipeline/book/templates/write.j2").read_text()
                                     + line + "\n")
    return f"variants/{name}"


@pytest.mark.slow
def test_the_try_page_renders_in_chromium(built: Project, tmp_path: Path):
    browser.chromium()
    shutil.copytree(REPO / "score_specs", built.root / "score_specs")
    for name, line in (("terse", "Keep it under a hundred words."),
                       ("vivid", "Use vivid sensory detail.")):
        built.build("try", name, *TRIED, "--templates", _variant(built, name, line))
    proc = built.doit("report", "try:terse", env=OFFLINE_JUDGE)
    assert proc.returncode == 0, proc.out
    assert proc.stdout.strip() == "report: workspace/books/example/draft/tries/terse/report.html"
    built.build("compare", "--short", env=OFFLINE_JUDGE)
    for path, sides in ((built.draft / "tries" / "terse" / "report.html",
                         ["accepted", "try terse"]),
                        (built.draft / "tries" / "compare.html",
                         ["accepted", "try terse", "try vivid"])):
        source = path.read_text()
        assert "<script" not in source
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", source)  # nothing fetched
        dom = browser.run(path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert re.findall(r'<tr class="score-row" id="score-(ch\d{3}_sc\d{3})"', html) == TRIED
        for sid in TRIED:
            row = html.split(f'id="score-{sid}"')[1].split("</tr>")[0]
            assert re.findall(r'data-side="([^"]+)"', row) == sides
            # a score from the judge (1-5), words, lint, tokens and cost in every cell
            assert len(re.findall(r">\d\.\d\d<br>", row)) == len(sides), row
            assert row.count(" words, pass") == len(sides)
            scene = html.split(f'<section class="scene" id="scene-{sid}">')[1].split(
                "</section>")[0]
            assert re.findall(r'<div class="column" data-side="([^"]+)"', scene) == sides
            assert scene.count('<table class="judgement">') == len(sides)
            assert "scene card: try terse against the accepted scene" in scene
            assert "state patch: try terse against the accepted scene" in scene
        assert "Text from the offline stand-in model: placeholder prose." in html
        assert "Judge: the offline stand-in (not a language model" in html
        assert re.findall(r'<tr class="try-row" id="try-([\w-]+)"', html) == \
            [s.removeprefix("try ") for s in sides[1:]]
        assert "Uncaught" not in dom.stderr and ":CONSOLE(" not in dom.stderr
        shot = tmp_path / f"{path.stem}.png"
        proc = browser.run(path, f"--screenshot={shot}", "--window-size=1280,1600")
        assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
        assert browser.ink(shot) > 0.02  # text, tables and columns: not a blank page
    # the book's own report lists its tries, with the page written for terse
    built.build("report")
    report = (built.draft / "report.html").read_text()
    tries = report.split('<table id="tries">')[1].split("</table>")[0]
    assert 'href="tries/terse/report.html"' in tries and "doit report try:vivid" in tries


def _comparison(prose_a: str, prose_b: str) -> Comparison:
    card = {"goal": "g", "beats": ["a", "b"]}
    lint = {"passed": True, "findings": [{"severity": "warning", "message": "Mara not named"}]}
    a = Built("accepted", prose_a, card, {"events": ["x"]}, lint, 100, 0.01,
              judgement=Judgement(3.5, {"style": {"score": 3, "reason": "fine"}}))
    b = Built("try terse", prose_b, {**card, "beats": ["a", "c"]}, {"events": ["y"]},
              {"passed": False, "findings": [{"severity": "error", "message": "too short"}]},
              80, 0.02, judgement=Judgement(4.25, {"style": {"score": 4, "reason": "tight"}}))
    head = TryHead("terse", "shorter", ["ch001_sc001"], ["write.j2 +1 -0 line(s)"], 3, 0.02,
                   "2026-01-01T00:00:00.000Z", "built")
    return Comparison("example", "The Book", [head], [SceneRow("ch001_sc001", "One", [a, b])],
                      judge="local SmolLM2", judge_spec="score_specs/score_spec_scene.json")


def test_the_comparison_as_text_and_page():
    old = "Mara climbs the tower.\n\nThe lamp is dark and cold tonight.\n"
    c = _comparison(old, "Mara climbs the tower.\n\nThe lamp is dark tonight.\n")
    out = text(c)
    rows = {r[0]: r[1:] for r in (re.split(r"\s{2,}", line.strip())
                                  for line in out.splitlines() if line.startswith("  "))}
    assert rows["judge"] == ["3.50", "4.25"] and rows["words"] == ["11", "9"]
    assert rows["lint"] == ["pass (1 warning)", "fail (1 error)"]
    assert rows["tokens"] == ["100", "80"] and rows["cost $"] == ["0.0100", "0.0200"]
    assert "[-and cold-]" in out  # most words the same: a word diff
    assert "~ beats[1]: \"b\" -> \"c\"" in out and "~ events[0]: \"x\" -> \"y\"" in out
    rewritten = text(_comparison(old, "Nobody is here at all.\n"))
    assert "(rewritten: most words changed; old | new, paragraph by paragraph)" in rewritten
    assert "prose:" not in text(c, diffs=False)
    html = page(c)
    cells = html.split('id="score-ch001_sc001"')[1].split("</tr>")[0]
    assert 'class="best" data-side="accepted"' not in cells  # 4.25 is the best, but it fails
    assert 'class="fail" data-side="try terse"' in cells
    assert "<li>error: too short</li>" in html and "Judge: local SmolLM2" in html
