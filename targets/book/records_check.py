"""The full path's no-op without doit: a book's tasks checked against their records.

With no stamp to go by (after a named run, a forget, a new install), a plain ``doit``
would load every task of the book and let doit check each one. Most such runs find
nothing to do. This check reads the build DB once, read-only, and decides for each task
what doit would decide - its record, the checker and the file deps doit saved, each
dep's state through the same checker, its targets, its up-to-date rules - and what the
guard would (templates as recorded, outputs as written, no ledger left behind). It only
ever answers "up to date" where doit would; any doubt stops it at that scene, and doit
checks from there on. Scenes before the first that fails need not load at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from pipeline.core import builddb
from pipeline.core.hashing import hash_file
from targets.book.uptodate import InputsUnchanged
from targets.checker import Blake3Checker

_CHECKER = Blake3Checker.__name__


class RecordsCheck:
    """A build DB read once, read-only, and the files its tasks name, stat'ed once each."""

    def __init__(self, records: dict[str, str], outputs: dict[str, list | None],
                 generation: int):
        self.generation = generation  # of the records read: the stamp's
        self._records = records
        self._outputs = outputs
        self._stats: dict[str, os.stat_result | None] = {}
        self._checker = Blake3Checker()
        self.checked = 0
        # path -> (mtime_ns, size) as stat'ed now, with the first scene that reads or
        # writes it: the stamp's rows (pipeline/book/stamp.py)
        self.files: dict[str, tuple[int, int, int]] = {}

    @classmethod
    def open(cls, db_path: Path, package_dir: str) -> RecordsCheck | None:
        """The DB's records, if doit could use them as they are: no migration pending, no
        ledger left behind by a kill, no failure on record, scenemake's own files at the
        folder the records name. None otherwise (doit opens the DB and checks)."""
        try:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5,
                                   isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            conn.execute("begin")  # one snapshot: a run committing meanwhile is not half-read
            if builddb.SCHEMA.pending(conn) or builddb.RECORDS.pending(conn):
                return None
            if conn.execute("select 1 from sm_dirty union all select 1 from sm_failures "
                            "limit 1").fetchone():
                return None
            row = conn.execute(
                "select value from sm_settings where key='package_dir'").fetchone()
            if row is None or row[0] != package_dir:
                return None
            records = dict(conn.execute("select task_id, task_data from doit"))
            rows = conn.execute("select path, state from sm_outputs").fetchall()
            # one decode for all 26000 states of a 1000-scene book, not one call each
            states = json.loads(f"[{','.join(state or 'null' for _, state in rows)}]")
            outputs = {path: state for (path, _), state in zip(rows, states, strict=True)}
            generation = conn.execute(
                "select n from sm_meta where key='generation'").fetchone()
        except (sqlite3.Error, ValueError):
            return None
        finally:
            conn.close()
        return cls(records, outputs, generation[0] if generation else 0)

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            return self._stats[path]
        except KeyError:
            try:
                st = os.stat(path)
            except OSError:
                st = None
            self._stats[path] = st
            return st

    def task(self, task: dict, index: int, templates: dict[str, str] | None = None) -> bool:
        """True when doit would find ``task`` (a task dict as dodo.py yields it, ``name``
        its full name) up to date and the guard would find nothing: its files are then
        noted as read or written first by scene ``index``."""
        raw = self._records.get(task["name"])
        if raw is None:
            return False
        try:
            record = json.loads(raw)
        except ValueError:
            return False
        file_dep = task.get("file_dep") or ()
        if (record.get("checker:") != _CHECKER or "ignore:" in record or not file_dep
                or set(record.get("deps:") or ()) != set(file_dep)):
            return False
        stats, stat = self._stats, self._stat
        digests = {}
        for dep in file_dep:
            st, state = stats.get(dep) or stat(dep), record.get(dep)
            # the checker's own (mtime_ns, size) shortcut first: one call fewer a file
            if st is None or not (isinstance(state, list) and len(state) == 3 and (
                    (st.st_mtime_ns == state[0] and st.st_size == state[1])
                    or not self._checker.check_modified(dep, st, state))):
                return False
            digests[dep] = state[2]
        values = record.get("_values_:") or {}
        for rule in task.get("uptodate") or ():
            # the book's one rule in a run; any other is doit's to call
            if not isinstance(rule, InputsUnchanged) or not rule(None, values):
                return False
        if templates and not _as_recorded(templates, values.get("template_set"), digests):
            return False
        outputs = self._outputs
        targets = task.get("targets") or ()
        for target in targets:
            # there, with the content the build last wrote (not edited by hand)
            st, state = stats.get(target) or stat(target), outputs.get(target)
            if st is None or not isinstance(state, list) or len(state) != 3:
                return False
            if ((st.st_mtime_ns != state[0] or st.st_size != state[1])
                    and hash_file(target, st) != state[2]):
                return False
        self.checked += 1
        files = self.files
        for group in (file_dep, targets):
            for path in group:
                if path not in files:
                    st = stats[path]
                    files[path] = (st.st_mtime_ns, st.st_size, index)
        return True


def _as_recorded(templates: dict[str, str], recorded, digests: dict[str, str]) -> bool:
    """The task's templates are those its last success rendered, by path and content (a
    default template found at another install path is the guard's to judge)."""
    if not isinstance(recorded, dict) or recorded.keys() != templates.keys():
        return False
    for role, path in templates.items():
        entry = recorded[role]
        if (not isinstance(entry, dict) or entry.get("path") != path
                or entry.get("hash") != digests.get(path)):
            return False
    return True
