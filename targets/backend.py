"""The doit backend plugin ``scenemake``: the build DB of pipeline/core/builddb.py, whose
errors doit reports in one line, used by one run at a time."""

from __future__ import annotations

import sys
from pathlib import Path

from doit.dependency import DatabaseException
from doit.exceptions import InvalidCommand

from pipeline.core import builddb
from pipeline.core.errors import UserError
from pipeline.core.filelock import FileLock, LockBusy
from pipeline.core.jsonio import display_path

# The run locks this process holds, by DB path. A backend doit never closed (a command that
# failed while loading its tasks) must not lock out the next in-process run of the same DB.
_held: dict[str, FileLock] = {}


class BuildDBError(DatabaseException, InvalidCommand):
    """The build DB cannot be used. doit prints an InvalidCommand as one ``ERROR:`` line
    and exits 3; any other exception from a backend is printed with its traceback."""


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
    try:
        lock.acquire(wait=False)
    except LockBusy as busy:
        who = f"PID {busy.holder}" if busy.holder else "another process"
        if not _wait_wanted():
            raise BuildDBError(
                f"{display_path(db_path)}: another run ({who}) is using this build DB; "
                "let it finish, or add wait=1 to wait for it") from None
        print(f"scenemake: waiting for the run of {who} to finish "
              f"({display_path(db_path)})", file=sys.stderr, flush=True)
        lock.acquire(wait=True)
    except UserError as exc:  # the lock file cannot be made: one line
        raise BuildDBError(str(exc)) from exc
    _held[key] = lock
    return lock


class SceneDB(builddb.SceneDB):
    """doit backend (plugin name ``scenemake``): sqlite, WAL, one commit per finished task,
    one run at a time (see :func:`run_lock`)."""

    desc = "sqlite, committed per task (scenemake)"

    def __init__(self, name: str, codec, *, module_name=None):
        self._run_lock = run_lock(name)
        try:
            super().__init__(name, codec, module_name=module_name)
        except builddb.BuildDBError as exc:
            self._unlock()
            raise BuildDBError(str(exc)) from exc
        except BaseException:
            self._unlock()
            raise

    def dump(self) -> None:
        """Close the DB, then let the next run in."""
        try:
            super().dump()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        self._run_lock.release()
        for key, lock in list(_held.items()):
            if lock is self._run_lock:
                del _held[key]
