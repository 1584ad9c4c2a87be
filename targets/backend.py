"""The doit backend plugin ``scenemake``: the build DB of pipeline/core/builddb.py, whose
errors doit reports in one line, used by one run at a time."""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from doit.dependency import DatabaseException
from doit.exceptions import InvalidCommand

from pipeline.core import builddb
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path
from pipeline.core.lock import FileLock, LockBusy

# The run locks this process holds, by DB path. A backend doit never closed (a command that
# failed while loading its tasks) must not lock out the next in-process run of the same DB.
_held: dict[str, FileLock] = {}


class BuildDBError(DatabaseException, InvalidCommand, builddb.BuildDBError):
    """The build DB cannot be used. doit prints an InvalidCommand as one ``ERROR:`` line
    and exits 3; any other exception from a backend is printed with its traceback. Raised
    inside a task's action it is a UserError: that task fails in one line."""


def _wait_wanted() -> bool:
    """``doit wait=1``: wait for the run holding the DB instead of refusing."""
    from doit import get_var

    return (get_var("wait") or "") in ("1", "true", "yes")


def run_lock(db_path: str) -> FileLock:
    """The run lock of the build DB ``db_path`` (``<db>.lock``), taken: one run at a time.

    Another run holding it: one line naming its PID (exit 3), or with ``wait=1`` a wait for
    it. The kernel drops the lock when its holder dies, so a killed run never blocks the next.
    """
    key = str(Path(db_path).resolve())
    stale = _held.pop(key, None)
    if stale is not None:
        stale.release()
    lock = FileLock(f"{db_path}.lock")
    shown = display_path(db_path)

    waited_for: list[int | None] = []

    def announce(pid: int | None) -> None:
        waited_for.append(pid)
        print(f"scenemake: waiting for the run of {_who(pid)} to finish ({shown})",
              file=sys.stderr, flush=True)

    waiting = _wait_wanted()
    try:
        lock.acquire(wait=None if waiting else 0, on_wait=announce)
    except LockBusy as busy:
        raise BuildDBError(
            f"{shown}: another run ({_who(busy.pid)}) is using this build DB; "
            "let it finish, or add wait=1 to wait for it") from None
    except KeyboardInterrupt:
        if not waiting:
            raise
        who = _who(waited_for[0] if waited_for else None)
        raise BuildDBError(f"{shown}: stopped while waiting for the run of {who}; "
                           "nothing was changed") from None
    except UserError as exc:  # the lock file cannot be made: one line
        raise BuildDBError(str(exc)) from exc
    _held[key] = lock
    return lock


def _who(pid: int | None) -> str:
    return f"PID {pid}" if pid else "another process"


def _guarded(method: Callable) -> Callable:
    """``method`` with its sqlite errors (damaged, disk full, read-only, I/O) as one line,
    by their error code (pipeline/core/sqlitefile.py)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    return wrapper


class SceneDB(builddb.SceneDB):
    """doit backend (plugin name ``scenemake``): sqlite, WAL, one commit per finished task,
    one run at a time (see :func:`run_lock`)."""

    desc = "sqlite, committed per task (scenemake)"
    Error = BuildDBError

    def __init__(self, name: str, codec, *, module_name=None):
        self._run_lock = run_lock(name)
        self._view_failures: list[str] = []
        try:
            super().__init__(name, codec, module_name=module_name)
        except BaseException:
            self._unlock()
            raise

    def _write_views(self, views) -> None:
        # As builddb's, but a failure is kept for one line at the end instead of a line per
        # view: on a full disk every ledger fails the same way.
        while (item := views.get()) is not None:
            for listener in list(self._listeners):
                try:
                    listener(*item)
                except Exception as exc:  # the record stays marked stale: the next run retries
                    self._view_failures.append(f"{item[0]}: {exc}")

    def dump(self) -> None:
        """Close the DB, then let the next run in."""
        try:
            super().dump()
            if self._view_failures:
                more = len(self._view_failures) - 1
                print(f"scenemake: could not rewrite the views of {self._view_failures[0]}"
                      + (f" (and {more} more)" if more else "")
                      + "; the next run rewrites them", file=sys.stderr)
        except sqlite3.Error as exc:
            # Already committed tasks stay; the ones left in memory run again next time.
            self.flush_views()
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            if builddb._current is self:
                builddb._current = None
            raise self._failure(exc) from None
        finally:
            self._unlock()

    def _unlock(self) -> None:
        self._run_lock.release()
        for key, lock in list(_held.items()):
            if lock is self._run_lock:
                del _held[key]


# Called by doit while it saves results, by commands, and from inside tasks' actions: a
# sqlite error is one line (doit's ``ERROR:`` line, exit 3; or, in an action, that task fails
# in one line). Reads of task records (get, in_) are mapped in builddb itself.
for _name in ("set", "remove", "remove_all", "announce_outputs", "settle_outputs",
              "set_failure", "add_event", "bump_attempt", "forget", "views_written",
              "set_setting", "relocate", "values", "task_ids", "outputs_of", "output_rows",
              "events", "stale_views", "attempt", "setting", "drop_outputs", "clear_events",
              "clear_failure", "snapshot"):
    setattr(SceneDB, _name, _guarded(getattr(builddb.SceneDB, _name)))
