"""Helpers of the pack-loop and stage-loop tests: coder configs, stage manifests, GUI runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support.scenario import PACK, Project

CODER = Path(__file__).resolve().parent / "loop_coder.py"
MANIFEST = "workspace/orchestration/stage_test.json"
RULES = "workspace/scenarios/assistant_rules.json"


def coder_config(project: Project, *flags: str, name: str = "coder.json",
                 timeout_s: float = 60) -> str:
    """A coder config running tests/loop_coder.py with ``flags``; returns its path."""
    rel = f"workspace/scenarios/coders/{name}"
    project.write(rel, {"command": [sys.executable, str(CODER), "{repair_prompt}", *flags],
                        "timeout_s": timeout_s, "allowed_paths": [RULES]})
    return rel


def loop_args(url: str, *extra: str, pack: str = PACK) -> list[str]:
    """``run-pack-loop`` against the assistant at ``url``."""
    return ["run-pack-loop", "--pack", pack, "--base-url", url, *extra]


def stage_manifest(project: Project, url: str, *flags: str, **changes) -> str:
    """A stage manifest for the assistant at ``url`` with the test coder; returns its path."""
    data = {"stage_id": "stage_test", "title": "Test stage", "goal": "clean answers",
            "pack": "../scenarios/packs/warehouse_basics.json", "workspace": "..",
            "max_iterations": 3, "assistant": {"base_url": url},
            "coder": {"command": [sys.executable, str(CODER), "{repair_prompt}", *flags],
                      "timeout_s": 60, "allowed_paths": [RULES]}}
    data.update(changes)
    project.write(MANIFEST, data)
    return MANIFEST


def gui_run(project: Project, run_id: str, questions: list[str]) -> None:
    """A saved GUI run: one session asking ``questions`` with the rules as they are now."""
    a = project.assistant(run_id=run_id)
    session = None
    for q in questions:
        session = a.ask(q, session).json()["session_id"]
    a.stop()


def stage_dir(project: Project) -> Path:
    return project.runs / "stage_agent_loops" / "stage_test"


def summary(project: Project) -> dict:
    return json.loads((stage_dir(project) / "stage_loop_summary.json").read_text())
