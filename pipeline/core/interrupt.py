"""What Ctrl-C or SIGTERM does to a run of doit: one line, its children stopped, exit 130/143.

A doit run keeps nothing in memory that its build DB has not committed (one commit per
finished task, an atomic write per artifact, a flock per claim), so a signal ends it at
once, exactly as a kill would, minus what a kill leaves behind: the model servers this
process started (``on_interrupt`` callbacks) and the worker processes of ``doit -n N``
(each stops its own servers the same way) are stopped first, and the traceback doit would
print for a KeyboardInterrupt is never shown. Only the answers in flight are lost; the next
run resumes. (``pipeline/core/cli.py`` handles the other command lines, which unwind.)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
CHILD_GRACE_S = 10.0  # a worker process stops its servers, then exits

_callbacks: list[tuple[int, Callable[[], None]]] = []  # (the registering process, callback)
_lock = threading.Lock()
_stopping = threading.Event()


def on_interrupt(callback: Callable[[], None]) -> None:
    """Run ``callback`` (stop a server, a live display) when a signal ends this process (not
    a fork of it: a ``doit -n N`` worker runs the ones it registered itself)."""
    entry = (os.getpid(), callback)
    with _lock:
        if entry not in _callbacks:
            _callbacks.append(entry)


def stopping() -> bool:
    """Whether a signal is ending this process (nothing new should start)."""
    return _stopping.is_set()


def install(line: str = "scenemake: stopped by {signal}: what finished is kept, the answers "
                        "in flight are lost; run doit again to resume") -> bool:
    """End this process on SIGINT/SIGTERM as the module says, printing ``line`` (its
    ``{signal}`` named). Only the main thread can install handlers: False elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def handler(signum, frame) -> None:
        end(signum, line.format(signal=NAMES.get(signum, f"signal {signum}")))

    for signum in EXIT:
        signal.signal(signum, handler)
    return True


def end(signum: int, line: str) -> None:
    """Stop what this process started, say ``line`` (the main process only), and exit."""
    if _stopping.is_set():
        return  # a second signal while stopping: the first one finishes the job
    _stopping.set()
    for sig in EXIT:  # nothing may interrupt the stop itself
        signal.signal(sig, signal.SIG_IGN)
    with _lock:
        callbacks = [cb for pid, cb in _callbacks if pid == os.getpid()]
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - the next callback and the exit matter more
            pass
    children = multiprocessing.active_children()
    for child in children:  # doit -n N's workers: each stops its own servers, then exits
        try:
            os.kill(child.pid, signal.SIGTERM)
        except OSError:
            pass
    for child in children:
        child.join(CHILD_GRACE_S)
        if child.is_alive():
            child.kill()
    if multiprocessing.parent_process() is None:  # the run's one line, from its main process
        try:
            sys.stdout.flush()
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
    os._exit(EXIT.get(signum, 128 + signum))
