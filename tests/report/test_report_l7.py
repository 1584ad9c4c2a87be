"""``doit report l7:OUT_DIR``: an L7 session's candidates side by side, the winner and why
the others lost, the continuity findings; written beside the out-dir, never into it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import browser
from support.l7 import OUT, OUTPUTS, L7Project, copy_project


@pytest.fixture(scope="module")
def l7_reported(tmp_path_factory) -> tuple[L7Project, Path]:
    project = copy_project(tmp_path_factory.mktemp("l7report") / "proj")
    proc = project.cli()
    assert proc.returncode == 0, proc.out
    before = sorted(p.name for p in (project.root / OUT).iterdir())
    rep = project.doit("report", f"l7:{OUT}")
    assert rep.returncode == 0, rep.out
    assert rep.stdout == f"report: {OUT}.report.html\n"
    assert sorted(p.name for p in (project.root / OUT).iterdir()) == before == sorted(OUTPUTS)
    return project, project.root / f"{OUT}.report.html"


@pytest.mark.slow
def test_every_candidate_with_its_score_and_why_it_lost(l7_reported):
    project, page_path = l7_reported
    page = page_path.read_text()
    out = project.root / OUT
    traces = json.loads((out / "selection_trace_prompt.json").read_text())["scenes"]
    for trace in traces:
        section = page.split(f'id="scene-{trace["scene_id"]}"')[1].split("<section")[0]
        last = trace["rounds"][-1]
        for rank in last["ranking"]:
            assert f'id="cand-{rank["candidate_id"]}"' in section
            assert f'{rank["weighted_score"]:.3f}' in section
            assert rank["reason"].replace("'", "&#x27;") in section
        assert section.count('class="cand won"') == len(trace["rounds"])
    audit = json.loads((out / "continuity_audit_prompt.json").read_text())
    findings = sum(len(p["findings"]) for p in audit["pairs"])
    assert page.split('id="findings"')[1].count("<tr><td>") == findings
    assert "<script" not in page


@pytest.mark.slow
def test_an_unknown_unit_or_folder_is_one_line(l7_reported):
    project, _ = l7_reported
    for arg, words in (("l7:nowhere", "not an L7 out-dir"), ("pack:x", "not a scenario pack run"),
                       ("loop:x", "not a unit")):
        proc = project.doit("report", arg)
        assert proc.returncode == 3 and words in proc.stderr and "Traceback" not in proc.out


@pytest.mark.slow
def test_the_l7_page_renders_in_chromium(l7_reported, tmp_path: Path):
    browser.chromium()
    project, page = l7_reported
    dom = browser.run(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    traces = json.loads((project.root / OUT / "selection_trace_prompt.json").read_text())
    assert re.findall(r'<section class="scene" id="scene-(\w+)"', dom.stdout) == [
        t["scene_id"] for t in traces["scenes"]]
    shot = tmp_path / "l7.png"
    proc = browser.run(page, f"--screenshot={shot}", "--window-size=1280,1400")
    assert proc.returncode == 0 and browser.ink(shot) > 0.02, proc.stderr[-2000:]
