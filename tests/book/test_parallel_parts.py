"""The parts that keep parallel runs fast: the atomic writer, the CPU turn, the DB's
in-memory mirrors and the command-line reading that skips loading what a run cannot use."""

from __future__ import annotations

import os
import signal
import stat
import threading

import pytest

from pipeline.core import cpu_turn, store
from pipeline.core.builddb import SceneDB

# -- the atomic writer ----------------------------------------------------------------

def test_atomic_write_many_writes_every_file_with_umask_permissions(tmp_path):
    files = {str(tmp_path / "a" / "x.json"): b"x" * 100_000, str(tmp_path / "a" / "y.json"): b"y",
             str(tmp_path / "b" / "z.json"): b""}
    old = os.umask(0o027)
    try:
        store.atomic_write_many(files)
    finally:
        os.umask(old)
    for name, data in files.items():
        assert open(name, "rb").read() == data
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o640
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json", "y.json"]


def test_a_failed_rename_leaves_old_files_and_no_temp_files(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(store.WriteError) as err:
        store.atomic_write_many({str(a): b"new a", str(b): b"new b"})
    # one line in the user's terms: the file, the reason, what to do
    assert str(err.value) == (f"{b}: could not write it (No space left on device) (free some "
                              "disk space and run again: no file was left half-written)")
    # each file is whole: the first was replaced, the second kept its old content
    assert a.read_text() == "new a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_a_failed_fsync_replaces_nothing(tmp_path, monkeypatch):
    a = tmp_path / "a.json"
    a.write_text("old")

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(store.WriteError, match=r"a\.json: could not write it \(Input/output"):
        store.atomic_write_many({str(a): b"new", str(tmp_path / "n" / "b.json"): b"b"})
    assert a.read_text() == "old"
    assert not (tmp_path / "n" / "b.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["a.json"]
    assert list((tmp_path / "n").iterdir()) == []


def test_cache_writes_are_atomic_but_not_fsynced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    store.atomic_write_bytes(tmp_path / "c" / "entry.json", b"{}", durable=False)
    assert synced == [] and (tmp_path / "c" / "entry.json").read_bytes() == b"{}"
    store.atomic_write_bytes(tmp_path / "artifact.json", b"{}")
    assert len(synced) == 2  # the file, then its folder


# -- the CPU turn ---------------------------------------------------------------------

def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_waiting_gives_the_turn_to_another_task():
    # A holds the turn and waits for B; B needs the turn to do its work. Without
    # waiting() this deadlocks.
    b_done = threading.Event()
    order = []

    def a():
        with cpu_turn.turn():
            order.append("a works")
            with cpu_turn.waiting():
                assert b_done.wait(10)
            order.append("a works again")

    def b():
        with cpu_turn.turn():
            order.append("b works")
        b_done.set()

    with cpu_turn.turn():  # hold it so that A starts first
        ta = _in_thread(a)
        while not order:
            with cpu_turn.waiting():
                threading.Event().wait(0.01)
        tb = _in_thread(b)
    ta.join(10)
    tb.join(10)
    assert order == ["a works", "b works", "a works again"]


def test_done_releases_the_turn_for_the_rest_of_the_task():
    entered = threading.Event()
    with cpu_turn.turn():
        cpu_turn.done()
        def other():
            with cpu_turn.turn():
                entered.set()
                cpu_turn.done()

        t = _in_thread(other)
        assert entered.wait(10)  # another thread got the turn while this task is not over
    t.join(10)
    # and the turn is free again
    assert cpu_turn._lock.acquire(timeout=1)
    cpu_turn._lock.release()


def test_a_thread_without_a_turn_is_not_affected():
    with cpu_turn.waiting():
        pass
    cpu_turn.done()
    assert cpu_turn._lock.acquire(timeout=1)
    cpu_turn._lock.release()


# -- the build DB's mirrors -----------------------------------------------------------

@pytest.fixture
def keep_sigterm():
    old = signal.getsignal(signal.SIGTERM)  # SceneDB turns SIGTERM into Ctrl-C
    yield
    signal.signal(signal.SIGTERM, old)


def test_failures_events_and_attempts_survive_a_reopen(tmp_path, keep_sigterm):
    path = str(tmp_path / "b.sqlite")
    db = SceneDB(path, None)
    assert db.failure("write:ch001_sc001") is None and db.events("write:ch001_sc001") == []
    db.set_failure("write:ch001_sc001", "boom")
    db.add_event("repair:ch001_sc001", "manual_edit", {"path": "p"})
    assert db.bump_attempt("plan:ch001_sc001") == 1 and db.bump_attempt("plan:ch001_sc001") == 2
    db.dump()
    db = SceneDB(path, None)
    assert db.failure("write:ch001_sc001")["error"] == "boom"
    assert [e["path"] for e in db.events("repair:ch001_sc001")] == ["p"]
    assert db.attempt("plan:ch001_sc001") == 2 and db.attempt("plan:ch001_sc002") == 0
    # a success clears the failure, in the same commit as the record
    db.set("write:ch001_sc001", "_values_:", {"artifact_states": {}})
    db.set("write:ch001_sc001", "deps:", [])
    db.clear_events("repair:ch001_sc001")
    db.dump()
    db = SceneDB(path, None)
    assert db.failure("write:ch001_sc001") is None and db.events("repair:ch001_sc001") == []
    db.dump()


def test_a_result_kept_once_reads_back_whole_and_an_unchanged_save_moves_nothing(
        tmp_path, keep_sigterm):
    """doit saves a task's dict result both as ``result:`` and inside ``_values_:``; the
    record keeps it once and still gives doit (``getargs``, ``result_dep``) the result."""
    import json
    import sqlite3

    path = str(tmp_path / "b.sqlite")
    db = SceneDB(path, None)
    result = {"status": "success", "artifacts": {"prose": "p.md"}}
    db.set("write:ch001_sc001", "_values_:", {**result, "inputs_hash": "abc"})
    db.set("write:ch001_sc001", "result:", result)
    db.set("write:ch001_sc001", "deps:", [])
    db.set("plan:ch001_sc001", "_values_:", {"status": "success"})
    db.set("plan:ch001_sc001", "result:", {"status": "other"})  # not inside: kept whole
    db.set("plan:ch001_sc001", "deps:", [])
    generation = db.generation()
    # the same record saved again (a phase group on every run) moves no generation
    db.set("write:ch001_sc001", "deps:", [])
    assert db.generation() == generation
    db.dump()
    with sqlite3.connect(path) as conn:
        raw = dict(conn.execute("select task_id, task_data from doit"))
    assert "success" not in json.dumps(json.loads(raw["write:ch001_sc001"])["result:"])
    db = SceneDB(path, None)
    assert db.get("write:ch001_sc001", "result:") == result
    assert db.get("plan:ch001_sc001", "result:") == {"status": "other"}
    db.dump()


# -- what a command line needs --------------------------------------------------------

@pytest.mark.parametrize("command, tasks, book_only, plans", [
    ("run", [], True, False),
    ("run", ["plan"], True, True),
    ("run", ["plan:ch001_sc002"], True, True),
    ("run", ["write:ch001_sc001"], True, False),
    ("run", ["plan", "l7"], False, False),
    ("list", [], False, False),
    ("info", ["plan:ch001_sc001"], True, False),
    ("why", ["write:ch001_sc001"], True, False),
    ("rerun-from", ["write:ch001_sc001"], False, False),
    ("run", ["workspace/books/example/draft/x.json"], False, False),
    (None, [], False, False),  # doit's own loader: nothing is known, everything loads
])
def test_what_a_command_line_loads(command, tasks, book_only, plans):
    """The task loader (targets/loader.py) hands the run what the command names; doit
    itself has parsed the options and the variables away."""
    from targets.book.run import Selection

    selection = Selection.of(command, tasks) if command is not None else Selection()
    assert selection.book_only() is book_only
    assert selection.plans_only() is plans
