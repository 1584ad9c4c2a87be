"""The pieces of a try, in-process (quick): its name, its variant folder, the rule an
accepted try's templates pass, and the relocation of a book's records into a try."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.book import tries
from pipeline.book.rules import (
    PolicyError,
    TemplateChange,
    prompt_update_reason,
    require_prompt_change_allowed,
)
from pipeline.book.runvars import RunVars
from pipeline.core import builddb
from pipeline.core.errors import UserError


@pytest.mark.parametrize("name", ["terse", "write-v2", "A_1"])
def test_a_try_name_is_a_folder_name(name: str):
    assert tries.check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "compare.html", "-x", "x y"])
def test_a_try_name_that_is_no_folder_name_is_refused(name: str):
    with pytest.raises(UserError, match="is not a try name"):
        tries.check_name(name)


def test_a_variant_folder_holds_templates_of_the_book(tmp_path: Path):
    (tmp_path / "write.j2").write_text("w")
    (tmp_path / "notes.txt").write_text("not a template")
    assert tries.read_variants(str(tmp_path)) == {"write": tmp_path / "write.j2"}
    (tmp_path / "story.j2").write_text("x")
    with pytest.raises(UserError, match="story.j2 is not a template of the book"):
        tries.read_variants(str(tmp_path))
    with pytest.raises(UserError, match="no such folder"):
        tries.read_variants(str(tmp_path / "nowhere"))


def _change(path: str, new: str) -> TemplateChange:
    return TemplateChange(path, "old", new)


def test_an_accepted_template_passes_without_allow_prompt_change():
    rv = RunVars(accepted=frozenset({("t/write.j2", "h2")}), accepted_reason="shorter")
    require_prompt_change_allowed([_change("t/write.j2", "h2")], rv)  # no error
    assert prompt_update_reason([_change("t/write.j2", "h2")], rv) == "shorter"
    # another content of the same file is a change like any other
    with pytest.raises(PolicyError, match="prompt template"):
        require_prompt_change_allowed([_change("t/write.j2", "h3")], rv)
    with pytest.raises(PolicyError, match=r"t/repair.j2: old -> h9"):  # only the other named
        require_prompt_change_allowed([_change("t/write.j2", "h2"),
                                       _change("t/repair.j2", "h9")], rv)
    both = RunVars(allow_prompt_change=True, reason="mine", accepted=rv.accepted,
                   accepted_reason="shorter")
    assert prompt_update_reason([_change("t/write.j2", "h2"), _change("t/repair.j2", "h9")],
                                both) == "mine"


def test_the_acceptance_a_build_db_keeps_is_read_back_or_ignored():
    raw = json.dumps({"try": "terse", "reason": "shorter", "at": "now",
                      "templates": [["t/write.j2", "h2"]]})
    assert tries.accepted_vars(raw) == {"accepted": frozenset({("t/write.j2", "h2")}),
                                        "accepted_reason": "shorter"}
    assert tries.accepted_vars("[]") == {} and tries.accepted_vars(None) == {}


def test_moving_a_folder_moves_every_record_of_it(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "b.sqlite")
    builddb.m001_tables(conn)
    old, new = "books/x/draft/scenes", "books/x/draft/tries/t/scenes"
    conn.execute("insert into doit values (?, ?)",
                 ("write:s", json.dumps({f"{old}/s/plan/card.json": [1, 2, "h"],
                                         "deps:": [f"{old}/s/plan/card.json", "state.json"]})))
    conn.execute("insert into sm_outputs values (?, ?, ?, ?)",
                 (f"{old}/s/write/prose.md", "write:s", '["h"]', "[1, 2, \"h\"]"))
    conn.execute("insert into sm_outputs values (?, ?, ?, ?)",
                 ("books/x/draft/scenes_other/p.md", "other", '["h"]', None))
    conn.execute("insert into sm_events(task_id, kind, data, ts) values (?,?,?,?)",
                 ("write:s", "manual_edit", json.dumps({"path": f"{old}/s/write/prose.md"}),
                  "now"))
    assert builddb.move_paths(conn, old, new) == ["write:s"]
    record = json.loads(conn.execute("select task_data from doit").fetchone()[0])
    assert record["deps:"] == [f"{new}/s/plan/card.json", "state.json"]
    assert sorted(r[0] for r in conn.execute("select path from sm_outputs")) == \
        ["books/x/draft/scenes_other/p.md", f"{new}/s/write/prose.md"]
    assert json.loads(conn.execute("select data from sm_events").fetchone()[0]) == \
        {"path": f"{new}/s/write/prose.md"}
