"""The no-op fast path: a stamp of every file a complete build read or wrote.

After a plain ``doit`` that built (or found up to date) every task, the stamp records
each file's (mtime_ns, size) as the build DB recorded them, the DB's generation (bumped
by every task commit and every forget), and the environment that changes the book.
The next plain ``doit`` stats those files first: if nothing moved, no task can be out
of date, so doit need not load and check thousands of tasks. Anything else - a task
name, a ``NAME=value``, another command, one changed stat, a forgotten task, a ledger
left behind by a kill - takes the full path.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pipeline.book.workspace import PACKAGE_DIR
from pipeline.core.jsonio import load_json
from pipeline.core.store import atomic_write_json

VERSION = 3  # 3: the manuscript is part of a complete build
ENV_KEYS = ("SCENEMAKE_MODEL", "SCENEMAKE_BASE_URL", "SCENEMAKE_API_KEY_ENV")
# Which scenemake wrote the stamp: another install (a venv, a checkout) may bring other
# default templates, whose files the stamp never stat'ed.
_CODE = os.path.abspath(PACKAGE_DIR)


def env_key() -> list[str | None]:
    """The environment and the scenemake install that change what a book build means."""
    return [os.environ.get(k) for k in ENV_KEYS] + [_CODE]


def db_state(db_path: Path) -> tuple[int | None, int]:
    """(generation, ledgers waiting to be rewritten) of a build DB, read-only."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, 0
    try:
        row = conn.execute("select n from sm_meta where key='generation'").fetchone()
        dirty = conn.execute("select count(*) from sm_dirty").fetchone()[0]
        return (row[0] if row else 0), dirty
    except sqlite3.Error:
        return None, 0
    finally:
        conn.close()


def fresh(stamp_path: Path, db_path: Path) -> bool:
    """True when the stamp still describes every file and the DB it was written from."""
    try:
        data = load_json(stamp_path)
    except (OSError, ValueError):
        return False
    if data.get("version") != VERSION or data.get("env") != env_key():
        return False
    generation, dirty = db_state(db_path)
    if generation is None or dirty or generation != data.get("generation"):
        return False
    stat = os.stat
    try:
        # a file that would change what the build reads (a new template override)
        if any(os.path.exists(p) for p in data["absent"]):
            return False
        for path, mtime_ns, size in data["files"]:
            st = stat(path)
            if st.st_mtime_ns != mtime_ns or st.st_size != size:
                return False
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


def write(stamp_path: Path, generation: int, files: dict[str, tuple[int, int]],
          absent: list[str]) -> None:
    """Record the files of a complete build, and the files whose appearance matters."""
    atomic_write_json(stamp_path, {
        "version": VERSION, "generation": generation, "env": env_key(), "absent": absent,
        "files": [[p, m, s] for p, (m, s) in sorted(files.items())]})


def drop(stamp_path: Path) -> None:
    """Forget the stamp (the next plain doit takes the full path)."""
    try:
        stamp_path.unlink()
    except FileNotFoundError:
        pass
