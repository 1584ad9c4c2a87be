"""Why a task would run, in the user's terms: ``doit info`` (through the up-to-date rule
objects) and ``doit why`` (transitively), one test per kind of staleness."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.project import Project

SID = "ch001_sc001"


def _edit_brief(project: Project, index: int = 0) -> None:
    def change(outline):
        outline["chapters"][0]["scenes"][index]["brief"] += " The fog lifts."
    project.edit_json("workspace/books/example/outline.json", change)


@pytest.mark.slow
def test_info_names_the_outline_field_not_a_function(built: Project):
    _edit_brief(built)
    proc = built.doit("info", f"plan:{SID}")
    assert proc.returncode == 1, proc.out
    assert f"outline.json: scene {SID} `brief` changed" in proc.stdout
    assert "<function" not in proc.out and "expected" not in proc.out
    # the scene's neighbour reads this scene's entry as "the scene before"
    nxt = built.doit("info", "plan:ch001_sc002")
    assert f"outline.json: scene {SID}, the one before ch001_sc002 changed" in nxt.stdout


def test_info_of_an_up_to_date_task_says_so(built: Project):
    proc = built.doit("info", f"plan:{SID}")
    assert proc.returncode == 0, proc.out
    assert re.search(r"status\s*: up-to-date", proc.stdout)


def test_a_book_setting_is_named(built: Project):
    built.edit_json("workspace/books/example/book.json",
                    lambda b: b["style"].__setitem__("tone", "wry"))
    proc = built.doit("info", f"write:{SID}")
    assert "book.json `style` changed" in proc.stdout, proc.out


# -- doit why: one test per kind of staleness -------------------------------------------
def _why(project: Project, *tasks: str) -> str:
    proc = project.doit("why", *tasks)
    assert proc.returncode == 0, proc.out
    assert "<function" not in proc.out and "object at 0x" not in proc.out
    return proc.stdout


def test_why_outline_field_changed_and_transitively(built: Project):
    _edit_brief(built)
    out = _why(built, f"plan:{SID}", "preflight:ch001_sc002")
    assert f"plan:{SID} would run:\n  - outline.json: scene {SID} `brief` changed" in out
    # the next scene's pre-state is the post-state this scene's commit will rewrite
    assert (f"pre-state may change: commit:{SID} will produce a new post_state.json "
            f"(because plan:{SID}: outline.json: scene {SID} `brief` changed)") in out


@pytest.mark.slow
def test_why_template_changed_names_old_and_new_hash(built: Project):
    override = built.book / "templates" / "write.j2"
    override.parent.mkdir(exist_ok=True)
    default = (Path(__file__).resolve().parents[2] / "pipeline" / "book" / "templates"
               / "write.j2").read_text()
    override.write_text(default)
    out = _why(built, f"write:{SID}")
    assert "template workspace/books/example/templates/write.j2 is used now" in out
    assert "allow_prompt_change" in out
    built.build("allow_prompt_change=1", "reason=own write template")
    override.write_text(default + "\nKeep it short.\n")
    out = _why(built, f"write:{SID}")
    m = re.search(r"template workspace/books/example/templates/write\.j2 changed "
                  r"\(([0-9a-f]{8}) -> ([0-9a-f]{8})\), needs allow_prompt_change", out)
    assert m and m.group(1) != m.group(2), out


def test_why_hand_edit(built: Project):
    prose = built.artifact(SID, "write/prose.md")
    prose.write_text(prose.read_text() + "\nAn extra line.\n")
    out = _why(built, f"write:{SID}", f"repair:{SID}")
    edited = f"{prose.relative_to(built.root).as_posix()} edited by hand (written by write:{SID})"
    assert out.count(edited) == 2, out
    assert "force_resume=1" in out and f"rerun-from write:{SID}" in out


def test_why_never_built(project: Project):
    out = _why(project, f"plan:{SID}", "manuscript")
    assert f"plan:{SID} would run:\n  - never built" in out
    assert "manuscript would run:\n  - never built" in out


@pytest.mark.slow
def test_why_forgotten_by_rerun_from(built: Project):
    # a hand edit elsewhere stops the build that rerun-from starts, after it forgot
    prose = built.artifact(SID, "write/prose.md")
    prose.write_text(prose.read_text() + "\nAn extra line.\n")
    proc = built.doit("rerun-from", "write:ch002_sc003")
    assert proc.returncode == 1 and "forgetting write:ch002_sc003" in proc.out, proc.out
    out = _why(built, "write:ch002_sc003", "lint:ch002_sc003")
    assert "write:ch002_sc003 would run:\n  - forgotten by rerun-from (attempt 1" in out
    assert "lint:ch002_sc003 would run:\n  - forgotten" in out


@pytest.mark.slow
def test_why_a_group_with_every_task_up_to_date_is_up_to_date(built: Project):
    assert _why(built, "write", "manuscript") == "write is up to date\nmanuscript is up to date\n"
    _edit_brief(built, index=2)
    out = _why(built, "write")
    assert out.startswith("write would run:\n  - write:ch001_sc003: ") and "ch001_sc001" not in out


@pytest.mark.parametrize("command", [
    ["why", "hello"], ["ledger", "ch001_sc001"], ["history", "write:ch001_sc001"],
    ["diff", "write:ch001_sc001"], ["restore", "write:ch001_sc001", "1"], ["gc"], ["report"],
    ["cost"], ["estimate"], ["rerun-from", "hello"], ["reset"]])
def test_outside_a_scenemake_project_each_command_is_one_line(tmp_path, command):
    (tmp_path / "dodo.py").write_text("def task_hello():\n    return {'actions': ['true']}\n")
    proc = subprocess.run([sys.executable, "-m", "doit", *command], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"doit {command[0]}: this is not a scenemake project" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # and doit's own commands are untouched there
    ran = subprocess.run([sys.executable, "-m", "doit"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0 and ".  hello" in ran.stdout and "scenemake" not in ran.stdout


def test_why_the_guard_runs_every_time(built: Project):
    assert _why(built, "guard") == ("guard would run:\n  - runs every time (a check before "
                                    "the build, not a build step)\n")


def test_a_long_list_of_causes_is_cut():
    from targets.book.why import SHOWN, Verdict, report

    out = report(Verdict("write", runs=True, upstream=[f"write:s{i}: never built"
                                                        for i in range(SHOWN + 5)]))
    assert out.count("\n  - ") == SHOWN and "... and 5 more" in out
