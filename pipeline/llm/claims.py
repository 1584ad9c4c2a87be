"""Request claims: a request being paid for by any process of the workspace is not paid again.

Before the client pays for a request it *claims* the request's hash; whoever else wants the
same request meanwhile (a thread of this run, another ``doit``, an L7 or scenario run on the
same ``.scenemake``) waits for the claim, then finds the answer in the response cache. A
claim ends when its holder has cached the answer (or given up), or when the holder dies.

:class:`Claims` is the interface; :class:`WorkspaceClaims` is the backend of one machine's
workspace (one ``flock``-ed file per request hash under ``.scenemake/claims/``, dropped by
the kernel when its holder dies). A shared backend (PostgreSQL advisory locks, for a fleet)
implements the same two methods.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from pipeline.core import cpu_turn
from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path

_HASH_RE = re.compile(r"[0-9a-f]{8,128}")


class Claims(Protocol):
    """Where the claims of a workspace live."""

    def claim(self, request_hash: str) -> AbstractContextManager[None]:
        """Hold the claim on ``request_hash`` for the ``with`` block.

        Blocks while another holder (thread or process) has it, i.e. waits for that
        holder's answer; a dead holder's claim is free at once.
        """
        ...


class WorkspaceClaims:
    """Claims as ``flock``-ed files ``<root>/<hash>.claim`` (one machine, any processes).

    Threads of one process first queue on an in-process lock, so a request wanted by many
    threads costs one open file, not one per thread. The holder removes its file before
    dropping the lock; a waiter that then gets the lock on the removed file opens the new
    one instead, so two holders never think they have the same claim.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._guard = threading.Lock()
        self._local: dict[str, list] = {}  # hash -> [lock, number of threads using it]
        self._swept = False

    def sweep(self) -> int:
        """Remove the claim files of dead holders (a ``kill -9`` leaves its file behind; its
        lock died with it). Returns how many went; a held claim is left alone."""
        removed = 0
        try:
            names = [n for n in os.listdir(self.root) if n.endswith(".claim")]
        except OSError:
            return 0
        for name in names:
            path = self.root / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.unlink(path)  # while holding it, as a holder does on release
                    removed += 1
            except OSError:  # held by a live process, or already gone
                pass
            finally:
                os.close(fd)
        return removed

    @contextmanager
    def claim(self, request_hash: str) -> Iterator[None]:
        """See :meth:`Claims.claim`."""
        if not _HASH_RE.fullmatch(request_hash):  # it becomes a file name
            raise ValueError(f"not a request hash: {request_hash!r}")
        if not self._swept:  # once per process, at its first paid request
            self._swept = True
            self.sweep()
        with self._thread_turn(request_hash):
            fd = self._take(self.root / f"{request_hash}.claim")
            try:
                yield
            finally:
                # Unlink while still holding it: the next one creates a fresh file.
                try:
                    os.unlink(self.root / f"{request_hash}.claim")
                except OSError:
                    pass
                os.close(fd)

    def _take(self, path: Path) -> int:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                self._mkdir()
                continue
            except OSError as exc:
                raise UserError(f"cannot claim an LLM request ({exc.strerror or exc})",
                                path=display_path(path),
                                fix="check that you may write to that folder") from exc
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    with cpu_turn.waiting():  # another process pays for it right now
                        fcntl.flock(fd, fcntl.LOCK_EX)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False  # its holder finished and removed it: take the next one
            except BaseException:
                os.close(fd)
                raise
            if same:
                return fd
            os.close(fd)

    def _mkdir(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the claims folder ({exc.strerror or exc})",
                            path=display_path(self.root),
                            fix="check that you may write to that folder") from exc

    @contextmanager
    def _thread_turn(self, key: str) -> Iterator[None]:
        with self._guard:
            slot = self._local.setdefault(key, [threading.Lock(), 0])
            slot[1] += 1
        try:
            if not slot[0].acquire(blocking=False):
                with cpu_turn.waiting():  # another thread holds it for a whole model call
                    slot[0].acquire()
            try:
                yield
            finally:
                slot[0].release()
        finally:
            with self._guard:
                slot[1] -= 1
                if slot[1] == 0:  # last user: drop it so the table does not grow forever
                    del self._local[key]
