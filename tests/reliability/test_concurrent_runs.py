"""Two runs on one workspace (issue 15, item 1): the second run of a book refuses in one line
naming the first by its PID, or waits for it (``wait=1``); runs of different books (or any
other process of the workspace) asking the same requests pay each of them once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest
from support.project import Project

pytestmark = pytest.mark.slow

SLOW = {"SCENEMAKE_OFFLINE_LATENCY_MS": "120"}  # each model call takes 120 ms


def _start(project: Project, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **SLOW})


def _wait_for_first_call(project: Project, proc: subprocess.Popen) -> None:
    deadline = time.time() + 60
    while not project.calls():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.05)


def _paid_twice(project: Project) -> dict[str, int]:
    paid = Counter(c["request_hash"] for c in project.misses())
    return {h: n for h, n in paid.items() if n > 1}


def test_a_second_run_refuses_naming_the_first_or_waits_for_it(project: Project):
    first = _start(project)
    _wait_for_first_call(project, first)

    second = project.doit(env=SLOW)
    assert second.returncode != 0
    assert "Traceback" not in second.out
    lines = [line for line in second.out.splitlines() if line.strip()]
    assert len(lines) == 1, second.out
    assert f"PID {first.pid}" in lines[0] and "wait=1" in lines[0]

    waiter = _start(project, "wait=1")
    out_first, _ = first.communicate(timeout=300)
    out_waiter, _ = waiter.communicate(timeout=300)
    assert first.returncode == 0, out_first
    assert waiter.returncode == 0, out_waiter
    assert "Traceback" not in out_first + out_waiter
    assert "waiting for the run of PID" in out_waiter
    assert _paid_twice(project) == {}
    assert len(project.misses()) == 30  # the example book's 30 distinct requests, once each


def test_runs_of_two_books_at_once_pay_each_request_once(project: Project):
    # A copy of the book asks the very same requests (the book's name is not in them).
    shutil.copytree(project.book, project.book.parent / "twin")
    runs = [_start(project, "book=example"), _start(project, "book=twin")]
    outs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    assert "Traceback" not in "".join(outs)
    assert {c["book"] for c in project.calls()} == {"example", "twin"}
    assert _paid_twice(project) == {}
    assert len(project.misses()) == 30
