"""The one build DB: sqlite records of every task, committed as each task succeeds.

doit's own backends write only when a run ends, so ``kill -9`` forgets every task
that finished in that run. Here the row of a task is committed when doit saves its
``deps:`` entry (the last key ``save_success`` writes), in WAL mode, so a killed run
keeps every finished task. Beside doit's own ``doit`` table the same file holds
scenemake's records: what each task wrote (for manual-edit detection), accepted
overrides (events), the last failure of a task, rerun attempts, and settings such as the
folder scenemake's own files were recorded from.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import sqlitefile
from pipeline.core.clock import now_iso
from pipeline.core.migrations import Migrations

# A task's ``result:`` that is all inside its ``_values_:``: stored as its keys.
_IN_VALUES = "$keys_in_values"
# Tasks whose records say nothing about the book's state: they do not move the generation.
NO_GENERATION = {"guard", "_stamp"}
_current: SceneDB | None = None

# The build DB's tables, as ordered migrations recorded in ``sm_migrations``
# (pipeline/core/migrations.py). A DB from before the record has every step pending; the
# first one accepts the tables such a DB already has. A later change of a table is a new
# step at the end of SCHEMA, never an edit of one below.
SCHEMA = Migrations("sm_migrations")
# Migrations of the records themselves (a family's recorded paths ...), applied to the
# open SceneDB once its rows are read; they manage their own transactions (idempotent).
RECORDS = Migrations("sm_migrations")


@SCHEMA.migration
def m001_tables(conn: sqlite3.Connection) -> None:
    """doit's table and scenemake's records (what every DB before migrations had)."""
    for statement in (
        "create table if not exists doit (task_id text not null primary key, task_data json)",
        "create table if not exists sm_outputs (path text not null primary key, "
        "task_id text not null, known json not null, state json)",
        "create table if not exists sm_events (id integer primary key autoincrement, "
        "task_id text not null, kind text not null, data json not null, ts text not null)",
        "create table if not exists sm_failures (task_id text not null primary key, "
        "error text not null, data json, ts text not null)",
        "create table if not exists sm_attempts (task_id text not null primary key, "
        "n integer not null)",
        "create table if not exists sm_dirty (task_id text not null primary key)",
        "create table if not exists sm_meta (key text not null primary key, n integer not null)",
        "create table if not exists sm_settings (key text not null primary key, "
        "value text not null)",
    ):
        conn.execute(statement)


@SCHEMA.migration
def m002_plan_column(conn: sqlite3.Connection) -> None:
    """Beside each doit record, what the plan reads of it (``plan_row``), so deciding what is
    up to date decodes a fifth of the bytes; the records there are given theirs now."""
    columns = {row[1] for row in conn.execute("pragma table_info(doit)")}
    if "plan" not in columns:
        conn.execute("alter table doit add column plan json")
    rows = conn.execute("select task_id, task_data from doit where plan is null").fetchall()
    conn.executemany("update doit set plan = ? where task_id = ?",
                     [(plan_of(data), task_id) for task_id, data in rows])
    # A record changed by anything that does not write its plan row too (an older
    # scenemake, a hand-run sqlite3) loses the row: the plan then reads the record whole.
    conn.execute("create trigger if not exists doit_plan_follows after update of task_data "
                 "on doit for each row when new.plan is old.plan begin "
                 "update doit set plan = null where task_id = new.task_id; end")


def plan_row(data: dict) -> str | None:
    """What the plan (targets/book/planner.py) reads of a doit record, compactly: the
    checker, whether it is ignored, each file dependency with its saved state, and of the
    values the inputs rule's hash and the templates rendered (role -> [path, hash]).
    None for a record not shaped as doit writes one (the plan then reads it whole)."""
    try:
        values = data.get("_values_:") or {}
        if not isinstance(values, dict):
            values = {}
        templates = values.get("template_set")
        return json.dumps([
            data.get("checker:"), "ignore:" in data,
            [[dep, data.get(dep)] for dep in data.get("deps:") or ()],
            values.get("inputs_hash"),
            {role: [e.get("path"), e.get("hash")] for role, e in templates.items()
             if isinstance(e, dict)} if isinstance(templates, dict) else None],
            separators=(",", ":"))
    except (TypeError, ValueError, AttributeError):
        return None


def plan_of(raw: str) -> str | None:
    """``plan_row`` of a stored record (None: not a record the plan can read)."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return plan_row(data) if isinstance(data, dict) else None


