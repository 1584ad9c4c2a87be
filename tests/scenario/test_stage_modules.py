"""The stage package split (state, rendering, commands) keeps its two module entry points
and its rendering writes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.scenario import stage
from pipeline.scenario.stage import rendering


@pytest.mark.parametrize("module", ["pipeline.scenario.stage", "pipeline.scenario.stage_cli"])
def test_both_module_entry_points_run_the_stage_cli(tmp_path, module):
    proc = subprocess.run([sys.executable, "-m", module, "status", "--manifest", "nope.json"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: nope.json: stage manifest not found"]


def test_the_package_keeps_its_names():
    assert issubclass(stage.Stage, stage.StageState)
    assert stage.SUMMARY == "stage_loop_summary.json"
    assert set(stage.NEXT_COMMAND.values()) <= set(stage.COMMANDS)


def test_the_repair_handoff_renders_without_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = {"source": {"kind": "gui_run", "run_id": "assistant-stage1-a", "review": "r.md"},
           "primary_repair_targets": [{"target_id": "T1", "priority": "P0", "code": "no_answer",
                                       "count": 2, "message": "answer first",
                                       "suggested_change": {"rule": "x"}}],
           "sample_failures": [{"target_id": "T1", "code": "no_answer", "question": "Q?",
                                "first_line": "Hello"}],
           "stage_closing_gate": "blocked_by_gui_review", "next_command": "prepare"}
    md = rendering.repair_handoff_md("s1", doc, {"next_action": "continue"})
    assert md.startswith("# Stage repair handoff: s1\n")
    assert '- T1 **P0** `no_answer` x2: answer first; suggested `{"rule": "x"}`' in md
    assert "  - A (first line): Hello" in md and md.endswith("Next: `prepare`\n")
    assert list(tmp_path.iterdir()) == []
