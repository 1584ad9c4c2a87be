"""The one exclusive lock: an advisory ``flock`` on a file that names the process holding it.

A second holder is refused at once with a one-line "busy" :class:`UserError` (the default), or
waits for the first, up to ``wait`` seconds (``wait=None``: as long as it takes). The holder's
PID is written into the lock file once it is held, so the refusal -- or the waiter's
``on_wait`` callback -- can say which process to wait for. The lock goes with the process:
the kernel drops a ``flock`` when its file is closed, a crash or ``kill -9`` included, so a
stale lock file never blocks anyone (the PID left in it is then just ignored).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path

POLL_S = 0.05  # how often a waiter retries: short next to any run worth waiting for


def holder(path: str | os.PathLike) -> int | None:
    """The PID holding the lock at ``path``; None when nobody holds it (or it is unknown)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: whatever PID the file names is gone
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, busy: str, fix: str | None = None, *,
              wait: float | None = 0, show_path: bool = False,
              on_wait: Callable[[int | None], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created with its folder) for the ``with`` body.

    Another holder: ``wait=0`` raises ``UserError(busy + " (pid N)", fix=fix)`` at once;
    ``wait`` seconds > 0 wait that long first, ``None`` waits forever. ``on_wait(pid)`` is
    called once, when the wait starts (to tell the user whom they wait for). ``show_path``
    puts the lock file at the head of the refusal.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # no O_TRUNC: opening must not wipe the PID the current holder wrote
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try(fd):
            other = _read_pid(fd)
            if wait is not None and wait <= 0:
                raise _busy(busy, fix, other, path if show_path else None)
            if on_wait is not None:
                on_wait(other)
            deadline = None if wait is None else time.monotonic() + wait
            while not _try(fd):
                if deadline is not None and time.monotonic() >= deadline:
                    raise _busy(busy, fix, _read_pid(fd), path if show_path else None)
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _busy(busy: str, fix: str | None, pid: int | None, path: Path | None) -> UserError:
    who = f" (pid {pid})" if pid is not None else ""
    return UserError(f"{busy}{who}", path=display_path(path) if path else None, fix=fix)
