"""One L7 run per session at a time, through the one lock (pipeline/core/lock.py): the
second is refused in one line (exit 2) naming the lock file and the PID that holds it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.l7 import OUT, SESSION, one_line_error

HOLD = """
import sys
from pipeline.core.lock import exclusive
with exclusive(sys.argv[1], "held by the test"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.slow
def test_a_second_run_of_a_session_is_refused_naming_the_holder(l7):
    lock = l7.path(f"workspace/.scenemake/l7/{SESSION}/lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = l7.cli()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    one_line_error(proc, 2, f"another L7 run of session '{SESSION}' is in progress",
                   f"(pid {holder.pid})", "lock", "wait for it to finish")
    assert l7.calls() == []
    assert not l7.path(OUT).exists()
    assert l7.cli().returncode == 0  # the lock went with its holder
