"""Ordered, recorded migrations (pipeline/core/migrations.py) and the build DB's use of them:
an old DB (from before the record) is migrated, not rebuilt; each step runs once."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pipeline.core import builddb
from pipeline.core.migrations import Migrations

# The build DB's schema as it was created before migrations (create table if not exists).
OLD_SCHEMA = """
create table doit (task_id text not null primary key, task_data json);
create table sm_outputs (path text not null primary key, task_id text not null,
    known json not null, state json);
create table sm_events (id integer primary key autoincrement, task_id text not null,
    kind text not null, data json not null, ts text not null);
create table sm_failures (task_id text not null primary key, error text not null, data json,
    ts text not null);
create table sm_attempts (task_id text not null primary key, n integer not null);
create table sm_dirty (task_id text not null primary key);
create table sm_meta (key text not null primary key, n integer not null);
create table sm_settings (key text not null primary key, value text not null);
"""


def _list(log: list[str]) -> Migrations:
    steps = Migrations("my_migrations")

    @steps.migration
    def m001_things(conn):
        conn.execute("create table things (id integer primary key, name text)")
        log.append("m001")

    @steps.migration
    def m002_thing_size(conn):
        conn.execute("alter table things add column size integer")
        log.append("m002")

    return steps


def test_steps_run_in_order_once_and_are_recorded(tmp_path):
    log: list[str] = []
    conn = sqlite3.connect(tmp_path / "a.db")
    steps = _list(log)
    assert steps.migrate(conn) == ["m001_things", "m002_thing_size"]
    assert steps.migrate(conn) == []
    assert log == ["m001", "m002"]
    names = [r[0] for r in conn.execute("select name from my_migrations order by rowid")]
    assert names == ["m001_things", "m002_thing_size"]
    conn.execute("insert into things (name, size) values ('x', 3)")  # the schema is there


def test_a_new_step_runs_on_a_db_that_had_the_older_ones(tmp_path):
    log: list[str] = []
    conn = sqlite3.connect(tmp_path / "a.db")
    steps = _list(log)
    steps.steps.pop()  # the release before m002
    steps.migrate(conn)
    conn.execute("insert into things (name) values ('kept')")
    conn.commit()
    again = _list(log)
    assert again.pending(conn) == ["m002_thing_size"]
    assert again.migrate(conn) == ["m002_thing_size"]
    assert conn.execute("select name, size from things").fetchall() == [("kept", None)]


def test_a_failing_step_is_rolled_back_and_not_recorded(tmp_path):
    conn = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    steps = Migrations("my_migrations")

    @steps.migration
    def m001_half(conn):
        conn.execute("create table half (id integer)")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        steps.migrate(conn)
    assert steps.pending(conn) == ["m001_half"]
    assert conn.execute("select name from sqlite_master where name='half'").fetchone() is None


def test_a_name_registered_twice_is_kept_once():
    steps = Migrations("my_migrations")
    for _ in range(2):
        steps.migration(lambda conn: None, name="m001_same")
    assert [s.name for s in steps.steps] == ["m001_same"]
    with pytest.raises(ValueError):
        Migrations("bad; drop table x")


def test_two_connections_apply_a_step_once(tmp_path):
    """A second process opening the DB at the same time sees the record and skips the step."""
    log: list[str] = []
    first = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    second = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    steps = _list(log)
    steps.applied(second)   # the second one read "nothing applied" ...
    steps.migrate(first)    # ... then the first applied everything
    assert steps.migrate(second) == []  # re-checked inside its transaction: nothing twice
    assert log == ["m001", "m002"]


def test_a_build_db_from_before_migrations_keeps_its_records(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("insert into doit values ('write:s1', ?)",
                     (json.dumps({"deps:": ["a"], "_values_:": {"x": 1}}),))
        conn.execute("insert into sm_meta values ('generation', 7)")
    db = builddb.SceneDB(str(path), None)
    try:
        assert db.get("write:s1", "_values_:") == {"x": 1}
        assert db.generation() == 7
    finally:
        db._conn.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("select name from sm_migrations")}
    assert "m001_tables" in names


def test_a_new_build_db_is_created_by_the_migrations(tmp_path):
    path = tmp_path / "new.sqlite"
    db = builddb.SceneDB(str(path), None)
    db._conn.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        recorded = [r[0] for r in conn.execute("select name from sm_migrations order by rowid")]
    assert {"doit", "sm_outputs", "sm_events", "sm_failures", "sm_attempts", "sm_dirty",
            "sm_meta", "sm_settings", "sm_migrations"} <= tables
    assert recorded[0] == "m001_tables"
    assert recorded == [s.name for s in builddb.SCHEMA.steps + builddb.RECORDS.steps]


def test_a_records_migration_runs_once_per_db(tmp_path, monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(builddb, "RECORDS", Migrations("sm_migrations"))

    @builddb.migration("test.count_tasks")
    def _count(db):
        seen.append(",".join(db.task_ids()))

    for _ in range(2):
        builddb.SceneDB(str(tmp_path / "b.sqlite"), None)._conn.close()
    assert seen == [""]


def test_a_format_paramstyle_driver_gets_its_own_markers(tmp_path, monkeypatch):
    """The helper speaks plain DB-API: a driver with ``%s`` markers (psycopg's style) works,
    here a stand-in module translating them for sqlite."""
    import sys
    import types

    issued: list[str] = []
    fake = types.ModuleType("fakepg")
    fake.paramstyle = "format"

    class Cursor:
        def __init__(self, cur):
            self._cur = cur

        def execute(self, sql, params=()):
            issued.append(sql)
            self._cur.execute(sql.replace("%s", "?"), params)

        def fetchone(self):
            return self._cur.fetchone()

        def fetchall(self):
            return self._cur.fetchall()

    class Connection:
        def __init__(self, path):
            self._conn = sqlite3.connect(path)

        def cursor(self):
            return Cursor(self._conn.cursor())

        def commit(self):
            self._conn.commit()

        def rollback(self):
            self._conn.rollback()

    Connection.__module__ = "fakepg.connection"
    monkeypatch.setitem(sys.modules, "fakepg", fake)
    conn = Connection(tmp_path / "pg.db")
    steps = Migrations("my_migrations")
    steps.migration(lambda c: c.cursor().execute("create table t (x integer)"), name="m001_t")
    assert steps.migrate(conn) == ["m001_t"]
    assert steps.migrate(conn) == []
    assert any("values (%s, %s)" in sql for sql in issued)
    assert not any("?" in sql for sql in issued)


def test_refuse_newer_refuses_a_db_with_a_step_it_does_not_know(tmp_path):
    """A list made with refuse_newer=True (the shared cache's) will not use a database that a
    newer release migrated further; a plain list (the build DB's) does not look."""
    from pipeline.core.errors import UserError
    from pipeline.core.migrations import NewerDatabase

    conn = sqlite3.connect(tmp_path / "a.db")
    newer = _list([])
    newer.migration(lambda c: None, name="m003_next_release")
    newer.migrate(conn)
    older = Migrations("my_migrations", refuse_newer=True)
    older.steps = _list([]).steps
    with pytest.raises(NewerDatabase) as err:
        older.migrate(conn)
    assert isinstance(err.value, UserError)
    assert str(err.value) == ("the database was migrated by a newer scenemake "
                              "(m003_next_release) (upgrade scenemake on this machine)")
    assert _list([]).migrate(conn) == []  # without refuse_newer: nothing to do, no refusal
