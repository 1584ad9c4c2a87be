"""Ctrl-C or SIGTERM at any moment of a doit run: one line, exit 130 (SIGINT) or 143
(SIGTERM), what the run started stopped (its model servers, the worker processes of
``doit -n N``), no traceback; only the answers in flight are lost and the next run resumes.
Real signals to real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support.project import REPO, Project, executed

from pipeline.core import interrupt

SCRIPT = textwrap.dedent("""
    import multiprocessing, subprocess, sys, time
    from pipeline.core import interrupt

    def worker():
        # a doit -n N worker: it stops what it started itself (its own callbacks)
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        interrupt.on_interrupt(lambda: (server.kill(), server.wait()))
        print(server.pid, flush=True)
        time.sleep(60)

    interrupt.install("stopped by {signal}")
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    interrupt.on_interrupt(lambda: (server.kill(), server.wait(), print("stopped", flush=True)))
    child = multiprocessing.get_context("fork").Process(target=worker)
    child.start()
    print(server.pid, child.pid, flush=True)
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _gone(pids, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(p) for p in pids)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_what_the_process_started_says_one_line_and_exits(sig):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # the parent's line and the forked worker's come in either order
        lines = sorted((proc.stdout.readline().split() for _ in range(2)), key=len)
        (worker_server,), (server, child) = ([int(x) for x in line] for line in lines)
        assert _alive(server) and _alive(child) and _alive(worker_server)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == interrupt.EXIT[sig] == {signal.SIGINT: 130,
                                                       signal.SIGTERM: 143}[sig]
    assert err.splitlines() == [f"stopped by {interrupt.NAMES[sig]}"]  # one line, no traceback
    assert out.split() == ["stopped"]  # the callback ran, once, in the process that set it
    assert _gone([server, child, worker_server])


def _committed(project: Project) -> set[str]:
    try:
        return project.db_tasks()
    except Exception:  # noqa: BLE001 - the DB may not exist yet
        return set()


@pytest.mark.slow
@pytest.mark.parametrize("sig,args", [(signal.SIGINT, ()), (signal.SIGTERM, ()),
                                      (signal.SIGTERM, ("-n", "2")),
                                      (signal.SIGINT, ("-n", "2"))])
def test_a_doit_run_stopped_by_a_signal_resumes(project: Project, sig, args):
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": "300", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_committed(project)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == interrupt.EXIT[sig], err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == (
        f"scenemake: stopped by {interrupt.NAMES[sig]}: what finished is kept, the answers "
        "in flight are lost; run doit again to resume")
    assert _gone(children)  # whatever the run started
    done = _committed(project) - {"guard"}
    assert len(done) >= 5
    paid = {c["request_hash"] for c in project.misses()}
    again = project.build()
    assert not (set(executed(again)) & done), "a task finished before the signal ran again"
    assert not paid & {c["request_hash"] for c in project.misses()[len(paid):]}
