"""A fresh copy of the project (dodo.py + example workspace), driven through real
`python -m doit` commands, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Project:
    """A scenemake project in a temporary folder."""

    def __init__(self, root: Path):
        self.root = root
        self.book = root / "workspace" / "books" / "example"
        self.draft = self.book / "draft"

    def doit(self, *args: str, env: dict | None = None, check: bool | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``python -m doit ARGS`` in the project; returns the completed process."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.root,
                              capture_output=True, text=True, env=full_env, timeout=timeout)
        proc.out = proc.stdout + proc.stderr  # type: ignore[attr-defined]
        if check is True and proc.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.out}")
        return proc

    def build(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.doit(*args, check=True, **kw)

    # -- what a user can observe --------------------------------------------------------
    def calls(self) -> list[dict]:
        log = self.root / "workspace" / ".scenemake" / "llm_calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def misses(self, since: int = 0) -> list[dict]:
        return [c for c in self.calls()[since:] if c["cache"] == "miss"]

    def ledger(self, sid: str) -> dict:
        return json.loads((self.draft / "context" / "phase_history" / f"{sid}.json").read_text())

    def artifact(self, sid: str, rel: str) -> Path:
        return self.draft / "scenes" / sid / rel

    def db_tasks(self) -> set[str]:
        db = self.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
        with sqlite3.connect(db) as conn:
            return {r[0] for r in conn.execute("select task_id from doit")}

    def edit_json(self, rel: str, fn) -> None:
        path = self.root / rel
        data = json.loads(path.read_text())
        fn(data)
        path.write_text(json.dumps(data, indent=2))


def executed(proc) -> list[str]:
    """Tasks doit ran (lines '.  NAME'), in order."""
    return [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]


# the book's phases, in pipeline order (pipeline/book/phase_table.py)
PHASES = ("plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit")


def loaded(project: Project, *args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The tasks a doit command built (as scenemake's task loader reports them), and the
    process."""
    report = project.root / "loaded.json"
    report.unlink(missing_ok=True)
    proc = project.doit(*args, env={"SCENEMAKE_LOADED_TASKS": str(report)})
    return set(json.loads(report.read_text())), proc


def scenes_of(names: set[str]) -> set[str]:
    """The scenes whose phase tasks are among ``names``."""
    return {n.partition(":")[2] for n in names if n.partition(":")[0] in PHASES
            and n.partition(":")[2]}


def built_files(root: Path) -> dict[str, bytes]:
    """What a build leaves that a user reads: every artifact and the manuscript (ledgers
    and kept versions carry timestamps and are compared by their contents elsewhere)."""
    draft = root / "workspace" / "books" / "example" / "draft"
    return {str(p.relative_to(draft)): p.read_bytes() for p in sorted(draft.rglob("*"))
            if p.is_file() and "phase_history" not in p.parts}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def make_project(root: Path) -> Path:
    """dodo.py, doit.cfg and the shipped workspace (inputs only) in ``root``."""
    root.mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copy(REPO / "doit.cfg", root / "doit.cfg")  # scenemake's task loader
    shutil.copytree(REPO / "workspace", root / "workspace",
                    ignore=shutil.ignore_patterns("draft", ".scenemake", "artifacts"))
    return root