def migration(name: str) -> Callable[[Callable[[SceneDB], None]], Callable[[SceneDB], None]]:
    """Register ``fn(db)`` as the next migration of the records of every build DB opened
    from now on (applied once per DB, in the order registered; see RECORDS)."""
    return RECORDS.migration(name=name, atomic=False)


class BuildDBError(sqlitefile.SqliteFileError):
    """The build DB cannot be used (damaged, locked by another run, disk full); ``kind``
    says which (pipeline/core/sqlitefile.py)."""


# What a damaged build DB costs to get back, said in its one line.
RECOVER = ("move it away with its -wal and -shm files (mv DB* elsewhere) and run again: "
           "every task runs again, its LLM answers served from the response cache (none is "
           "paid twice), but a task rerun afresh (rerun-from, a new L7 generation) gets its "
           "first answer back (a book's doit history keeps the others)")


def db_failure(name: str, exc: BaseException, conn: sqlite3.Connection | None = None,
               error: type[BuildDBError] = BuildDBError) -> BuildDBError:
    """The one line for a sqlite error ``exc`` of the build DB ``name``: damaged (and how to
    recover), busy, full, read-only ... by its error code (pipeline/core/sqlitefile.py), as
    an ``error``. Every reader and writer of a build DB raises this."""
    return sqlitefile.failure(name, exc, what="the build DB", recover=RECOVER, conn=conn,
                              error=error)  # type: ignore[return-value]


def check_file(name: str | os.PathLike) -> None:
    """Raise the one-line :class:`BuildDBError` if the build DB file ``name`` is damaged
    (``quick_check`` when it is small, as at every open): for a runner that reports
    failures itself instead of through doit's ``ERROR:`` line."""
    sqlitefile.check_small(name, what="the build DB", recover=RECOVER, error=BuildDBError)


def current() -> SceneDB:
    """The backend doit opened for this run (actions and checks reach it here)."""
    if _current is None:
        raise RuntimeError("the scenemake build DB is not open (is DOIT_CONFIG['backend'] set?)")
    return _current


def _sigterm_as_interrupt(signum, frame):  # pragma: no cover - exercised by a subprocess test
    raise KeyboardInterrupt("SIGTERM")


def move_paths(conn: sqlite3.Connection, old: str, new: str) -> list[str]:
    """The one relocation of a build DB's records (a book's after scenemake moved, a fleet
    unit's built in another folder, a try's copy of the book's): every path recorded under
    folder ``old`` - a file state's key, the ``deps:`` list, any path among the values, an
    artifact's row and an accepted edit's - now starts with ``new``. Returns the tasks whose
    doit record changed (the caller commits)."""
    # a path begins a JSON string: '"' + the folder as JSON escapes it
    old_json = '"' + json.dumps(old.rstrip("/") + "/")[1:-1]
    new_json = '"' + json.dumps(new.rstrip("/") + "/")[1:-1]
    rows = conn.execute("select task_id, task_data from doit where instr(task_data, ?)",
                        (old_json,)).fetchall()
    planned = "plan" in {row[1] for row in conn.execute("pragma table_info(doit)")}
    for task_id, data in rows:
        moved = data.replace(old_json, new_json)
        if planned:  # the plan row names the same paths: made again from the record
            conn.execute("update doit set task_data = ?, plan = ? where task_id = ?",
                         (moved, plan_of(moved), task_id))
        else:
            conn.execute("update doit set task_data = ? where task_id = ?", (moved, task_id))
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    if "sm_outputs" in tables:  # what each artifact's task wrote, keyed by its path
        prefix = old.rstrip("/") + "/"
        moved = conn.execute("select path from sm_outputs where substr(path, 1, ?) = ?",
                             (len(prefix), prefix)).fetchall()
        for (path,) in moved:
            conn.execute("update sm_outputs set path = ? where path = ?",
                         (new.rstrip("/") + "/" + path[len(prefix):], path))
    if "sm_events" in tables:  # an accepted hand edit names its file
        conn.execute("update sm_events set data = replace(data, ?, ?) where instr(data, ?)",
                     (old_json, new_json, old_json))
    return [task_id for task_id, _ in rows]


