"""``doit report pack:RUN_DIR``: a scenario pack run's gate and each step's three reviews
side by side, written beside the run dir."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import browser
from support.project import REPO, Project, make_project

PACK = "workspace/scenarios/packs/warehouse_basics.json"
RUN = "workspace/artifacts/domain_runs/pack-warehouse_basics"


@pytest.fixture(scope="module")
def pack_reported(tmp_path_factory) -> tuple[Project, Path]:
    root = make_project(tmp_path_factory.mktemp("packreport") / "proj")
    shutil.copytree(REPO / "score_specs", root / "score_specs")
    run = subprocess.run([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack", PACK,
                          "--start-assistant"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    project = Project(root)
    files = sorted(p.relative_to(root / RUN) for p in (root / RUN).rglob("*"))
    proc = project.build("report", f"pack:{RUN}")
    assert proc.stdout == f"report: {RUN}.report.html\n"
    assert sorted(p.relative_to(root / RUN) for p in (root / RUN).rglob("*")) == files
    return project, root / f"{RUN}.report.html"


@pytest.mark.slow
def test_every_step_with_its_three_reviews(pack_reported):
    project, page_path = pack_reported
    page = page_path.read_text()
    run = project.root / RUN
    state = json.loads((run / "pack_state.json").read_text())
    truth = json.loads((run / "truth_review.json").read_text())["steps"]
    judge = {(s["scenario_id"], s["step_id"]): s
             for s in json.loads((run / "judge_review.json").read_text())["steps"]}
    assert len(truth) == sum(sum(sc["counts"].values()) for sc in state["scenarios"])
    for step in truth:
        key = (step["scenario_id"], step["step_id"])
        row = page.split(f'id="step-{key[0]}-{key[1]}"')[1].split("</tr>")[0]
        passed = sum(f["status"] == "pass" for f in step["facts"])
        assert f"{passed}/{len(step['facts'])} facts" in row
        assert f">{judge[key]['score']}<" in row
    gate = page.split('id="gate"')[1].split("</table>")[0]
    assert gate.count("<tr><td>") == len(state["acceptance_gate"]["conditions"])
    assert "<script" not in page


@pytest.mark.slow
def test_the_pack_page_renders_in_chromium(pack_reported, tmp_path: Path):
    browser.chromium()
    project, page = pack_reported
    dom = browser.run(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r'<tr class="step-row"', dom.stdout)) == 9
    shot = tmp_path / "pack.png"
    proc = browser.run(page, f"--screenshot={shot}", "--window-size=1280,900")
    assert proc.returncode == 0 and browser.ink(shot) > 0.02, proc.stderr[-2000:]


@pytest.mark.slow
def test_a_pack_loop_shows_its_iterations_side_by_side(pack_reported):
    project, _ = pack_reported
    loop_dir = "workspace/artifacts/domain_runs/loop-warehouse_basics"
    run = subprocess.run([sys.executable, "-m", "pipeline.scenario", "run-pack-loop", "--pack",
                          PACK, "--coder-config",
                          "workspace/scenarios/coders/rules_coder.json", "--start-assistant",
                          "--max-iterations", "2"], cwd=project.root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    proc = project.build("report", f"pack:{loop_dir}")
    assert proc.stdout == f"report: {loop_dir}.report.html\n"
    page = (project.root / f"{loop_dir}.report.html").read_text()
    state = json.loads((project.root / loop_dir / "loop_state.json").read_text())
    table = page.split('id="iterations"')[1].split("</table>")[0]
    assert table.count("<th>iteration ") == len(state["iterations"]) >= 1
    for it in state["iterations"]:
        verdict = json.loads((project.root / loop_dir / it["dir"] / "analyst_verdict.json")
                             .read_text())
        assert f">{verdict['score']}<" in table
        for cond in verdict["gate"]["conditions"]:
            assert f"gate: {cond['name']}" in table and html.escape(cond["detail"]) in table
        assert f"Iteration {it['iteration']}: pack run {it['run_id']}" in page
