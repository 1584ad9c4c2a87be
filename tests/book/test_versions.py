"""Versions of a phase's artifacts: history, diff after rerun-from and after a prompt
change, restore with no call (then up to date, no hand edit seen), gc within the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.project import Project, executed

from pipeline.book.versions import KEEP, Versions, json_diff, word_diff

SID = "ch001_sc001"
REPO = Path(__file__).resolve().parents[2]


def _history(project: Project, task: str) -> list[str]:
    return project.build("history", task).stdout.splitlines()[1:]


@pytest.mark.slow
def test_diff_after_rerun_from(built: Project):
    assert "first build" in _history(built, f"write:{SID}")[0]
    built.build("rerun-from", f"write:{SID}")
    rows = _history(built, f"write:{SID}")
    assert len(rows) == 2 and rows[1].startswith("* v2") and "rerun-from (attempt 1" in rows[1]
    out = built.build("diff", f"write:{SID}").stdout
    assert out.startswith(f"write:{SID}: version 1 -> 2 (rerun-from (attempt 1")
    # the stand-in writes new prose on a rerun: most words change, so old and new side by side
    assert "\nprose:\n(rewritten: most words changed; old | new" in out
    assert "prompt:" not in out and "response:" not in out  # only with --all
    assert "response:" in built.build("diff", "--all", f"write:{SID}", "1", "2").stdout


@pytest.mark.slow
def test_diff_after_an_accepted_prompt_change(built: Project):
    override = built.book / "templates" / "repair.j2"
    override.parent.mkdir(exist_ok=True)
    override.write_text((REPO / "pipeline/book/templates/repair.j2").read_text()
                        + "\nKeep every sentence short.\n")
    built.build("allow_prompt_change=1", "reason=short sentences")
    rows = _history(built, f"repair:{SID}")
    assert len(rows) == 2 and "prompt change accepted: short sentences" in rows[1]
    out = built.build("diff", f"repair:{SID}", "1", "2").stdout
    assert "(prompt change accepted: short sentences)" in out.splitlines()[0]
    assert "prose:" in out


@pytest.mark.slow
def test_restore_makes_no_call_and_is_then_up_to_date(built: Project):
    prose = built.artifact(SID, "write/prose.md")
    first = prose.read_bytes()
    built.build("rerun-from", f"write:{SID}")
    assert prose.read_bytes() != first
    calls = len(built.calls())
    out = built.build("restore", f"write:{SID}", "1").stdout
    assert "version 1 restored" in out and "no LLM call" in out
    assert len(built.calls()) == calls and prose.read_bytes() == first
    assert built.build("why", f"write:{SID}").stdout == f"write:{SID} is up to date\n"
    proc = built.build()  # the guard sees no hand edit; what depends on it rebuilds on it
    assert f"write:{SID}" not in executed(proc) and f"repair:{SID}" in executed(proc)
    assert prose.read_bytes() == first
    assert "restored version 1" in _history(built, f"write:{SID}")[-1]


def test_restore_of_an_unknown_version_is_one_line(built: Project):
    proc = built.doit("restore", f"write:{SID}", "9")
    assert proc.returncode != 0 and "has no version 9" in proc.stderr
    assert "Traceback" not in proc.out


def test_old_versions_are_pruned_to_the_limit_and_gc_frees_them(tmp_path: Path):
    store = Versions(tmp_path / ".scenemake", "b")
    art = tmp_path / "prose.md"
    for i in range(KEEP + 5):
        art.write_text(f"version {i}\n")
        store.add(f"write:{SID}", {"prose": str(art)}, {"reason": f"r{i}"})
    kept = store.history(f"write:{SID}")
    assert len(kept) == KEEP and kept[0]["version"] == 1 and kept[-1]["version"] == KEEP + 5
    count, _ = store.gc()
    assert count == 5
    for entry in kept:
        assert store.content(f"write:{SID}", entry, "prose").startswith(b"version ")


def test_word_and_json_diffs():
    assert word_diff("the cold lamp", "the warm lamp") == "the [-cold-]{+warm+} lamp"
    assert json_diff({"a": 1, "b": [1, 2]}, {"a": 2, "b": [1], "c": "x"}) == [
        "~ a: 1 -> 2", "- b[1]: 2", '+ c: "x"']
    assert json.dumps(json_diff({}, {})) == "[]"


def test_a_rewritten_prose_is_shown_side_by_side_not_interleaved():
    from pipeline.book.versions import COLUMN, diff_files

    old = ("The ferry left the harbour at dawn. Mara watched the gulls.\n\n"
           "She counted the crates twice, because the manifest was wrong.")
    new = ("Night fell over the quiet station while the engineer slept.\n\n"
           "Nobody came; the radio hissed with static until morning.")
    lines = diff_files("prose", old.encode(), new.encode())
    assert lines[0] == "prose:" and lines[1].startswith("(rewritten: most words changed")
    assert not any("[-" in line or "{+" in line for line in lines)  # no word-by-word marks
    body = lines[4:]
    assert body[0].startswith("The ferry left") and "| Night fell over" in body[0]
    assert all(line[COLUMN:COLUMN + 2] == " |" for line in body)
    assert any(line.startswith("She counted") and "| Nobody came" in line for line in body)
    # a small edit stays a word diff
    small = diff_files("prose", old.encode(), old.replace("dawn", "noon").encode())
    assert small == ["prose:", old.replace("dawn.", "[-dawn.-]{+noon.+}")]
