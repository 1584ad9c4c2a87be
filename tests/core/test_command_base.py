"""The one command base (targets/command.py) as a user meets it (issue 22, items 3, 4 and 8):
options after the arguments, an unknown option named as one, an unknown task with the
close matches, a closed pipe that ends a command quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support.project import Project

SID = "ch001_sc001"


def _one_error_line(proc) -> str:
    assert "Traceback" not in proc.out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_options_go_after_the_arguments(built: Project):
    proc = built.doit("ledger", SID, "--json")
    assert proc.returncode == 0, proc.out
    assert json.loads(proc.stdout)["scene_id"] == SID

    before = built.db_tasks()
    proc = built.doit("rerun-from", f"write:{SID}", "--dry-run")
    assert proc.returncode == 0, proc.out
    assert f"would forget write:{SID}" in proc.stdout
    assert proc.stdout.rstrip().endswith("task(s); nothing changed")
    assert built.db_tasks() == before  # nothing forgotten

    built.build("rerun-from", f"write:{SID}")
    proc = built.doit("diff", f"write:{SID}", "1", "2", "--all")
    assert proc.returncode == 0, proc.out
    assert proc.stdout.startswith(f"write:{SID}: version 1 -> 2")
    assert "response:" in proc.stdout  # --all was read as the option it is


def test_double_dash_ends_the_options(built: Project):
    proc = built.doit("ledger", "--", "--json")
    assert proc.returncode == 3
    assert "--json" in _one_error_line(proc) and "unknown option" not in proc.stderr


@pytest.mark.parametrize("args, named", [
    (("ledger", SID, "--bogus"), "doit ledger: unknown option --bogus"),
    (("diff", f"write:{SID}", "--colour"), "doit diff: unknown option --colour"),
    (("list", "-z"), "doit list: unknown option -z"),
    (("--bogus",), "doit: unknown option --bogus"),
    (("fleet", "--local"), "doit fleet: option --local needs a value"),
    (("fleet", "--local", "two", "book:example"), "doit fleet: option --local needs a number"),
])
def test_a_bad_option_is_named_in_one_line(built: Project, args, named):
    proc = built.doit(*args)
    assert proc.returncode == 3
    assert _one_error_line(proc).startswith(f"ERROR: {named}")


def test_help_after_a_command(built: Project):
    proc = built.doit("ledger", "--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "doit ledger SCENE [--json]" in proc.stdout and "--json" in proc.stdout
    proc = built.doit("fleet", "-h")
    assert proc.returncode == 0 and "--scheduler" in proc.stdout


def test_an_unknown_task_names_the_close_matches(built: Project):
    proc = built.doit(f"write:{SID[:-1]}")
    line = _one_error_line(proc)
    assert proc.returncode == 3
    assert f"no task 'write:{SID[:-1]}'; did you mean write:ch001_sc00" in line

    line = _one_error_line(built.doit("write:nonexistent"))
    assert "no task 'write:nonexistent'; write has write:ch001_sc001, write:ch001_sc002" in line

    line = _one_error_line(built.doit("legder", SID))
    assert "'legder' is neither a command nor a task; did you mean ledger?" in line

    line = _one_error_line(built.doit("why", f"writ:{SID}"))
    assert f"doit why: no task 'writ:{SID}'; did you mean write:{SID}" in line


def test_the_help_names_doit_not_dash_m(built: Project):
    out = built.build("help").stdout
    assert "  doit ledger" in out and "-m " not in out


def test_dumpdb_on_a_scenemake_project_is_one_line(built: Project):
    proc = built.doit("dumpdb")
    assert proc.returncode == 3
    assert "is not a dbm file" in _one_error_line(proc)


def _piped_to_head(project: Project, *args: str) -> tuple[bytes, str, int]:
    """``doit ARGS | head -1``: one line read, then the reader goes away."""
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    return first, err, proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("args", [("history", f"write:{SID}"), ("diff", f"write:{SID}"),
                                  ("ledger", SID), ("why", f"write:{SID}"), ("cost",)])
def test_a_closed_pipe_ends_a_book_command_quietly(built: Project, args):
    built.build("rerun-from", f"write:{SID}")  # two versions: history and diff say more
    first, err, code = _piped_to_head(built, *args)
    assert first
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert code in (0, 141)


@pytest.mark.slow
def test_a_build_into_a_closed_pipe_finishes_quietly(project: Project):
    first, err, code = _piped_to_head(project)
    assert first.startswith(b".  ")
    assert err == "" and code == 0
    # the build went on to its end: the next run has nothing to do
    proc = project.build()
    assert "nothing changed" in proc.stdout.splitlines()[-1]
    assert project.misses() and len(project.misses()) == len(project.calls())