def _open_read_only(path: str) -> sqlite3.Connection:
    """A connection that can only read the build DB at ``path`` (it must exist)."""
    from urllib.parse import quote

    if not os.path.isfile(path):
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True,
                           timeout=30, check_same_thread=False)


def _read_records(conn: sqlite3.Connection, whole: bool = True) -> Records:
    conn.execute("begin")
    try:
        if whole:  # a DB of an earlier version, read only, may have no plan column
            tasks, plans = dict(conn.execute("select task_id, task_data from doit")), {}
        else:  # a record is read whole only where it has no plan row
            rows = conn.execute("select task_id, plan, case when plan is null then task_data "
                                "end from doit").fetchall()
            tasks = {task_id: data for task_id, _plan, data in rows if data is not None}
            plans = {task_id: plan for task_id, plan, _data in rows if plan is not None}
        outputs = {path: (task_id, known, state) for path, task_id, known, state in
                   conn.execute("select path, task_id, known, state from sm_outputs")}
        row = conn.execute("select n from sm_meta where key='generation'").fetchone()
        failed = frozenset(r[0] for r in conn.execute("select task_id from sm_failures"))
        dirty = frozenset(r[0] for r in conn.execute("select task_id from sm_dirty"))
        attempts = dict(conn.execute("select task_id, n from sm_attempts"))
    finally:
        conn.execute("commit")
    return Records(tasks, outputs, row[0] if row else 0, failed, dirty, attempts, plans)


