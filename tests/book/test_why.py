"""Why a task would run, in the user's terms: ``doit info`` (through the up-to-date rule
objects) and ``doit why`` (transitively), one test per kind of staleness."""

from __future__ import annotations

import re

from support.project import Project

SID = "ch001_sc001"


def _edit_brief(project: Project, index: int = 0) -> None:
    def change(outline):
        outline["chapters"][0]["scenes"][index]["brief"] += " The fog lifts."
    project.edit_json("workspace/books/example/outline.json", change)


def test_info_names_the_outline_field_not_a_function(built: Project):
    _edit_brief(built)
    proc = built.doit("info", f"plan:{SID}")
    assert proc.returncode == 1, proc.out
    assert f"outline.json: scene {SID} `brief` changed" in proc.stdout
    assert "<function" not in proc.out and "expected" not in proc.out
    # the scene's neighbour reads this scene's entry as "the scene before"
    nxt = built.doit("info", "plan:ch001_sc002")
    assert "outline.json: the scene before ch001_sc002 changed" in nxt.stdout


def test_info_of_an_up_to_date_task_says_so(built: Project):
    proc = built.doit("info", f"plan:{SID}")
    assert proc.returncode == 0, proc.out
    assert re.search(r"status\s*: up-to-date", proc.stdout)


def test_a_book_setting_is_named(built: Project):
    built.edit_json("workspace/books/example/book.json",
                    lambda b: b["style"].__setitem__("tone", "wry"))
    proc = built.doit("info", f"write:{SID}")
    assert "book.json `style` changed" in proc.stdout, proc.out
