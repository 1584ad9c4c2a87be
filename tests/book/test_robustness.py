"""Bad input, crashes and the cost of a no-op: one-line errors, nothing lost, nothing re-paid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from support.project import executed, snapshot

OUTLINE = "workspace/books/example/outline.json"


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.out
    assert "Traceback" not in proc.out, proc.out
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("breakage, needles", [
    (lambda p: (p.book / "book.json").write_text('{"title": "x",\n  "model": }'),
     ["workspace/books/example/book.json", "invalid JSON at line 2"]),
    (lambda p: p.edit_json("workspace/books/example/book.json",
                           lambda d: d["model"].update(temperature="hot")),
     ["book.json", "field 'model.temperature'"]),
    (lambda p: p.edit_json(OUTLINE, lambda d: d["chapters"][0]["scenes"][1].update(id="../x")),
     ["outline.json", "field 'chapters.0.scenes.1.id'", "ch001_sc001"]),
    (lambda p: p.edit_json(OUTLINE, lambda d: d["chapters"][0]["scenes"][1].update(
        id="ch001_sc001")), ["duplicate scene id 'ch001_sc001'"]),
    (lambda p: p.edit_json(OUTLINE, lambda d: d["chapters"][1]["scenes"][0].update(
        location="moon")), ["unknown location 'moon'", "chapters.1.scenes.0.location"]),
    (lambda p: p.edit_json(OUTLINE, lambda d: d["chapters"].clear()),
     ["field 'chapters'"]),
    (lambda p: p.edit_json("workspace/books/example/state.json",
                           lambda d: d["characters"]["mara"].pop("name")),
     ["state.json", "field 'characters.mara.name'"]),
    (lambda p: p.edit_json("workspace/books/example/book.json",
                           lambda d: d.update(templates={"write": "templates/mine.j2"})),
     ["field 'templates.write'", "does not exist"]),
    (lambda p: (p.book / "state.json").unlink(), ["state.json", "not found"]),
])
def test_bad_book_input_is_one_line_and_loses_nothing(built, breakage, needles):
    before = snapshot(built.draft)
    n = len(built.calls())
    breakage(built)
    for args in ((), ("list",), ("write:ch001_sc002",)):
        proc = built.doit(*args)
        _one_line_error(proc, *needles)
    assert snapshot(built.draft) == before
    assert built.calls()[n:] == []


def test_fixing_bad_input_resumes_without_cost(built):
    original = (built.root / OUTLINE).read_text()
    (built.root / OUTLINE).write_text("{")
    assert built.doit().returncode != 0
    (built.root / OUTLINE).write_text(original)
    n = len(built.calls())
    assert executed(built.build()) == ["guard"] and built.calls()[n:] == []


def test_template_error_names_file_and_line(built):
    tdir = built.book / "templates"
    tdir.mkdir()
    (tdir / "write.j2").write_text("Task: write.\n{% for x in %}\n")
    proc = built.doit("allow_prompt_change=1", "reason=try a new template")
    assert proc.returncode != 0 and "Traceback" not in proc.out
    assert "workspace/books/example/templates/write.j2: template syntax error on line 2" \
        in proc.out
    (tdir / "write.j2").write_text("Task: write {{ nonsense }}.\n")
    proc = built.doit("allow_prompt_change=1", "reason=try a new template")
    assert "undefined variable" in proc.out and "'nonsense' is undefined" in proc.out
    assert built.ledger("ch001_sc001")["phases"]["write"]["status"] == "fail"


@pytest.mark.slow
def test_unknown_scene_and_bad_scene_ids(built):
    proc = built.doit("write:ch009_sc001")
    assert proc.returncode != 0 and "write:ch009_sc001" in proc.out
    _one_line_error(built.doit("ledger", "../x"), "not of the form chNNN_scNNN")
    _one_line_error(built.doit("ledger", "ch009_sc001"), "unknown scene 'ch009_sc001'")
    _one_line_error(built.doit("rerun-from", "write:../x"), "not of the form chNNN_scNNN")
    _one_line_error(built.doit("rerun-from", "draft:ch001_sc001"), "unknown phase 'draft'")


def _committed(project) -> set[str]:
    db = project.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return {r[0] for r in conn.execute("select task_id from doit")}
    except sqlite3.OperationalError:
        return set()


@pytest.mark.slow
def test_kill_9_mid_parallel_run_keeps_every_finished_task(project):
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": "250", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-n", "4", "-P", "thread"],
                            cwd=project.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    try:
        while len(_committed(project)) < 14 and time.time() < deadline:
            assert proc.poll() is None, "the build finished before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _committed(project) - {"guard"}
    assert len(done) >= 13
    paid = {c["task"] for c in project.misses()}

    again = project.build()
    rerun = set(executed(again)) - {"guard"}
    assert not rerun & done, f"finished before the kill, ran again: {sorted(rerun & done)}"
    assert "edited by hand" not in again.out
    # no successful response was paid for twice
    assert not paid & {c["task"] for c in project.misses()[len(paid):]
                       if c["task"] in done}
    tasks = [c["task"] for c in project.misses()]
    assert len(tasks) == len(set(tasks)), "a finished LLM call was paid twice"
    for sid in ("ch001_sc001", "ch002_sc003"):
        assert project.ledger(sid)["phases"]["commit"]["status"] == "success"


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(project):
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": "250"}
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while len(_committed(project)) < 5 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    done = _committed(project) - {"guard"}
    assert len(done) >= 4
    again = project.build()
    assert not (set(executed(again)) & done)


@pytest.mark.slow
def test_touched_shared_template_is_hashed_once_per_run(project, tmp_path):
    from pipeline.book.workspace import DEFAULT_TEMPLATES

    tdir = project.book / "templates"
    tdir.mkdir()
    shared = tdir / "system.j2"
    shared.write_text((DEFAULT_TEMPLATES / "system.j2").read_text())
    project.build()
    later = time.time_ns() + 5_000_000_000
    os.utime(shared, ns=(later, later))  # touched, content unchanged
    log = tmp_path / "hashed.txt"
    proc = project.build(env={"SCENEMAKE_HASH_LOG": str(log)})
    hashed = log.read_text().splitlines()
    # once per run, though 6 tasks read it; and only the book's own inputs and templates,
    # which are compared by content (no artifact is read on a no-op)
    assert hashed.count("workspace/books/example/templates/system.j2") == 1, hashed
    assert all("/draft/" not in path for path in hashed), hashed
    assert executed(proc) == ["guard"] and "nothing changed" in proc.stdout
    # the next no-op takes the stamp's fast path: no artifact is hashed, no phase is loaded
    log2 = tmp_path / "hashed2.txt"
    proc = project.build(env={"SCENEMAKE_HASH_LOG": str(log2)})
    assert executed(proc) == ["guard"]
    assert all("/draft/" not in path for path in log2.read_text().splitlines())
    assert "nothing changed since the last complete build" in proc.stdout


def test_ledger_is_rewritten_from_the_db(built):
    path = built.draft / "context" / "phase_history" / "ch001_sc003.json"
    truth = json.loads(path.read_text())
    path.write_text('{"scene_id": "ch001_sc003", "phases": {}}')
    proc = built.build("ledger", "--json", "ch001_sc003")
    assert json.loads(proc.stdout) == truth == json.loads(path.read_text())


@pytest.mark.parametrize("args", [(), ("list",), ("plan",)])
def test_an_unreadable_build_db_is_one_error_line_and_is_left_as_it_is(built, args):
    db = built.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    for side in ("-wal", "-shm"):
        (db.parent / (db.name + side)).unlink(missing_ok=True)
    db.write_bytes(b"not a database, not a database, not a database")
    drafts = snapshot(built.draft)

    proc = built.doit(*args)

    assert proc.returncode != 0
    assert "Traceback" not in proc.out
    errors = [line for line in proc.out.splitlines() if line.strip()]
    assert len(errors) == 1 and "the build DB is not a sqlite database" in errors[0], proc.out
    assert "example.sqlite" in errors[0] and "move it away" in errors[0]
    assert db.read_bytes() == b"not a database, not a database, not a database"
    assert snapshot(built.draft) == drafts


@pytest.mark.slow
@pytest.mark.parametrize("blocker", ["file for the phase folder", "folder for the artifact"])
def test_something_in_the_way_of_an_artifact_is_one_error_line_then_resumes(built, blocker):
    plan = built.artifact("ch001_sc001", "plan")
    others = snapshot(built.draft / "scenes" / "ch002_sc001")
    shutil.rmtree(plan)
    if blocker == "file for the phase folder":
        plan.write_text("in the way\n")
        reason = "a file stands where a folder belongs"
    else:
        (plan / "scene_card.json").mkdir(parents=True)
        reason = "a folder stands where the file belongs"
    calls = len(built.calls())

    proc = built.doit()

    assert proc.returncode != 0 and "Traceback" not in proc.out, proc.out
    line = next(ln for ln in proc.out.splitlines() if "could not write it" in ln)
    assert "ch001_sc001/plan/scene_card.json" in line and reason in line
    assert not list(built.draft.rglob(".*.tmp"))
    assert snapshot(built.draft / "scenes" / "ch002_sc001") == others

    if plan.is_file():
        plan.unlink()
    else:
        shutil.rmtree(plan)
    built.build()
    assert built.misses(calls) == []  # the answers were cached: nothing paid twice
    assert (plan / "scene_card.json").is_file()


@pytest.mark.parametrize("where", ["environment", "book.json"])
def test_a_base_url_that_is_not_a_url_is_refused_before_any_call(project, where):
    env = {"SCENEMAKE_MODEL": "openai:some-model"}
    if where == "environment":
        env["SCENEMAKE_BASE_URL"] = "localhost:8080/v1"
        expected = ("SCENEMAKE_BASE_URL=localhost:8080/v1 is not an http:// or https:// URL "
                    "(e.g. http://127.0.0.1:8080/v1)")
    else:
        project.edit_json("workspace/books/example/book.json",
                          lambda d: d.setdefault("endpoint", {}).update(
                              base_url="localhost:8080/v1"))
        expected = ("workspace/books/example/book.json: field 'endpoint.base_url': "
                    "'localhost:8080/v1' is not an http:// or https:// URL "
                    "(e.g. http://127.0.0.1:8080/v1)")

    proc = project.doit(env=env)

    assert proc.returncode == 3
    assert proc.out.strip() == f"ERROR: {expected}", proc.out
    assert project.calls() == []


def test_a_ledger_left_behind_by_a_kill_is_rewritten_by_the_next_run(built):
    # A kill between a task's DB commit and its ledger export leaves the task marked.
    path = built.draft / "context" / "phase_history" / "ch001_sc002.json"
    truth = json.loads(path.read_text())
    path.write_text('{"scene_id": "ch001_sc002", "phases": {}}')
    db = built.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("insert into sm_dirty values ('commit:ch001_sc002')")
    n = len(built.calls())
    assert executed(built.build()) == ["guard"] and built.calls()[n:] == []
    assert json.loads(path.read_text()) == truth
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from sm_dirty").fetchone()[0] == 0


def _fast(proc) -> bool:
    return executed(proc) == ["guard"] and "-- plan:" not in proc.stdout


@pytest.mark.slow
def test_plain_noop_takes_the_stamp_fast_path_until_anything_moves(built):
    assert _fast(built.build())
    # variables cannot change a build in which nothing moved
    assert _fast(built.build("book=example"))
    assert _fast(built.build("force_resume=1", "budget=2"))
    proc = built.doit("force_resme=1")  # but a typo is still refused
    assert proc.returncode != 0 and "unknown variable 'force_resme=1'" in proc.out
    # a forgotten task (any command that changes the DB) ends the fast path
    built.build("forget", "plan:ch001_sc001")
    n = len(built.calls())
    proc = built.build()
    assert "plan:ch001_sc001" in executed(proc) and built.misses(n) == []
    assert _fast(built.build())
    # so does the model named again by the environment (the stamp is not trusted; the
    # records show every task up to date for it), task names, an option that changes what runs
    proc = built.build(env={"SCENEMAKE_MODEL": "offline:offline-1"})
    assert "match their build records" in proc.stdout and built.misses(n) == []
    assert not _fast(built.build("commit:ch002_sc003"))
    # but not how tasks run or report
    built.build()  # (stamped again for this environment)
    assert _fast(built.build("-n", "2", "-P", "thread"))
    assert _fast(built.build("--process=2", "-v", "2", "--continue"))
    # and an edited input: the brief of one scene replans it
    built.edit_json(OUTLINE, lambda d: d["chapters"][0]["scenes"][0].update(brief="Rain."))
    n = len(built.calls())
    proc = built.build()
    assert "plan:ch001_sc001" in executed(proc) and built.misses(n)
    assert _fast(built.build())


@pytest.mark.slow
def test_fast_path_never_hides_a_hand_edit_or_a_missing_file(built):
    assert _fast(built.build())
    prose = built.artifact("ch001_sc003", "write/prose.md")
    prose.write_text(prose.read_text() + "An edit.\n")
    proc = built.doit()
    assert proc.returncode != 0 and "edited by hand" in proc.out
    built.build("force_resume=1")
    pack = built.artifact("ch002_sc001", "continuity_pack/pack.json")
    pack.unlink()
    proc = built.build()
    assert "continuity_pack:ch002_sc001" in executed(proc) and pack.exists()
