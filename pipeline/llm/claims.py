"""Request claims: a request being paid for by any process of the workspace is not paid again.

Before the client pays for a request it *claims* the request's hash; whoever else wants the
same request meanwhile (a thread of this run, another ``doit``, an L7 or scenario run on the
same ``.scenemake``) waits for the claim, then finds the answer in the response cache. A
claim ends when its holder has cached the answer (or given up), or when the holder dies.

:class:`Claims` is the interface; :class:`WorkspaceClaims` is the backend of one machine's
workspace (one lock file per request hash under ``.scenemake/claims/``, taken with the one
lock of pipeline/core/lock.py and dropped by the kernel when its holder dies). The shared
backend (leased claim rows on PostgreSQL, pipeline/llm/shared/store.py) implements the same
method, and queues this process's threads with the same :class:`ThreadTurns`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from pipeline.core import cpu_turn
from pipeline.core.lock import FileLock, remove_if_free

_HASH_RE = re.compile(r"[0-9a-f]{8,128}")


class Claims(Protocol):
    """Where the claims of a workspace live."""

    def claim(self, request_hash: str) -> AbstractContextManager[None]:
        """Hold the claim on ``request_hash`` for the ``with`` block.

        Blocks while another holder (thread or process) has it, i.e. waits for that
        holder's answer; a dead holder's claim is free at once.
        """
        ...


class ThreadTurns:
    """One in-process lock per key, for the threads of this process that want the same
    request: they queue here (first come, first served) before any claim of any backend,
    so a request wanted by many threads costs one claim, not one per thread."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[str, list] = {}  # key -> [lock, number of threads using it]

    @contextmanager
    def turn(self, key: str) -> Iterator[None]:
        """Hold ``key``'s turn for the ``with`` block (waiting for the thread that has it)."""
        with self._guard:
            slot = self._slots.setdefault(key, [threading.Lock(), 0])
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
                    del self._slots[key]


class WorkspaceClaims:
    """Claims as ``flock``-ed files ``<root>/<hash>.claim`` (one machine, any processes).

    Threads of one process first queue on an in-process lock, so a request wanted by many
    threads costs one open file, not one per thread. The holder removes its file before
    dropping the lock; a waiter that then gets the lock on the removed file opens the new
    one instead, so two holders never think they have the same claim.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._turns = ThreadTurns()
        self._swept = False

    def sweep(self) -> int:
        """Remove the claim files of dead holders (a ``kill -9`` leaves its file behind; its
        lock died with it). Returns how many went; a held claim is left alone."""
        try:
            names = [n for n in os.listdir(self.root) if n.endswith(".claim")]
        except OSError:
            return 0
        return sum(remove_if_free(self.root / name) for name in names)

    @contextmanager
    def claim(self, request_hash: str) -> Iterator[None]:
        """See :meth:`Claims.claim`."""
        if not _HASH_RE.fullmatch(request_hash):  # it becomes a file name
            raise ValueError(f"not a request hash: {request_hash!r}")
        if not self._swept:  # once per process, at its first paid request
            self._swept = True
            self.sweep()
        with self._turns.turn(request_hash):
            # Another process paying for it right now: wait for its answer, as long as it
            # takes (its death frees the claim at once).
            lock = FileLock(self.root / f"{request_hash}.claim", remove=True)
            lock.acquire(wait=None)
            try:
                yield
            finally:
                lock.release()
