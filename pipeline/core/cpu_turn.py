"""Python work of parallel tasks, one thread at a time; waiting on a model, any number.

Under the GIL, threads doing Python work share the CPU in 5 ms slices. When 16 model
calls end together, their 16 tasks then all finish late *together*, and their next calls
start together: the run moves in waves, with every call waiting for the slowest task's
work. Taking turns (first come, first served) lets each task go back to waiting as soon
as its own work is done, so the calls stay spread out and overlap.

``turn()`` wraps a task's action; ``waiting()`` wraps everything that blocks (a model
call, a lock another task may hold while it waits), so a thread never holds the turn
while it waits; ``done()`` gives it up before the task's closing writes. All are no-ops
for threads that hold no turn (the other families).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_mine = threading.local()


@contextmanager
def turn() -> Iterator[None]:
    """Hold the turn for the Python work of one task (re-entrant in one thread)."""
    if getattr(_mine, "held", False):
        yield
        return
    _lock.acquire()
    _mine.held = True
    try:
        yield
    finally:
        if _mine.held:  # not given up early by done()
            _mine.held = False
            _lock.release()


def done() -> None:
    """The rest of this task is file I/O: give the turn up for good (fsyncs then overlap)."""
    if getattr(_mine, "held", False):
        _mine.held = False
        _lock.release()


@contextmanager
def waiting() -> Iterator[None]:
    """Give the turn up while blocked; take it back (in turn) afterwards."""
    if not getattr(_mine, "held", False):
        yield
        return
    _mine.held = False
    _lock.release()
    try:
        yield
    finally:
        _lock.acquire()
        _mine.held = True
