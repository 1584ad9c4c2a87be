"""Every command of README.md and docs/*.md runs as a user types it (issue 22): each page's
shell blocks, in the page's order, in a fresh copy of the project (the example workspace and
score specs, as a clone has them), with the exit code the page gives (0 unless it says
otherwise), and never a traceback. A new command in the docs is tested by being written
there; the few lines that cannot run here carry a mark in the page (tests/support/docs.py).
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
from support.docs import PAGES, Shell, covered, read_page, shims
from support.parts import require
from support.postgres import fresh_db, pg, pg_session  # noqa: F401 - fixtures, fleet pages
from support.project import REPO, make_project

MOST_SKIPS = 8  # the list of lines no test can run stays short


def _pages():
    for path in PAGES:
        page = read_page(path)
        marks = [pytest.mark.slow] + ([pytest.mark.fleet] if page.fleet else [])
        yield pytest.param(path, id=page.name, marks=marks)


def test_few_lines_are_marked_not_run_and_each_says_why():
    skipped = [c for p in PAGES for c in read_page(p).commands if c.run is None
               and not c.covered_by and c.why_not != "installed already"]
    assert len(skipped) <= MOST_SKIPS, [f"{c.page}:{c.line}" for c in skipped]
    assert all(c.why_not.strip() for c in skipped)
    every = [c for p in PAGES for c in read_page(p).commands]
    assert len([c for c in every if c.run]) >= 40  # the docs do show commands


def test_a_line_covered_by_another_test_is_run_there_as_written():
    lines = [c for p in PAGES for c in read_page(p).commands if c.covered_by]
    problems = [f"{c.page}:{c.line}: {why}" for c in lines if (why := covered(c))]
    assert problems == []


def _assistant_port_free(wait_s: float = 60) -> bool:
    """Port 8765 free, waiting a while for an assistant another page started to go."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 8765))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.5)


@pytest.mark.parametrize("path", _pages())
def test_every_command_of_the_page_runs_as_written(path: Path, tmp_path: Path, request):
    page = read_page(path)
    root = make_project(tmp_path / "proj")
    shutil.copytree(REPO / "score_specs", root / "score_specs")
    env = {}
    if page.fleet:
        env["SCENEMAKE_CACHE_URL"] = fresh_db(request.getfixturevalue("pg"))
    if any("scenemake-scenario" in (c.run or "") or "scenemake-assistant" in (c.run or "")
           for c in page.commands):
        # the docs' scenario commands use the reference assistant's default port
        require(_assistant_port_free(), "port 8765 (the reference assistant's default)",
                "something else listens there; stop it")
    shell = Shell(root, shims(tmp_path / "bin"), env)
    failures = []
    try:
        for command in page.commands:
            if command.run is None:
                continue
            ran = shell.run(command)
            where = f"{page.name}:{command.line}: {command.text}"
            if "Traceback" in ran.out:
                failures.append(f"{where}\n  a traceback:\n{ran.out[-3000:]}")
            elif ran.code != command.exit:
                failures.append(f"{where}\n  exit {ran.code}, the page says "
                                f"{command.exit}:\n{ran.out[-3000:]}")
            if failures:
                break  # later lines build on this one
    finally:
        shell.close()
    assert failures == [], "\n".join(failures)
