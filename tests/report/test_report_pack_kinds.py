"""``doit report pack:RUN_DIR`` renders every run the scenario loop can produce (issue 22,
item 1: a run with findings crashed the page): clean, with findings, blocked, interrupted,
captured but not reviewed; and a judge cell is coloured against the pack's own gate, not
the judge's pass mark (item 9)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.project import REPO, Project, make_project
from support.scenario import PACK, RULES, Assistant, free_port

pytestmark = pytest.mark.slow

RUN = "workspace/artifacts/domain_runs/pack-warehouse_basics"


@pytest.fixture
def project(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    shutil.copytree(REPO / "score_specs", root / "score_specs")
    project = Project(root)
    project.assistants = []
    yield project
    for assistant in project.assistants:
        assistant.stop()


def _assistant(project: Project, **kw) -> Assistant:
    assistant = Assistant(project.root, **kw).start()
    project.assistants.append(assistant)
    return assistant


def _run_pack(project: Project, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack", PACK,
                           "--base-url", url, *extra], cwd=project.root, capture_output=True,
                          text=True, timeout=300)


def _edit(project: Project, rel: str, **changes) -> None:
    path = project.root / rel
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _page(project: Project) -> str:
    proc = project.doit("report", f"pack:{RUN}")
    assert proc.returncode == 0, proc.out
    assert proc.stdout == f"report: {RUN}.report.html\n" and "Traceback" not in proc.out
    return (project.root / f"{RUN}.report.html").read_text()


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="step-row".*?</tr>', page, flags=re.S)


def _judge_cells(page: str) -> list[str]:
    return [re.findall(r"<td[^>]*>", row)[-1] for row in _rows(page)
            if "not captured yet" not in row]


def test_a_clean_run_and_its_judge_cells_against_the_gate(project: Project):
    assistant = _assistant(project)
    run = _run_pack(project, assistant.url)
    assert run.returncode == 0, run.stdout + run.stderr
    page = _page(project)
    assert len(_rows(page)) == 9
    # the pack sets no min_judge_score: the judge's own pass mark is not the gate's
    assert _judge_cells(page) and all('class="judge"' in c for c in _judge_cells(page))


def test_a_run_with_findings_shows_each_finding(project: Project):
    project_rules = json.loads((project.root / RULES).read_text())
    assert project_rules["show_route_ids"] is False
    _edit(project, RULES, show_route_ids=True)
    _edit(project, PACK, acceptance_gate={"min_judge_score": 45})
    assistant = _assistant(project)
    run = _run_pack(project, assistant.url)
    assert run.returncode == 1, run.stdout + run.stderr  # partial: not accepted
    page = _page(project)
    review = json.loads((project.root / RUN / "business_review.json").read_text())
    by_id = {f["id"]: f for f in review["findings"]}
    assert by_id
    judge = {(s["scenario_id"], s["step_id"]): s["score"]
             for s in json.loads((project.root / RUN / "judge_review.json").read_text())["steps"]}
    for step in review["steps"]:
        row = page.split(f'id="step-{step["scenario_id"]}-{step["step_id"]}"')[1]
        row = row.split("</tr>")[0]
        assert step["findings"]
        for ref in step["findings"]:
            assert html.escape(f'{by_id[ref]["severity"]} {by_id[ref]["message"]}') in row
        score = judge[(step["scenario_id"], step["step_id"])]
        cell = re.findall(r"<td[^>]*>", row)[-1]
        assert cell == ('<td class="pass">' if score >= 45 else '<td class="fail">')
        assert "(gate: &gt;= 45)" in row


def test_a_blocked_run(project: Project):
    run = _run_pack(project, f"http://127.0.0.1:{free_port()}", "--retries", "0",
                    "--timeout", "2")
    assert run.returncode == 1, run.stdout + run.stderr
    state = json.loads((project.root / RUN / "pack_state.json").read_text())
    assert state["final_status"] == "blocked"
    page = _page(project)
    assert "blocked" in page and len(_rows(page)) >= 3


def test_a_captured_run_not_reviewed_yet(project: Project):
    assistant = _assistant(project)
    run = _run_pack(project, assistant.url, "--no-review")
    assert run.returncode in (0, 1), run.stdout + run.stderr
    page = _page(project)
    rows = _rows(page)
    assert len(rows) == 9 and all(row.count("not reviewed") == 2 for row in rows)
    assert all("not judged" in row for row in rows)


def test_a_run_killed_at_its_first_question(project: Project):
    """CI once killed a run between a step's files and the run's state: no pack_state.json,
    so no report. The state is written before the first question, so there is always one."""
    _assistant(project, delay_ms=60_000)  # no answer comes before the kill
    assistant = project.assistants[0]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack",
                             PACK, "--base-url", assistant.url], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("pack ")  # the run is laid out: now asking
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = _rows(_page(project))
    assert len(rows) == 9 and all("not captured yet" in row for row in rows)


def test_an_interrupted_run(project: Project):
    assistant = _assistant(project, delay_ms=1500)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.scenario", "run-pack", "--pack",
                             PACK, "--base-url", assistant.url], cwd=project.root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    run = project.root / RUN
    deadline = time.monotonic() + 120
    while not list(run.glob("scenarios/*/steps/*/step_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # as a crash: no goodbye
    proc.wait()
    page = _page(project)
    rows = _rows(page)
    assert rows and "not captured yet" in page
    assert len([r for r in rows if "not captured yet" not in r]) < 9
