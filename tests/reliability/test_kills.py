"""``kill -9`` at chosen fault points and at random moments (issue 15, item 2): the next run
finishes the book, removes the temp files the killed writer left, pays no request twice,
and ends with the same artifacts as a run never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support.project import Project, snapshot

pytestmark = pytest.mark.slow


def _debris(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def _cut_answer(project: Project) -> set[str]:
    """The request whose answer the killed run had paid for but not yet cached, if any.

    A serial run pays for one request at a time and caches its answer right after logging
    the call: the last paid call of the killed run is the only answer that can have existed
    only in the killed process, so it is the one request a kill may make the next run pay
    again. Any other request paid twice is a bug.
    """
    misses = project.misses()
    return {misses[-1]["request_hash"]} if misses else set()


def _check_recovered(project: Project, built_template: Path) -> None:
    built = Project(built_template)
    cut = _cut_answer(project)
    again = project.doit()
    assert again.returncode == 0, again.out
    assert "Traceback" not in again.out
    assert _debris(project.root) == []
    claims = project.root / "workspace" / ".scenemake" / "claims"
    assert not claims.exists() or list(claims.iterdir()) == []  # no dead holder's claim left
    paid = Counter(c["request_hash"] for c in project.misses())
    assert {h for h, n in paid.items() if n > 1} <= cut  # nothing else paid twice
    assert len(paid) == len(built.misses())  # and nothing left unpaid
    scenes = project.draft / "scenes"
    assert snapshot(scenes) == snapshot(built.draft / "scenes")  # nothing lost or mixed


# staged: temp files written, renames not done (a write cut short); written: an artifact
# renamed, its task not yet recorded in the build DB; @phase_history: inside the ledger
# thread (the views written after each commit).
@pytest.mark.parametrize("fault", ["staged:3", "staged:7", "staged:25", "staged:60",
                                   "written:20", "written:47", "written@/scenes/:9",
                                   "staged@phase_history:4", "written@phase_history:11"])
def test_a_kill_at_a_fault_point_leaves_nothing_behind(project: Project, built_template: Path,
                                                       fault: str):
    killed = project.doit(env={"SCENEMAKE_KILL_AT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.out
    if fault.startswith("staged"):
        assert _debris(project.root) != []  # the kill did leave temp files
    _check_recovered(project, built_template)


@pytest.mark.parametrize("after", [0.6, 1.3, 2.1])
def test_a_kill_at_a_random_moment_keeps_the_invariants(project: Project, built_template: Path,
                                                        after: float):
    run = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project.root,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": "40"})
    time.sleep(after)
    run.send_signal(signal.SIGKILL)
    run.wait()
    _check_recovered(project, built_template)