def read_records(path: str | os.PathLike) -> Records | None:
    """The records of the build DB at ``path`` as one transaction sees them, read without
    its run lock and without changing it (None when there is no such DB yet). A BuildDBError
    when it cannot be read."""
    if not os.path.isfile(path):
        return None
    try:
        conn = _open_read_only(str(path))
        conn.isolation_level = None
        try:
            return _read_records(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BuildDBError(f"{path}: the build DB cannot be read ({exc})") from exc


def task_values(records: Records, task_id: str) -> dict:
    """The values a task returned when it last succeeded, from a snapshot ({} if none)."""
    raw = records.tasks.get(task_id)
    try:
        values = json.loads(raw).get("_values_:") if raw else None
    except (ValueError, AttributeError):
        return {}
    return values if isinstance(values, dict) else {}


@dataclass(frozen=True)
class Records:
    """A build DB's records as one transaction saw them, for deciding without doit: every
    task's stored record (undecoded JSON), each recorded artifact's row, the generation,
    and the tasks that failed, wait for their views, or were asked afresh (attempts)."""

    tasks: dict[str, str]
    outputs: dict[str, tuple[str, str, str | None]]  # path -> (task_id, known, state)
    generation: int
    failed: frozenset[str]
    dirty: frozenset[str]
    attempts: dict[str, int]
    plans: dict[str, str] = field(default_factory=dict)  # task_id -> its ``plan_row``


class SceneDB:
    """The build DB: doit's per-task records (this class is the storage of the doit backend
    ``targets.backend.SceneDB``) and scenemake's own records; sqlite, WAL, one commit per
    finished task."""

    # What its failures raise (doit's backend raises one doit reports in one line).
    Error: type[BuildDBError] = BuildDBError

    def __init__(self, name: str, codec, *, module_name=None):
        global _current
        self.name = name
        self.codec = codec
        self._lock = threading.RLock()
        conn = None
        try:
            self._conn = conn = sqlite3.connect(name, check_same_thread=False,
                                                isolation_level=None, timeout=30)
            self._conn.execute("pragma journal_mode=wal")
            self._conn.execute("pragma synchronous=normal")
            # a damaged page is found here, in one line, not by whichever query meets it
            sqlitefile.check_small(name, self._conn, what="the build DB", recover=RECOVER,
                                   error=self.Error)
            SCHEMA.migrate(self._conn)
        except (sqlite3.Error, BuildDBError) as exc:
            error = exc if isinstance(exc, BuildDBError) else self._failure(exc, conn)
            if conn is not None:
                conn.close()
            raise error from exc
        # Read on first use (a fast no-op needs none: 8000 rows are 40 MB at 1000 scenes),
        # decoded lazily (a no-op run touches every row, but `doit list` does not).
        self._raw_rows: dict[str, str] | None = None
        self._single_reads = 0
        # Small tables, mirrored in memory: the ledger asks them for every phase of a
        # scene after every task, and almost always the answer is "none".
        self._failed = {r[0] for r in self._conn.execute("select task_id from sm_failures")}
        self._evented = {r[0] for r in self._conn.execute("select task_id from sm_events")}
        self._attempts = dict(self._conn.execute("select task_id, n from sm_attempts"))
        self._cache: dict[str, dict] = {}
        self._dirty: set[str] = set()
        self._views: queue.SimpleQueue | None = None
        self._views_thread: threading.Thread | None = None
        self._listeners: list[Callable[[str, str], None]] = []
        _current = self
        if threading.current_thread() is threading.main_thread():
            # SIGTERM is handled like Ctrl-C: doit then finishes and closes the DB cleanly.
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        try:
            RECORDS.migrate(self._conn, self)
        except sqlite3.Error as exc:
            error = self._failure(exc)
            self._conn.close()
            raise error from exc

    def _failure(self, exc: BaseException,
                 conn: sqlite3.Connection | None = None) -> BuildDBError:
        """The one line for a sqlite error of this DB (see :func:`db_failure`)."""
        return db_failure(self.name, exc, conn or getattr(self, "_conn", None), self.Error)

    @property
    def _raw(self) -> dict[str, str]:
        """Every task's stored record, undecoded, as read on first use."""
        if self._raw_rows is None:
            try:
                rows = self._conn.execute("select task_id, task_data from doit").fetchall()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
            self._raw_rows = dict(rows)
        return self._raw_rows

    def _row(self, task_id: str) -> str | None:
        """One task's stored record: a query of its own for the first few hundred (a no-op
        asks for one or two, a run of the scenes a small change reaches for a few dozen),
        all rows at once after that (a run that checks every task asks for all)."""
        if self._raw_rows is None and self._single_reads < 256:
            self._single_reads += 1
            try:
                row = self._conn.execute("select task_data from doit where task_id=?",
                                         (task_id,)).fetchone()
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc
            return row[0] if row else None
        return self._raw.get(task_id)

    # -- doit backend interface -------------------------------------------------
    def _data(self, task_id: str) -> dict | None:
        data = self._cache.get(task_id)
        if data is None:
            raw = self._row(task_id)
            if raw is None:
                return None
            try:
                data = json.loads(raw)
            except ValueError:  # a page whose bytes changed under a sound b-tree
                raise self._failure(sqlitefile.corrupt(
                    f"the record of {task_id} is not valid JSON")) from None
            if not isinstance(data, dict):  # doit writes an object: not its record
                raise self._failure(sqlitefile.corrupt(
                    f"the record of {task_id} is not a JSON object"))
            self._cache[task_id] = data
        return data

    def get(self, task_id: str, dependency: str) -> Any:
        """Value saved for ``dependency`` of ``task_id``, or None."""
        with self._lock:
            data = self._data(task_id)
            if data is None:
                return None
            value = data.get(dependency)
            if dependency == "result:" and isinstance(value, dict) and _IN_VALUES in value:
                values = data.get("_values_:") or {}
                return {key: values.get(key) for key in value[_IN_VALUES]}
            return value

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        """Store a value; ``deps:`` is the last key of a success, so it commits the task."""
        with self._lock:
            data = self._data(task_id)
            if data is None:
                data = self._cache[task_id] = {}
            if dependency == "ignore:":
                self._bump()
            values = data.get("_values_:")
            if (dependency == "result:" and isinstance(value, dict)
                    and isinstance(values, dict)
                    and all(key in values and values[key] == v for key, v in value.items())):
                # doit saves a dict result twice: as ``result:`` and within ``_values_:``
                # (with the up-to-date rules' values): keep only its keys (2 of 5 kB a row)
                value = {_IN_VALUES: sorted(value)}
            data[dependency] = value
            self._dirty.add(task_id)
            if dependency != "deps:":
                return
            self._write(task_id, success=True)
        self._notify(task_id, "saved")

    def in_(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._cache or self._row(task_id) is not None

    def remove(self, task_id: str) -> None:
        """Forget a task (doit does this on failure and on ``forget``)."""
        with self._lock:
            self._cache.pop(task_id, None)
            if self._raw_rows is not None:
                self._raw_rows.pop(task_id, None)
            self._dirty.discard(task_id)
            with self._conn:
                self._conn.execute("begin")
                self._conn.execute("delete from doit where task_id=?", (task_id,))
                self._conn.execute("insert or ignore into sm_dirty values (?)", (task_id,))
                self._bump()
        self._notify(task_id, "removed")

    def remove_all(self) -> None:
        with self._lock:
            self._bump()
            self._conn.execute("delete from doit")
            self._cache.clear()
            self._raw_rows = {}
            self._dirty.clear()

    def dump(self) -> None:
        """Flush what is left (e.g. ``ignore:`` marks), finish the views, and close."""
        global _current
        self.flush_views()
        with self._lock:
            for task_id in list(self._dirty):
                self._write(task_id)
            self._conn.close()
            if _current is self:
                _current = None

    def _write(self, task_id: str, success: bool = False) -> None:
        data = self._cache[task_id]
        raw = json.dumps(data)
        if (raw == self._row(task_id) and not (success and task_id in self._failed)):
            # the same record again (a phase group, a task whose action only checks): the
            # book did not change, so the generation stays and the no-op stamp stands
            self._dirty.discard(task_id)
            return
        # The record, its artifacts' states and its "views are stale" mark commit together:
        # a kill before the listeners ran (the ledger export) is repaired by the next run
        # (``stale_views``).
        with self._conn:
            self._conn.execute("begin")
            self._conn.execute("insert or replace into doit(task_id, task_data, plan) "
                               "values (?, ?, ?)", (task_id, raw, plan_row(data)))
            if task_id not in NO_GENERATION:
                self._conn.execute("insert or ignore into sm_dirty values (?)", (task_id,))
                self._bump()
            states = (data.get("_values_:") or {}).get("artifact_states")
            if success and states:
                # The task is committed: its artifacts' content is now the only known one.
                self._settle(task_id, states)
            if success and task_id in self._failed:
                self._failed.discard(task_id)
                self._conn.execute("delete from sm_failures where task_id=?", (task_id,))
        if self._raw_rows is not None:  # else the row is read with the others when needed
            self._raw_rows[task_id] = raw
        self._dirty.discard(task_id)

    def _bump(self) -> None:
        self._conn.execute("insert into sm_meta values ('generation', 1) "
                           "on conflict(key) do update set n = n + 1")

    def generation(self) -> int:
        """Moves with every task commit and forget (the fast path's check of the DB)."""
        with self._lock:
            row = self._conn.execute(
                "select n from sm_meta where key='generation'").fetchone()
        return row[0] if row else 0

    def setting(self, key: str) -> str | None:
        """A value scenemake keeps beside the records (None if never set)."""
        with self._lock:
            row = self._conn.execute("select value from sm_settings where key=?",
                                     (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("insert or replace into sm_settings values (?, ?)", (key, value))

    def drop_setting(self, key: str) -> None:
        with self._lock:
            self._conn.execute("delete from sm_settings where key=?", (key,))

    def relocate(self, old: str, new: str) -> int:
        """Files recorded under folder ``old`` are now under ``new``: rename them in every
        task's record (``move_paths``; each moved task's ledger is rewritten). The recorded
        content hashes stay, so a file that also changed still shows as changed. Returns how
        many records moved."""
        with self._lock:
            for task_id in list(self._dirty):  # what doit saved so far is moved too
                self._write(task_id)
            with self._conn:
                self._conn.execute("begin")
                changed = move_paths(self._conn, old, new)
                for task_id in changed:
                    if task_id not in NO_GENERATION:  # its ledger shows the old paths
                        self._conn.execute("insert or ignore into sm_dirty values (?)",
                                           (task_id,))
                if changed:
                    self._bump()
            for task_id in changed:
                self._cache.pop(task_id, None)
            if changed and self._raw_rows is not None:
                self._raw_rows.update(self._conn.execute(
                    f"select task_id, task_data from doit where task_id in "
                    f"({','.join('?' * len(changed))})", changed).fetchall())
        return len(changed)

    def snapshot(self, whole: bool = True) -> Records:
        """Every record as stored now, read in one read transaction (a writer committing
        meanwhile is not half-seen); ``whole=False``: the plan rows, and a record whole only
        where it has none."""
        with self._lock:
            return _read_records(self._conn, whole)

    def adopt(self, source: str, tasks: list[str], old: str, new: str) -> list[str]:
        """Copy the records of ``tasks`` from the build DB at ``source`` (read only, never
        changed): doit's, what each wrote, accepted edits, failures, attempt numbers, and
        the settings this DB has not got; the paths under folder ``old`` now under ``new``
        (``move_paths``). Each copied task's views are stale, so the next run writes them.
        A try starts from the book's records this way. Returns the tasks with a record."""
        src = _open_read_only(source)
        try:
            rows = {}
            for table, key in (("doit", "task_id"), ("sm_outputs", "task_id"),
                               ("sm_events", "task_id"), ("sm_failures", "task_id"),
                               ("sm_attempts", "task_id")):
                rows[table] = []
                for i in range(0, len(tasks), 500):
                    chunk = tasks[i:i + 500]
                    rows[table] += src.execute(
                        f"select * from {table} where {key} in "
                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
            settings = src.execute("select key, value from sm_settings").fetchall()
        finally:
            src.close()
        copied = [r[0] for r in rows["doit"]]
        with self._lock, self._conn:
            self._conn.execute("begin")
            conn = self._conn
            conn.executemany("insert or replace into doit(task_id, task_data, plan) "
                             "values (?, ?, ?)",
                             [(r[0], r[1], plan_of(r[1])) for r in rows["doit"]])
            conn.executemany("insert or replace into sm_outputs values (?, ?, ?, ?)",
                             rows["sm_outputs"])
            conn.executemany("insert into sm_events(task_id, kind, data, ts) values (?,?,?,?)",
                             [r[1:] for r in rows["sm_events"]])
            conn.executemany("insert or replace into sm_failures values (?, ?, ?, ?)",
                             rows["sm_failures"])
            conn.executemany("insert or replace into sm_attempts values (?, ?)",
                             rows["sm_attempts"])
            conn.executemany("insert or ignore into sm_settings values (?, ?)", settings)
            move_paths(conn, old, new)
            conn.executemany("insert or ignore into sm_dirty values (?)",
                             [(t,) for t in copied])
            self._bump()
            self._cache.clear()
            self._raw_rows = None
            self._single_reads = 0
            self._failed = {r[0] for r in conn.execute("select task_id from sm_failures")}
            self._evented = {r[0] for r in conn.execute("select task_id from sm_events")}
            self._attempts = dict(conn.execute("select task_id, n from sm_attempts"))
        return copied

    def stale_views(self) -> list[str]:
        """Tasks whose record changed since their views (e.g. the ledger) were rewritten."""
        with self._lock:
            return [r[0] for r in self._conn.execute("select task_id from sm_dirty")]

    def views_written(self, *task_ids: str) -> None:
        """The views of these tasks now reflect their records (one commit for all)."""
        if not task_ids:
            return
        with self._lock, self._conn:
            self._conn.execute("begin")
            self._conn.executemany("delete from sm_dirty where task_id=?",
                                   [(t,) for t in task_ids])

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(task_id, 'saved'|'removed')`` after a task's record is committed.

        Listeners run in order on one background thread (see ``flush_views``), so the doit
        thread that saves results never waits on a ledger being written.
        """
        if listener not in self._listeners:
            self._listeners.append(listener)

    def _notify(self, task_id: str, what: str) -> None:
        if not self._listeners:
            return
        # doit saves every result on its one dispatching thread: a ledger written there
        # (JSON, fsync) would hold back every task waiting to start. The views are
        # written behind it, in commit order; a kill before they are is repaired from
        # ``stale_views`` by the next run.
        if self._views is None:
            self._views = queue.SimpleQueue()
            self._views_thread = threading.Thread(target=self._write_views, args=(self._views,),
                                                  name="scenemake-views", daemon=True)
            self._views_thread.start()
        self._views.put((task_id, what))

    def _write_views(self, views: queue.SimpleQueue) -> None:
        while (item := views.get()) is not None:
            for listener in list(self._listeners):
                try:
                    listener(*item)
                except Exception as exc:  # the record stays marked stale: the next run retries
                    print(f"scenemake: could not rewrite the views of {item[0]}: {exc}",
                          file=sys.stderr)

    def flush_views(self) -> None:
        """Wait until the listeners have seen every commit so far."""
        if self._views_thread is not None:
            self._views.put(None)
            self._views_thread.join()
            self._views = self._views_thread = None

    # -- scenemake records -----------------------------------------------------
    def values(self, task_id: str) -> dict:
        """The values a task returned when it last succeeded ({} if none)."""
        return self.get(task_id, "_values_:") or {}

    def task_ids(self) -> list[str]:
        with self._lock:
            return list(set(self._raw) | set(self._cache))

    def outputs_of(self, task_id: str) -> dict[str, dict]:
        """path -> {known: [hashes], state: [mtime_ns, size, hash]} for a task's artifacts."""
        with self._lock:
            rows = self._conn.execute(
                "select path, known, state from sm_outputs where task_id=?", (task_id,)
            ).fetchall()
        return {p: {"known": json.loads(k), "state": json.loads(s) if s else None}
                for p, k, s in rows}

    def output_rows(self, paths: list[str] | None = None, *,
                    tasks: list[str] | None = None) -> list[tuple[str, str, str, str]]:
        """Raw (path, task_id, known, state) rows of recorded artifacts: all, those of
        ``paths`` or those of ``tasks``.

        JSON is left undecoded: a no-op over a big book only needs the stat check.
        """
        column, keys = ("path", paths) if tasks is None else ("task_id", tasks)
        with self._lock:
            if keys is None:
                return self._conn.execute(
                    "select path, task_id, known, state from sm_outputs").fetchall()
            out = []
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                out += self._conn.execute(
                    f"select path, task_id, known, state from sm_outputs where {column} in "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
            return out

    def announce_outputs(self, task_id: str, hashes: dict[str, str]) -> None:
        """Before a task writes its artifacts: add their hashes to the known set.

        A run killed between the write and the commit then never mistakes the
        task's own output for a manual edit.
        """
        with self._lock, self._conn:
            self._conn.execute("begin")  # one commit for the task's artifacts
            for path, digest in hashes.items():
                row = self._conn.execute("select known from sm_outputs where path=?",
                                         (path,)).fetchone()
                known = json.loads(row[0]) if row else []
                if digest not in known:
                    known.append(digest)
                self._conn.execute(
                    "insert into sm_outputs(path, task_id, known, state) values (?,?,?,null) "
                    "on conflict(path) do update set task_id=excluded.task_id, "
                    "known=excluded.known",
                    (path, task_id, json.dumps(known)))

    def settle_outputs(self, task_id: str, states: dict[str, list]) -> None:
        """After a write (or an accepted edit): the file's state is now the only known one."""
        with self._lock, self._conn:
            self._conn.execute("begin")
            self._settle(task_id, states)

    def _settle(self, task_id: str, states: dict[str, list]) -> None:
        for path, state in states.items():
            self._conn.execute(
                "insert or replace into sm_outputs(path, task_id, known, state) "
                "values (?,?,?,?)",
                (path, task_id, json.dumps([state[2]]), json.dumps(state)))

    def drop_outputs(self, task_id: str) -> None:
        with self._lock:
            self._conn.execute("delete from sm_outputs where task_id=?", (task_id,))

    def add_event(self, task_id: str, kind: str, data: dict) -> None:
        """Record an accepted override (prompt change, manual edit, stale pre-state)."""
        with self._lock:
            self._conn.execute("insert into sm_events(task_id, kind, data, ts) values (?,?,?,?)",
                               (task_id, kind, json.dumps(data), now_iso()))
            self._evented.add(task_id)

    def events(self, task_id: str) -> list[dict]:
        with self._lock:
            if task_id not in self._evented:
                return []
            rows = self._conn.execute(
                "select kind, data, ts from sm_events where task_id=? order by id", (task_id,)
            ).fetchall()
        return [{"kind": k, **json.loads(d), "timestamp": ts} for k, d, ts in rows]

    def clear_events(self, task_id: str) -> None:
        with self._lock:
            if task_id in self._evented:
                self._conn.execute("delete from sm_events where task_id=?", (task_id,))
                self._evented.discard(task_id)

    def set_failure(self, task_id: str, error: str, data: dict | None = None) -> None:
        with self._lock:
            self._conn.execute("insert or replace into sm_failures values (?,?,?,?)",
                               (task_id, error, json.dumps(data or {}), now_iso()))
            self._failed.add(task_id)

    def clear_failure(self, task_id: str) -> None:
        with self._lock:
            if task_id in self._failed:
                self._conn.execute("delete from sm_failures where task_id=?", (task_id,))
                self._failed.discard(task_id)

    def failure(self, task_id: str) -> dict | None:
        with self._lock:
            if task_id not in self._failed:
                return None
            row = self._conn.execute("select error, data, ts from sm_failures where task_id=?",
                                     (task_id,)).fetchone()
        if row is None:
            return None
        return {"error": row[0], **json.loads(row[1]), "timestamp": row[2]}

    def attempt(self, task_id: str) -> int:
        with self._lock:
            return self._attempts.get(task_id, 0)

    def bump_attempt(self, task_id: str) -> int:
        with self._lock:
            n = self.attempt(task_id) + 1
            self._conn.execute("insert or replace into sm_attempts values (?,?)", (task_id, n))
            self._attempts[task_id] = n
        return n

    def forget(self, task_id: str) -> None:
        """Forget a task and its scenemake records (rerun-from, reset)."""
        with self._lock:
            self.drop_outputs(task_id)
            self.clear_events(task_id)
            self.clear_failure(task_id)
        self.remove(task_id)
