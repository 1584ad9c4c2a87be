"""A sqlite file with a damaged page (issue 25, item 2): every one the project opens (a book's
build DB, an L7 session's, a scenario run's reviews, the build DBs the fleet merges) gives one
line naming the file, saying it is damaged and how to get it back (and what that costs), and
changes nothing. sqlite's errors are mapped by their error code in one place
(pipeline/core/sqlitefile.py); the test damages real files as a bad block would."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from support.damage import damage_sqlite
from support.l7 import OUT, copy_project
from support.project import Project, snapshot
from support.scenario import make_project as scenario_project

from pipeline.core import builddb, sqlitefile

BOOK_DB = "workspace/.scenemake/books/example.sqlite"


def _one_damage_line(proc, db_name: str) -> str:
    assert proc.returncode != 0, proc.out
    assert "Traceback" not in proc.out, proc.out
    lines = [line for line in proc.out.splitlines()
             if line.strip() and not line.startswith(".  ")]
    assert len(lines) == 1, proc.out
    line = lines[0]
    assert db_name in line and "is damaged" in line, line
    assert "move it away" in line and "response cache" in line, line  # how, and what it costs
    return line


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("list",), ("plan:ch001_sc001",), ("ledger", "ch001_sc001"),
                                  ("verify",), ("rerun-from", "write:ch001_sc002")])
def test_a_damaged_page_in_the_build_db_is_one_line_and_changes_nothing(built: Project, args):
    db = built.root / BOOK_DB
    (db.parent / "example.stamp.json").unlink()  # past the no-op's fast path, which reads no row
    damage_sqlite(db)
    damaged = db.read_bytes()
    drafts = snapshot(built.draft)

    _one_damage_line(built.doit(*args), "example.sqlite")

    assert db.read_bytes() == damaged
    assert snapshot(built.draft) == drafts


@pytest.mark.slow
def test_the_recovery_the_line_offers_works_and_pays_nothing(built: Project):
    db = built.root / BOOK_DB
    damage_sqlite(db)
    calls = len(built.calls())
    aside = built.root / "damaged"
    aside.mkdir()
    for path in db.parent.glob("example.sqlite*"):  # "move it away with its -wal and -shm"
        path.rename(aside / path.name)
    again = built.build()
    assert built.misses(since=calls) == [] and len(built.calls()) > calls
    assert "Traceback" not in again.out


@pytest.mark.slow
def test_a_damaged_l7_session_db_is_one_line(tmp_path: Path):
    l7 = copy_project(tmp_path / "l7")
    assert l7.cli().returncode == 0
    outputs = l7.snapshot(OUT)
    [db] = (l7.root / "workspace" / ".scenemake" / "l7").glob("*/build.sqlite")
    damage_sqlite(db)
    proc = l7.cli()
    assert proc.returncode == 2 and "Traceback" not in proc.out, proc.out
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("scenemake-l7: error:") and "build.sqlite" in line
    assert "is damaged" in line and "move it away" in line
    assert l7.snapshot(OUT) == outputs


@pytest.mark.slow
def test_a_damaged_scenario_review_db_is_one_line(tmp_path: Path):
    project = scenario_project(tmp_path / "sc")
    try:
        case = "workspace/scenarios/cases/tape_stock.json"
        first = project.cli("run-case", "--case", case)
        assert first.returncode == 0, first.out
        [db] = (project.root / "workspace" / ".scenemake" / "scenarios").glob("*.sqlite")
        damage_sqlite(db)
        proc = project.cli("run-case", "--case", case)
    finally:
        project.close()
    assert proc.returncode != 0 and "Traceback" not in proc.out, proc.out
    said = [line for line in proc.out.splitlines() if db.name in line]
    assert len(said) == 1 and "is damaged" in said[0] and "move it away" in said[0], proc.out


# -- in process: the error paths past the open check, and the fleet's merges ----------------
def _damaged_build_db(tmp_path: Path) -> Path:
    db = tmp_path / "b.sqlite"
    opened = builddb.SceneDB(str(db), None)
    for i in range(400):  # several pages of records
        opened.set(f"write:s{i:03d}", "_values_:", {"text": "x" * 200})
        opened.set(f"write:s{i:03d}", "deps:", [])
    opened.dump()
    damage_sqlite(db, "doit")
    return db


def test_damage_past_the_open_check_is_the_same_line(tmp_path: Path, monkeypatch):
    db = _damaged_build_db(tmp_path)
    # a DB too large for the check at open: its damage is met by the first query that reads it
    monkeypatch.setattr(sqlitefile, "QUICK_CHECK_MAX_BYTES", 0)
    opened = builddb.SceneDB(str(db), None)
    try:
        with pytest.raises(builddb.BuildDBError) as err:
            opened.task_ids()
    finally:
        opened._conn.close()
    assert err.value.kind == sqlitefile.DAMAGED
    assert "is damaged" in str(err.value) and "move it away" in str(err.value)


def test_a_record_that_is_not_a_json_object_is_the_same_line(tmp_path: Path):
    db = tmp_path / "b.sqlite"
    builddb.SceneDB(str(db), None).dump()
    with sqlite3.connect(db) as conn:  # valid JSON, but not the object doit writes
        conn.execute("insert into doit(task_id, task_data) values ('write:s1', '[1, 2]')")
    opened = builddb.SceneDB(str(db), None)
    try:
        with pytest.raises(builddb.BuildDBError) as err:
            opened.get("write:s1", "_values_:")
    finally:
        opened._conn.close()
    assert err.value.kind == sqlitefile.DAMAGED and "\n" not in str(err.value)
    assert "write:s1 is not a JSON object" in str(err.value)


def test_damage_is_found_at_open(tmp_path: Path):
    db = _damaged_build_db(tmp_path)
    with pytest.raises(builddb.BuildDBError) as err:
        builddb.SceneDB(str(db), None)
    assert err.value.kind == sqlitefile.DAMAGED and "\n" not in str(err.value)
    assert "quick_check" in str(err.value)


def test_the_fleet_never_merges_into_nor_reads_a_damaged_build_db(tmp_path: Path):
    from targets.fleet.sharedfs import db_rows, merge_records
    from targets.fleet.units import relocate_db

    db = _damaged_build_db(tmp_path)
    before = db.read_bytes()
    records = {"b.sqlite": {"doit": {"sql": "", "key": ["task_id"],
                                     "upsert": [["write:new", "{}"]], "delete": []}}}
    for attempt in (lambda: merge_records(tmp_path, records, ""),
                    lambda: db_rows(tmp_path, ("b.sqlite",)),
                    lambda: relocate_db(db, "/old", "/new")):
        with pytest.raises(builddb.BuildDBError) as err:
            attempt()
        assert "is damaged" in str(err.value) and "b.sqlite" in str(err.value)
    assert db.read_bytes() == before


def test_sqlite_errors_are_told_apart_by_their_code(tmp_path: Path):
    """Real errors from the sqlite library: damage, another file type, a lock, a read-only
    file and a missing folder each get their own advice, and only damage says to move it."""
    def error_of(fn) -> sqlite3.Error:
        with pytest.raises(sqlite3.Error) as err:
            fn()
        return err.value

    text = tmp_path / "text.sqlite"
    text.write_text("not a database, not a database, not a database")
    notadb = error_of(lambda: sqlite3.connect(text).execute("select 1 from sqlite_master"))

    good = tmp_path / "good.sqlite"
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    busy = error_of(lambda: sqlite3.connect(good, timeout=0).execute("select * from t"))
    holder.execute("commit")
    holder.close()
    readonly = error_of(lambda: sqlite3.connect(f"file:{good}?mode=ro", uri=True).execute(
        "insert into t values (1)"))
    cantopen = error_of(lambda: sqlite3.connect(tmp_path / "no" / "such.sqlite"))
    damaged = error_of(lambda: sqlite3.connect(_damaged_build_db(tmp_path)).execute(
        "select * from doit").fetchall())

    kinds = {name: sqlitefile.kind(exc) for name, exc in [
        ("notadb", notadb), ("busy", busy), ("readonly", readonly), ("cantopen", cantopen),
        ("damaged", damaged)]}
    assert kinds == {"notadb": "damaged", "busy": "busy", "readonly": "readonly",
                     "cantopen": "cantopen", "damaged": "damaged"}
    for exc in (busy, readonly, cantopen):
        line = str(builddb.db_failure(str(good), exc))
        assert "move it away" not in line and "\n" not in line
    assert "move it away" in str(builddb.db_failure(str(good), damaged))
