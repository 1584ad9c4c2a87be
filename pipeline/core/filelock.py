"""Advisory file locks (``flock``) that die with their holder.

The kernel drops an ``flock`` when the process holding it exits, however it exits
(``kill -9`` included), so a lock never outlives its run and never needs cleaning by hand.
``flock`` belongs to an open file, not to a process: two threads of one process that
open the file separately exclude each other too.

(Until the core engineer's ``pipeline/core/lock.py`` lands, this module is where the run
lock and the LLM request claims get their locks.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path


class LockBusy(Exception):
    """The lock is held by another process (``holder`` is its PID, if it wrote one)."""

    def __init__(self, path: Path, holder: int | None):
        self.path = path
        self.holder = holder
        super().__init__(f"{path} is held by {holder or 'another process'}")


def _lock_error(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot create the lock file ({exc.strerror or exc})",
                     path=display_path(path), fix="check that you may write to that folder")


def holder_pid(path: str | os.PathLike) -> int | None:
    """The PID written in the lock file by its holder, or None."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class FileLock:
    """An exclusive ``flock`` on ``path`` that records its holder's PID in the file.

    ``acquire(wait=False)`` raises :class:`LockBusy` when another holder has it;
    ``wait=True`` blocks until it is free (a dead holder frees it at once).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock (see the class doc)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _lock_error(self.path, exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LockBusy(self.path, self._holder()) from None
                fcntl.flock(fd, fcntl.LOCK_EX)
            # Who holds it, for the message another run prints (best effort: a full
            # disk must not stop the run that already has the lock).
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _holder(self) -> int | None:
        # The holder writes its PID just after taking the lock: give it a moment.
        for _ in range(20):
            pid = holder_pid(self.path)
            if pid is not None:
                return pid
            time.sleep(0.01)
        return None

    def release(self) -> None:
        """Drop the lock (closing the file drops the ``flock``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, it is just not ours
    return True
