"""The model servers a doit run starts (``SCENEMAKE_MODEL=local``) are stopped when the run
ends, however it ends: success, failure, Ctrl-C, SIGTERM; a phase group, ``-n 2`` (the
plain run and a named task are tests/book/test_real_model.py's);
the run's last line counts what the call log counts; a signal is one line, exit 130/143,
and the next run resumes. With ``-n 2`` two servers answer at once (one per core)."""

from __future__ import annotations

import signal

import pytest
from support.project import Project, executed, make_project
from support.smollm import (
    assert_line_counts_the_call_log,
    assert_servers_stopped,
    require_smollm,
    run_watched,
)

from pipeline.core import interrupt

pytestmark = [pytest.mark.llama, pytest.mark.slow]


@pytest.fixture
def project(tmp_path) -> Project:
    require_smollm()
    return Project(make_project(tmp_path / "proj"))


def test_a_phase_group_with_two_at_once_stops_both_servers_and_counts_their_calls(project):
    """doit -n 2: two answers at once, so two servers (one per core); both end with the run
    and every call is counted. (A named task's run is the book test's template change.)"""
    proc, servers = run_watched(project, "-n", "2", "plan", timeout=900)
    assert proc.returncode == 0, proc.out[-2000:]
    assert len(servers) == 2
    assert_servers_stopped(servers)
    assert_line_counts_the_call_log(proc, project, 0)
    assert {c["task"] for c in project.misses()} == {
        f"plan:{s}" for s in ("ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001",
                              "ch002_sc002", "ch002_sc003")}


def test_a_failed_run_stops_its_server(project):
    # an answer must begin within 10 ms, once: the server starts, the plan fails
    project.edit_json("workspace/books/example/book.json", lambda d: d.update(
        endpoint={"timeout_s": 0.01, "max_attempts": 1}))
    proc, servers = run_watched(project, "plan:ch001_sc001", timeout=600)
    assert proc.returncode == 1 and "gave up after 1 attempt(s)" in proc.out, proc.out[-2000:]
    assert "Traceback" not in proc.out
    assert servers
    assert_servers_stopped(servers)
    assert_line_counts_the_call_log(proc, project, 0)


@pytest.mark.parametrize("sig,args", [(signal.SIGINT, ("plan",)),
                                      (signal.SIGTERM, ("-n", "2", "-P", "thread", "plan"))])
def test_a_signal_while_the_model_answers_stops_the_run_and_its_servers(project, sig, args):
    def once_answering(proc):
        # a plan paid (so the server is up and answering the next ones), then the signal
        if not project.misses():
            return False
        proc.send_signal(sig)
        return True

    proc, servers = run_watched(project, *args, timeout=900, on_server=once_answering)
    assert proc.returncode == interrupt.EXIT[sig], proc.out[-2000:]
    assert "Traceback" not in proc.out
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"scenemake: stopped by {interrupt.NAMES[sig]}")
    assert_servers_stopped(servers)
    paid = {c["request_hash"] for c in project.misses()}
    done = {t for t in project.db_tasks() if t.startswith("plan:")}
    assert done  # at least the plan answered before the signal is kept
    n = len(project.calls())
    again, servers = run_watched(project, *args, timeout=900)
    assert again.returncode == 0, again.out[-2000:]
    assert_servers_stopped(servers)
    # only what was in flight is asked again: no finished plan reruns, no request is paid
    # twice
    assert not done & set(executed(again))
    assert not paid & {c["request_hash"] for c in project.misses(n)}
