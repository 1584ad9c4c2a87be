"""Test helpers of the L7 runner: a copy of the project with the example session, driven
through the real command line (``python -m pipeline.l7``) and real ``python -m doit``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SESSION = "sess_harbour_001"
INPUT = "workspace/l7/sample_session_input_l7.json"
OBJECTIVE = "workspace/l7/sample_session_objective_l7_prompt_map.json"
SCENES = "workspace/l7/l6_run_output/scenes_v2.json"
SPEC = "score_specs/score_spec_prompt.json"
OUT = "workspace/l7/l7_run_output"
RERUN_OUT = "workspace/l7/l7_rerun_output"
OUTPUTS = ["gate_in_report.json", "candidates_prompt.json", "evaluation_report_prompt.json",
           "selection_trace_prompt.json", "continuity_audit_prompt.json", "prompt_map_pack.json",
           "scenes_v2.json", "runtime_log_l7.json", "session_output.json",
           "gate_out_report.json"]


def clean_env(extra: dict | None = None) -> dict:
    """The environment without the developer's model switches (offline by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMAKE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class L7Project:
    """A project folder with dodo.py, score_specs/ and the example workspace."""

    def __init__(self, root: Path):
        self.root = root

    # -- commands ------------------------------------------------------------------------
    def cli(self, *args: str, base: bool = True, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        """``python -m pipeline.l7`` with the example's flags (``base``) plus ``args``."""
        argv = ["--session-input", INPUT, "--session-objective", OBJECTIVE,
                "--scenes-v2", SCENES, "--out-dir", OUT] if base else []
        proc = subprocess.run([sys.executable, "-m", "pipeline.l7", *argv, *args],
                              cwd=self.root, capture_output=True, text=True,
                              env=clean_env(env), timeout=timeout)
        proc.out = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        return proc

    def doit(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.root,
                              capture_output=True, text=True, env=clean_env(env), timeout=300)
        proc.out = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        return proc

    # -- what a user can observe -------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.root / rel

    def out(self, name: str, out_dir: str = OUT) -> dict:
        return json.loads((self.root / out_dir / name).read_text())

    def calls(self) -> list[dict]:
        from pipeline.llm import read_calls

        return read_calls(self.root / "workspace" / ".scenemake" / "llm_calls.jsonl")

    def misses(self, since: int = 0) -> list[dict]:
        return [c for c in self.calls()[since:] if c["cache"] == "miss"]

    def edit_json(self, rel: str, fn) -> None:
        path = self.root / rel
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data, indent=2))

    def snapshot(self, rel: str = OUT) -> dict[str, bytes]:
        base = self.root / rel
        return {p.name: p.read_bytes() for p in sorted(base.iterdir()) if p.is_file()}


def executed(proc) -> list[str]:
    """Tasks doit ran (lines '.  NAME')."""
    return [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]


def one_line_error(proc, code: int, *needles: str) -> str:
    """Assert exit ``code`` with exactly one line on stderr containing ``needles``."""
    assert proc.returncode == code, proc.out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.out
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def copy_project(dest: Path) -> L7Project:
    """dodo.py, score_specs/ and workspace/ (inputs only) copied to ``dest``."""
    dest.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", dest / "dodo.py")
    shutil.copy(REPO / "doit.cfg", dest / "doit.cfg")  # scenemake's task loader
    shutil.copytree(REPO / "score_specs", dest / "score_specs")
    shutil.copytree(REPO / "workspace", dest / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts",
                                                  "l7_run_output", "l7_rerun_output"))
    return L7Project(dest)
