"""The manuscript: every scene's final prose in outline order, rebuilt only when one changes."""

from __future__ import annotations

import json
import os

import pytest
from support.project import Project, executed

STAND_IN = "Text from the offline stand-in model: placeholder prose."


def _scenes(project: Project) -> list[tuple[str, str]]:
    outline = json.loads((project.book / "outline.json").read_text())
    return [(s["id"], s["title"]) for ch in outline["chapters"] for s in ch["scenes"]]


def _final_prose(project: Project, sid: str) -> str:
    return project.artifact(sid, "repair/prose.md").read_text().strip()


def test_every_scene_in_outline_order(built: Project):
    md = (built.draft / "manuscript.md").read_text()
    html = (built.draft / "manuscript.html").read_text()
    at = -1
    for sid, title in _scenes(built):
        prose = _final_prose(built, sid)
        here = md.index(f"### {title}\n\n{prose}\n")
        assert here > at, f"{sid} out of order"
        at = here
        assert f'<section class="scene" id="{sid}">' in html
    assert md.index("## Chapter 1: The Empty Tower") < md.index("## Chapter 2: Salvage")
    ids = [sid for sid, _ in _scenes(built)]
    assert sorted(ids, key=html.index) == ids
    # the offline model wrote it: both say so
    assert STAND_IN in md and STAND_IN in html
    assert "<script" not in html and "http" not in html.split("<body>")[1]


@pytest.mark.slow
def test_rebuilt_only_when_a_scene_prose_changes(built: Project):
    md, html = built.draft / "manuscript.md", built.draft / "manuscript.html"
    before = {p: p.stat().st_mtime_ns for p in (md, html)}
    calls = len(built.calls())
    # an unchanged prose file touched: the manuscript task may look, but writes nothing
    prose = built.artifact("ch001_sc002", "repair/prose.md")
    os.utime(prose, ns=(prose.stat().st_atime_ns, prose.stat().st_mtime_ns + 10**9))
    proc = built.build()
    assert {p: p.stat().st_mtime_ns for p in (md, html)} == before, proc.out
    assert len(built.calls()) == calls
    # the last scene's brief changes: only its phases run, and the manuscript follows
    built.edit_json("workspace/books/example/outline.json",
                    lambda o: o["chapters"][1]["scenes"][2].__setitem__(
                        "brief", o["chapters"][1]["scenes"][2]["brief"] + " The lantern dims."))
    proc = built.build()
    assert "manuscript" in executed(proc)
    assert {c["scene"] for c in built.misses(calls)} == {"ch002_sc003"}
    text = md.read_text()
    for sid, _ in _scenes(built):
        assert _final_prose(built, sid) in text
    assert md.stat().st_mtime_ns != before[md]
    # and then nothing: no call, no rewrite
    after = {p: p.stat().st_mtime_ns for p in (md, html)}
    calls = len(built.calls())
    proc = built.build()
    assert executed(proc) == ["guard"], proc.out
    assert {p: p.stat().st_mtime_ns for p in (md, html)} == after
    assert len(built.calls()) == calls


@pytest.mark.slow
def test_doit_manuscript_builds_the_book(project: Project):
    proc = project.build("manuscript")
    assert "manuscript" in executed(proc)
    assert (project.draft / "manuscript.md").exists()
    calls = len(project.calls())
    again = project.build("manuscript")
    assert "manuscript" not in executed(again)
    assert all(c["cache"] != "miss" for c in project.calls()[calls:])


@pytest.mark.slow
def test_a_hand_edited_manuscript_is_kept_beside_the_new_one(built: Project):
    """The manuscript is a view of the prose: an edit of it never stops the build (on any
    path, issue #23) and is never lost: the next manuscript is written beside it."""
    md = built.draft / "manuscript.md"
    md.write_text(md.read_text() + "\nMy own ending.\n")
    built.edit_json("workspace/books/example/outline.json",
                    lambda o: o["chapters"][0].__setitem__("title", "The Dark Tower"))
    proc = built.build()
    assert "manuscript.md was edited by hand: kept as" in proc.out, proc.out
    kept = list(built.draft.glob("manuscript.edited-*.md"))
    assert len(kept) == 1 and "My own ending." in kept[0].read_text(), proc.out
    assert "## Chapter 1: The Dark Tower" in md.read_text()
    assert "My own ending." not in md.read_text()
    assert "Dark Tower" in (built.draft / "manuscript.html").read_text()
