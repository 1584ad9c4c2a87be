"""Child processes this process started (a model server, the reference assistant)."""

from __future__ import annotations

import subprocess

STOP_GRACE_S = 10.0  # long enough for a server to close its sockets and log


def stop_child(proc: subprocess.Popen | None, grace_s: float = STOP_GRACE_S) -> None:
    """Stop ``proc`` if it still runs: SIGTERM, wait ``grace_s``, then SIGKILL and reap it.

    A child that ignores SIGTERM (stuck in a model load) is still gone when this returns, so
    no server outlives the run that started it, and no zombie is left behind.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child (first thing it runs, or as ``preexec_fn``): the kernel kills it (SIGKILL)
    when the thread that started it ends, so it cannot outlive its parent however the parent
    ends (Linux; a no-op elsewhere). With ``parent_pid``, a parent already gone by now ends
    the child at once."""
    import ctypes
    import os
    import signal
    import sys

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)
