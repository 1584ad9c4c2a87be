"""The build DB's ``plan`` column (what the plan reads of each doit record) follows the
record through every way a record is written: doit's save, a relocation, a try's adoption;
a writer that changes the record alone (an older scenemake, sqlite3 by hand) empties it, and
a DB from before the column is given its rows when first opened."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from pipeline.core import builddb

RECORD = {"checker:": "Blake3Checker", "deps:": ["books/x/draft/s/plan/card.json"],
          "books/x/draft/s/plan/card.json": [1, 2, "h"],
          "_values_:": {"inputs_hash": "i", "template_set": {
              "phase": {"path": "books/x/templates/write.j2", "hash": "t"}}}}


def _rows(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as conn:
        return {t: (d, p) for t, d, p in conn.execute("select task_id, task_data, plan from doit")}


def _commit(db: builddb.SceneDB, task_id: str, record: dict) -> None:
    for key, value in record.items():
        if key != "deps:":
            db.set(task_id, key, value)
    db.set(task_id, "deps:", record["deps:"])  # the last key of a success commits it


def _follows(path: Path) -> None:
    for task_id, (data, plan) in _rows(path).items():
        assert plan == builddb.plan_of(data), task_id


def test_doit_saving_a_record_writes_its_plan_row(tmp_path):
    db = builddb.SceneDB(str(tmp_path / "b.sqlite"), None)
    _commit(db, "write:s", RECORD)
    db.dump()
    data, plan = _rows(tmp_path / "b.sqlite")["write:s"]
    assert plan is not None and json.loads(plan) == [
        "Blake3Checker", False, [["books/x/draft/s/plan/card.json", [1, 2, "h"]]], "i",
        {"phase": ["books/x/templates/write.j2", "t"]}]
    _follows(tmp_path / "b.sqlite")


def test_a_relocation_and_a_try_adopting_records_move_the_plan_rows_too(tmp_path):
    book = builddb.SceneDB(str(tmp_path / "book.sqlite"), None)
    _commit(book, "write:s", RECORD)
    assert book.relocate("books/x", "books/y") == 1
    book.dump()
    _follows(tmp_path / "book.sqlite")
    assert "books/y/draft" in _rows(tmp_path / "book.sqlite")["write:s"][1]

    area = builddb.SceneDB(str(tmp_path / "try.sqlite"), None)
    assert area.adopt(str(tmp_path / "book.sqlite"), ["write:s"], "books/y/draft",
                      "books/y/draft/tries/t") == ["write:s"]
    area.dump()
    _follows(tmp_path / "try.sqlite")
    assert "books/y/draft/tries/t/s/plan" in _rows(tmp_path / "try.sqlite")["write:s"][1]


def test_a_record_changed_by_another_writer_loses_its_plan_row(tmp_path):
    db = builddb.SceneDB(str(tmp_path / "b.sqlite"), None)
    _commit(db, "write:s", RECORD)
    db.dump()
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:  # as sqlite3 by hand
        conn.execute("update doit set task_data = replace(task_data, '\"i\"', '\"j\"')")
    data, plan = _rows(tmp_path / "b.sqlite")["write:s"]
    assert plan is None and '"j"' in data
    db = builddb.SceneDB(str(tmp_path / "b.sqlite"), None)
    records = db.snapshot(whole=False)  # the plan reads that record whole
    db.dump()
    assert records.plans == {} and json.loads(records.tasks["write:s"])["_values_:"][
        "inputs_hash"] == "j"


def test_a_db_from_before_the_column_gets_its_plan_rows_when_first_opened(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the tables as they were before the column
        builddb.m001_tables(conn)
        conn.execute("insert into doit values ('write:s', ?)", (json.dumps(RECORD),))
    assert builddb.read_records(path).tasks.keys() == {"write:s"}  # read only: no column
    db = builddb.SceneDB(str(path), None)
    records = db.snapshot(whole=False)
    db.dump()
    assert records.plans.keys() == {"write:s"} and records.tasks == {}
    _follows(path)


def test_a_record_not_shaped_as_doit_writes_one_has_no_plan_row():
    assert builddb.plan_of("[1, 2]") is None and builddb.plan_of("{not json") is None
    assert builddb.plan_of(json.dumps({"deps:": 3})) is None
