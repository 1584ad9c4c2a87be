"""What a sqlite file's failure means to its user: the one place that maps sqlite errors, by
their error code, to one line naming the file, the reason and what to do, and the cheap
integrity check that tells a damaged file from a passing failure.

Every sqlite file scenemake opens (a book's build DB, an L7 session's and a scenario run's
build DBs, the copies the fleet merges) reports through :func:`failure`, so a damaged page
reads the same everywhere and is never taken for a full disk, nor a full disk for damage
(moving a DB away because the disk was full would lose work for nothing).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path

# What went wrong, as the user must act on it.
DAMAGED = "damaged"  # the file is not (or no longer) a sound sqlite database
BUSY = "busy"  # another process holds it
FULL = "full"  # no space left for it
READONLY = "readonly"  # the file or its folder may not be written
IO = "io"  # the disk failed to read or write it
CANTOPEN = "cantopen"  # the file cannot be opened or made
OTHER = "other"

# sqlite's primary result codes (https://sqlite.org/rescode.html): an extended code keeps its
# primary code in the low byte (SQLITE_IOERR_SHORT_READ is 522 = 10 | 2 << 8).
_BY_CODE = {
    3: READONLY,  # SQLITE_PERM
    5: BUSY,  # SQLITE_BUSY
    6: BUSY,  # SQLITE_LOCKED
    8: READONLY,  # SQLITE_READONLY
    10: IO,  # SQLITE_IOERR
    11: DAMAGED,  # SQLITE_CORRUPT
    13: FULL,  # SQLITE_FULL
    14: CANTOPEN,  # SQLITE_CANTOPEN
    24: DAMAGED,  # SQLITE_FORMAT
    26: DAMAGED,  # SQLITE_NOTADB
}
# Errors raised without a code (older Pythons, errors of the sqlite3 module itself): the
# words of sqlite's own messages.
_BY_WORDS = (("malformed", DAMAGED), ("not a database", DAMAGED), ("locked", BUSY),
             ("busy", BUSY), ("full", FULL), ("readonly", READONLY), ("read-only", READONLY),
             ("disk I/O", IO), ("unable to open", CANTOPEN))

# A quick_check reads every page: about 25 ms for 42 MB here (warm), 0.7 ms for a fresh
# example book's 350 kB. Above this size a file is checked only after an error.
QUICK_CHECK_MAX_BYTES = 16 * 1024 * 1024

_FIXES = {
    BUSY: "another process is using it: let it finish, then run again",
    FULL: "free some disk space and run again: nothing already recorded is lost",
    READONLY: "make the file and its folder writable, then run again",
    IO: "the disk failed to read or write it: check the disk, then run again",
    CANTOPEN: "check that its folder exists and may be written, then run again",
}


class SqliteFileError(UserError):
    """A sqlite file that cannot be used, in one line; ``kind`` says why (DAMAGED ...)."""

    def __init__(self, message: str, kind: str = OTHER):
        super().__init__(message)
        self.kind = kind


def corrupt(message: str) -> sqlite3.DatabaseError:
    """A sqlite error for damage found above sqlite (a record that is not what was
    written): reported as a damaged file, like sqlite's own SQLITE_CORRUPT."""
    exc = sqlite3.DatabaseError(message)
    exc.sqlite_errorcode = 11  # type: ignore[attr-defined]
    exc.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    return exc


def kind(exc: BaseException) -> str:
    """DAMAGED, BUSY, FULL, READONLY, IO, CANTOPEN or OTHER for a sqlite error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _BY_CODE:
        return _BY_CODE[code & 0xFF]
    text = str(exc)
    for words, found in _BY_WORDS:
        if words in text:
            return found
    return OTHER


def failure(path: str | os.PathLike, exc: BaseException, *, what: str, recover: str,
            conn: sqlite3.Connection | None = None,
            error: type[SqliteFileError] = SqliteFileError) -> SqliteFileError:
    """One line for ``exc`` raised by the sqlite file ``path`` (called ``what``: "the build
    DB"), saying what to do; ``recover`` is how to get a damaged one back (what it costs).

    An I/O error or an error of no known kind is checked with ``quick_check`` on ``conn``
    (or a new read-only connection): a damaged file is called damaged, whatever the error
    said first; an I/O error on a disk with no space left is a full disk. ``error``: the
    class of the returned error (a subclass for one kind of file).
    """
    found = kind(exc)
    if found in (IO, OTHER) and damage(path, conn) is not None:
        found = DAMAGED
    elif found == IO and _no_space(path):
        found = FULL
    return _error(path, found, str(exc) or type(exc).__name__, what, recover, error)


def _no_space(path: str | os.PathLike) -> bool:
    try:
        return os.statvfs(os.path.dirname(os.path.abspath(path))).f_bavail == 0
    except OSError:
        return False


def _error(path: str | os.PathLike, found: str, reason: str, what: str, recover: str,
           error: type[SqliteFileError] = SqliteFileError) -> SqliteFileError:
    shown = display_path(path)
    reason = " ".join(reason.split())
    if len(reason) > 120:
        reason = reason[:117] + "..."
    if found == DAMAGED and "not a database" in reason:
        return error(f"{shown}: {what} is not a sqlite database; {recover}", found)
    if found == DAMAGED:
        return error(f"{shown}: {what} is damaged ({reason}); {recover}", found)
    if found == OTHER:
        return error(f"{shown}: {what} failed ({reason})", found)
    return error(f"{shown}: {what} could not be used ({reason}); {_FIXES[found]}", found)


def damage(path: str | os.PathLike, conn: sqlite3.Connection | None = None) -> str | None:
    """The first problem ``PRAGMA quick_check`` finds in the sqlite file ``path`` (through
    ``conn`` if given), or None when it finds none or cannot tell (the file is busy, or
    cannot be opened: that is no proof of damage)."""
    own = conn is None
    try:
        if own:
            conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5)
        assert conn is not None
        rows = conn.execute("pragma quick_check(1)").fetchall()
    except sqlite3.Error as exc:
        return str(exc) if kind(exc) == DAMAGED else None
    finally:
        if own and conn is not None:
            conn.close()
    first: Any = rows[0][0] if rows else "ok"
    if first == "ok":
        return None
    return "quick_check: " + str(first).replace("*** in database main ***", "").strip()


def check_small(path: str | os.PathLike, conn: sqlite3.Connection | None = None, *,
                what: str, recover: str, max_bytes: int | None = None,
                error: type[SqliteFileError] = SqliteFileError) -> None:
    """At open: ``quick_check`` the file (through ``conn``, or read-only) if it is small
    enough to cost nothing noticeable; a damaged one raises the one line of
    :func:`failure`."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return  # a new file, or ":memory:"
    if size == 0 or size > (QUICK_CHECK_MAX_BYTES if max_bytes is None else max_bytes):
        return
    problem = damage(path, conn)
    if problem is not None:
        raise _error(path, DAMAGED, problem, what, recover, error)
