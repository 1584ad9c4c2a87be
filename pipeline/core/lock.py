"""The one exclusive lock: an advisory ``flock`` on a file that names the process holding it.

A second holder is refused at once with a one-line "busy" :class:`LockBusy` (a
:class:`UserError` that also carries the holder's PID), or waits for the first, up to ``wait``
seconds (``wait=None``: as long as it takes). The holder's PID is written into the lock file
once it is held, so the refusal -- or the waiter's ``on_wait`` callback -- can say which
process to wait for. The lock goes with the process: the kernel drops a ``flock`` when its
file is closed, a crash or ``kill -9`` included, so a stale lock file never blocks anyone
(the PID left in it is then just ignored). ``flock`` belongs to an open file, not to a
process: two threads of one process that open the file separately exclude each other too.

Three shapes, one mechanism:

- :func:`exclusive` -- a ``with`` block (the L7 and scenario run locks);
- :class:`FileLock` -- taken now, released later (the build DB's run lock, held by doit's
  backend from its opening to its ``dump``);
- ``FileLock(path, remove=True)`` -- a lock whose file goes with its release (a request
  claim: one file per request, so the folder does not fill up); :func:`remove_if_free`
  clears such a file a killed holder left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.core import cpu_turn
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path

POLL_S = 0.05  # how often a waiter with a deadline retries: short next to any run worth waiting for
_PID_GRACE_S = 0.2  # a new holder writes its PID just after taking the lock: give it that long


class LockBusy(UserError):
    """The lock is held by another holder; ``pid`` is its PID when it wrote one."""

    def __init__(self, message: str, *, pid: int | None, path: str | None = None,
                 fix: str | None = None):
        self.pid = pid
        super().__init__(message, path=path, fix=fix)


def holder(path: str | os.PathLike) -> int | None:
    """The PID holding the lock at ``path``; None when nobody holds it (or it is unknown)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
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


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # it exists, it is just not ours
    return True


def remove_if_free(path: str | os.PathLike) -> bool:
    """Remove the lock file at ``path`` if nobody holds it (its holder died); True if removed.

    It is removed while held, as a ``remove=True`` holder does on release, so a waiter that
    then gets the lock on the removed file knows to open the new one.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            os.unlink(path)
            return True
    except OSError:  # held by a live process, or already gone
        pass
    finally:
        os.close(fd)
    return False


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _holder_pid(fd: int) -> int | None:
    """The PID the current holder wrote, waiting briefly for one that has just taken it."""
    deadline = time.monotonic() + _PID_GRACE_S
    while (pid := _read_pid(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLock:
    """An exclusive ``flock`` on ``path`` that records its holder's PID in the file.

    ``remove=True``: the file is removed on release (while still held), and taking the lock
    makes sure the file held is the one at ``path`` now (not one a holder just removed).
    """

    def __init__(self, path: str | os.PathLike, *, remove: bool = False):
        self.path = Path(path)
        self.remove = remove
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, busy: str = "busy", fix: str | None = None, *,
                wait: float | None = 0, show_path: bool = False,
                on_wait: Callable[[int | None], None] | None = None) -> None:
        """Take the lock (its folder created if needed).

        Another holder: ``wait=0`` raises ``LockBusy(busy + " (pid N)", fix=fix)`` at once;
        ``wait`` seconds > 0 wait that long first, ``None`` waits as long as it takes (an
        interrupt ends the wait). ``on_wait(pid)`` is called once, when the wait starts (to
        tell the user whom they wait for). ``show_path`` puts the lock file at the head of
        the refusal. A lock file that cannot be created is a one-line :class:`UserError`.
        """
        while True:
            fd = self._open()
            try:
                if not _try(fd):
                    self._wait(fd, busy, fix, wait, show_path, on_wait)
                    on_wait = None  # told once, even if the file changes under us
                if self.remove and not _same_file(fd, self.path):
                    os.close(fd)  # its holder finished and removed it: take the next one
                    continue
                # Who holds it, for the message another holder prints (best effort: a full
                # disk must not stop the holder that already has the lock).
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
                except OSError:
                    pass
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # no O_TRUNC: opening must not wipe the PID the current holder wrote
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create the lock file ({exc.strerror or exc})",
                            path=display_path(self.path),
                            fix="check that you may write to that folder") from exc

    def _wait(self, fd: int, busy: str, fix: str | None, wait: float | None,
              show_path: bool, on_wait: Callable[[int | None], None] | None) -> None:
        if wait is not None and wait <= 0:
            raise self._busy(busy, fix, _holder_pid(fd), show_path)
        if on_wait is not None:
            on_wait(_holder_pid(fd))
        with cpu_turn.waiting():  # never hold the Python turn while another holder works
            if wait is None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # woken by the kernel the moment it is free
                return
            deadline = time.monotonic() + wait
            while not _try(fd):
                if time.monotonic() >= deadline:
                    raise self._busy(busy, fix, _read_pid(fd), show_path)
                time.sleep(POLL_S)

    def _busy(self, busy: str, fix: str | None, pid: int | None, show_path: bool) -> LockBusy:
        who = f" (pid {pid})" if pid is not None else ""
        return LockBusy(f"{busy}{who}", pid=pid, fix=fix,
                        path=display_path(self.path) if show_path else None)

    def release(self) -> None:
        """Drop the lock (closing the file drops the ``flock``); idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self.remove:
            # Unlink while still holding it: the next holder creates a fresh file.
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, busy: str, fix: str | None = None, *,
              wait: float | None = 0, show_path: bool = False,
              on_wait: Callable[[int | None], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created with its folder) for the ``with`` body.

    The arguments are those of :meth:`FileLock.acquire`.
    """
    lock = FileLock(path)
    lock.acquire(busy, fix, wait=wait, show_path=show_path, on_wait=on_wait)
    try:
        yield
    finally:
        lock.release()
