"""The one clock and the one lock (pipeline/core/clock.py, pipeline/core/lock.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.core import clock, lock
from pipeline.core.errors import UserError

HOLD = """
import sys, time
from pipeline.core.lock import exclusive
with exclusive(sys.argv[1], "busy"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_the_clock_has_the_two_documented_forms():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", clock.now_iso())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", clock.now_iso_ms())


@pytest.fixture
def other_process(tmp_path: Path):
    """Another process holding the lock at tmp_path/x.lock until its stdin closes."""
    path = tmp_path / "locks" / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield path, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_a_second_holder_is_refused_naming_the_pid(other_process):
    path, proc = other_process
    assert lock.holder(path) == proc.pid
    with pytest.raises(UserError) as err:
        with lock.exclusive(path, "run X is being captured by another process", "wait"):
            pytest.fail("entered a held lock")
    assert str(err.value) == (f"run X is being captured by another process (pid {proc.pid})"
                              " (wait)")
    assert lock.holder(path) == proc.pid  # refusing did not wipe the holder's PID


def test_show_path_names_the_lock_file(other_process):
    path, proc = other_process
    with pytest.raises(UserError) as err:
        with lock.exclusive(path, "busy", show_path=True):
            pass
    assert str(err.value).startswith(f"{path}: busy (pid {proc.pid})")


def test_a_waiter_gives_up_after_its_timeout(other_process):
    path, proc = other_process
    seen: list[int | None] = []
    with pytest.raises(UserError, match=f"pid {proc.pid}"):
        with lock.exclusive(path, "busy", wait=0.2, on_wait=seen.append):
            pass
    assert seen == [proc.pid]


def test_a_waiter_gets_the_lock_when_the_holder_ends(other_process):
    path, proc = other_process
    seen: list[int | None] = []
    threading.Timer(0.3, proc.stdin.close).start()
    with lock.exclusive(path, "busy", wait=None, on_wait=seen.append):
        got = path.read_text().strip()
    assert seen == [proc.pid]
    assert got == str(os.getpid())


def test_a_dead_holder_leaves_no_lock(tmp_path):
    path = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait(timeout=10)
    assert path.read_text().strip() == str(proc.pid)  # its PID is still written ...
    assert lock.holder(path) is None                    # ... but nobody holds the lock
    with lock.exclusive(path, "busy"):
        pass


def test_the_same_process_twice_is_refused_too(tmp_path):
    """Two runs in one process (threads) exclude each other like two processes."""
    path = tmp_path / "x.lock"
    with lock.exclusive(path, "busy"):
        with pytest.raises(UserError, match="busy"):
            with lock.exclusive(path, "busy"):
                pass
    with lock.exclusive(path, "busy"):  # released on leaving: free again
        pass
    assert lock.holder(path) is None
