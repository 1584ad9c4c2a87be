"""The one rule of whether a file is as recorded.

A recorded state is ``[mtime_ns, size, blake3]``. Two contracts, chosen per file by whoever
records it:

- **make's** (generated artifacts, a model file): a file whose (mtime_ns, size) are as
  recorded is not read again, so a no-op costs a ``stat`` per file; when the stat moved,
  blake3 settles it (a touch with the same content is no change).
- **by content** (a book's own small inputs: book.json, outline.json, state.json and the
  templates): the file is hashed whatever its stat says, so an edit that kept the size and
  put the mtime back (``touch -r``, ``cp -p``, a sync tool) is still an edit.

Anything but a regular file where a file was recorded (a folder, a dangling link) is a
change, never an error: the task that makes the file says what is in the way.
"""

from __future__ import annotations

import os
import stat as stat_mod

from pipeline.core.hashing import hash_file, hash_file_fresh


def observe(path: str) -> os.stat_result | None:
    """The file's stat (links followed), or None when nothing readable is there."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def is_recorded_state(state) -> bool:
    """``state`` has the recorded shape ``[mtime_ns, size, blake3]``."""
    return (isinstance(state, list | tuple) and len(state) == 3
            and isinstance(state[0], int) and isinstance(state[1], int)
            and isinstance(state[2], str))


def digest(path: str, st: os.stat_result | None = None, *, fresh: bool = False) -> str | None:
    """blake3 of a regular file (None if missing or not a regular file); ``fresh``: read
    now, not from this process's memo (a file compared by content)."""
    st = st if st is not None else observe(path)
    if st is None or not stat_mod.S_ISREG(st.st_mode):
        return None
    try:
        return hash_file_fresh(path, st) if fresh else hash_file(path, st)
    except OSError:
        return None


def matches(path: str, state, st: os.stat_result | None = None, *,
            by_content: bool = False) -> bool:
    """True when the file at ``path`` is as ``state`` recorded it (see the module's rule).
    ``st`` is its stat if the caller has it already."""
    if not is_recorded_state(state):
        return False
    st = st if st is not None else observe(path)
    if st is None or not stat_mod.S_ISREG(st.st_mode):
        return False
    if st.st_size != state[1]:
        return False
    if not by_content and st.st_mtime_ns == state[0]:
        return True
    # by content: read once per process (the memo), the first time a run asks
    return digest(path, st) == state[2]


def current(path: str, st: os.stat_result | None = None) -> list | None:
    """The state to record for ``path`` now (None if it is not a regular file)."""
    st = st if st is not None else observe(path)
    found = digest(path, st)
    if found is None or st is None:
        return None
    return [st.st_mtime_ns, st.st_size, found]
