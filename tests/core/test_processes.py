"""The one child stop (pipeline/core/processes.py): SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys

from pipeline.core.processes import stop_child

IGNORES_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_child_that_ends_on_sigterm_is_stopped_by_it():
    proc = _child("import time\nprint('ready', flush=True)\ntime.sleep(60)")
    stop_child(proc)
    assert proc.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_and_reaped():
    proc = _child(IGNORES_TERM)
    stop_child(proc, grace_s=0.3)
    assert proc.returncode == -signal.SIGKILL


def test_nothing_to_stop_is_fine():
    stop_child(None)
    proc = _child("print('ready', flush=True)")
    proc.wait()
    stop_child(proc)  # already ended: nothing sent, nothing raised
    assert proc.returncode == 0
