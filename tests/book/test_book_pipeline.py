"""The book pipeline end to end through real doit commands: resume, ledger, rules.

Every assertion is on what a user sees: the LLM call log, the ledger, exit codes, files.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from support.project import executed, snapshot

SCENES = ["ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003"]
PHASES = ["plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit"]
LLM = ["plan", "continuity_pack", "write", "repair", "state_repair"]


@pytest.mark.slow
def test_full_build_then_resume_costs_nothing(project):
    proc = project.build()
    assert len(project.misses()) == len(SCENES) * len(LLM)
    assert {(c["task"]) for c in project.calls()} == {f"{p}:{s}" for p in LLM for s in SCENES}
    for sid in SCENES:
        ledger = project.ledger(sid)
        assert list(ledger["phases"]) == PHASES
        assert all(e["status"] == "success" for e in ledger["phases"].values())
        assert project.artifact(sid, "commit/post_state.json").exists()
    assert set(executed(proc)) >= {f"{p}:{s}" for p in PHASES for s in SCENES}

    n = len(project.calls())
    again = project.build()
    assert project.calls()[n:] == []
    assert executed(again) == ["guard"]


@pytest.mark.slow
def test_call_log_lines_carry_every_field(built):
    fields = {"book", "task", "scene", "phase", "request_hash", "cache", "provider", "model",
              "tokens_in", "tokens_out", "cost_usd", "latency_ms", "timestamp"}
    calls = built.calls()
    assert len(calls) == 30  # 6 scenes x 5 LLM phases: an empty log is a failure, not a pass
    for call in calls:
        assert fields <= set(call)
        assert call["book"] == "example" and call["provider"] == "offline"


def test_ledger_follows_spec_schema(built):
    ledger = built.ledger("ch001_sc002")
    assert ledger["scene_id"] == "ch001_sc002"
    write = ledger["phases"]["write"]
    assert set(write["artifacts"]) == {"prompt", "response", "prose", "state_patch"}
    assert write["template_set"]["phase"].endswith("write.j2")
    assert write["template_set"]["system"].endswith("system.j2")
    assert len(write["prompt_hash"]) == 64
    assert write["pre_state_path"].endswith("ch001_sc002/preflight/state.json")
    assert write["pre_state_hash"]
    for phase in ("repair", "state_repair", "lint"):
        assert ledger["phases"][phase]["pre_state_path"] == write["pre_state_path"]
    for phase in ("plan", "continuity_pack", "write", "repair", "state_repair"):
        assert ledger["phases"][phase]["prompt_hash"]
    # `doit ledger` prints the same thing, rewritten from the DB
    proc = built.build("ledger", "--json", "ch001_sc002")
    assert json.loads(proc.stdout) == ledger


@pytest.mark.slow
def test_stop_after_write_then_resume_at_repair(project):
    proc = project.build("write:ch001_sc001")
    assert sorted(c["task"] for c in project.calls()) == sorted(
        ["plan:ch001_sc001", "continuity_pack:ch001_sc001", "write:ch001_sc001"])
    assert "repair:ch001_sc001" not in executed(proc)
    n = len(project.calls())
    project.build("repair:ch001_sc001")
    assert [c["task"] for c in project.calls()[n:]] == ["repair:ch001_sc001"]
    # the rest of the book resumes without paying for what exists
    n = len(project.calls())
    project.build()
    tasks = {c["task"] for c in project.calls()[n:]}
    assert not tasks & {"plan:ch001_sc001", "continuity_pack:ch001_sc001",
                        "write:ch001_sc001", "repair:ch001_sc001"}
    assert len(project.misses()) == len(SCENES) * len(LLM)


def _override_write_template(project, text_suffix: str) -> str:
    from pipeline.book.workspace import DEFAULT_TEMPLATES

    tdir = project.book / "templates"
    tdir.mkdir(exist_ok=True)
    src = (DEFAULT_TEMPLATES / "write.j2").read_text()
    (tdir / "write.j2").write_text(src + text_suffix)
    return "workspace/books/example/templates/write.j2"


@pytest.mark.slow
def test_changed_template_fails_fast_then_is_accepted_with_reason(project):
    _override_write_template(project, "")
    project.build()
    before = snapshot(project.draft / "scenes")
    n = len(project.calls())
    path = _override_write_template(project, "Keep the sentences short.\n")

    refused = project.doit()
    assert refused.returncode != 0
    assert path in refused.out and "write:ch001_sc001" in refused.out
    assert "6 task(s)" in refused.out and "allow_prompt_change=1" in refused.out
    assert "Traceback" not in refused.out
    assert project.calls()[n:] == [] and snapshot(project.draft / "scenes") == before

    no_reason = project.doit("allow_prompt_change=1")
    assert no_reason.returncode != 0 and "reason" in no_reason.out
    assert project.calls()[n:] == []

    old = project.ledger("ch001_sc002")["phases"]["write"]["prompt_hash"]
    project.build("allow_prompt_change=1", "reason=tighter tone")
    # the write prompt changed: write reruns, and what depends on its output too
    tasks = {c["task"] for c in project.misses(n)}
    assert {f"write:{s}" for s in SCENES} <= tasks
    assert {f"repair:{s}" for s in SCENES} <= tasks
    # plans don't read the state; the first scene's pack comes before its write
    assert not any(t.startswith("plan:") for t in tasks)
    assert "continuity_pack:ch001_sc001" not in tasks
    write = project.ledger("ch001_sc002")["phases"]["write"]
    assert write["prompt_hash_prev"] == old
    assert write["prompt_hash_new"] == write["prompt_hash"] != old
    assert write["prompt_update_reason"] == "tighter tone"
    assert project.ledger("ch001_sc002")["phases"]["lint"]["status"] == "success"

    # reverting the template is a change too, but costs no call: the cache has it
    n = len(project.calls())
    _override_write_template(project, "")
    assert project.doit().returncode != 0
    project.build("allow_prompt_change=1", "reason=revert")
    assert project.misses(n) == []
    assert project.calls()[n:]  # served, from the cache


def test_changed_system_prompt_reports_every_phase(built):
    from pipeline.book.workspace import DEFAULT_TEMPLATES

    tdir = built.book / "templates"
    tdir.mkdir()
    (tdir / "system.j2").write_text((DEFAULT_TEMPLATES / "system.j2").read_text() + "Be brief.\n")
    proc = built.doit()
    assert proc.returncode != 0
    assert "36 task(s)" in proc.out  # the 30 LLM phases and lint (its repair rounds)
    assert "pipeline/book/templates/system.j2 -> workspace/books/example/templates/system.j2" \
        in proc.out


def test_missing_artifact_reruns_that_phase_for_free(built):
    prose = built.artifact("ch001_sc002", "write/prose.md")
    content = prose.read_bytes()
    repair_before = built.ledger("ch001_sc002")["phases"]["repair"]["timestamp"]
    prose.unlink()
    n = len(built.calls())
    proc = built.build()
    assert "write:ch001_sc002" in executed(proc)
    assert prose.read_bytes() == content
    assert built.misses(n) == []
    assert [c["task"] for c in built.calls()[n:]] == ["write:ch001_sc002"]
    # same output, so nothing downstream reruns
    assert "repair:ch001_sc002" not in executed(proc)
    assert built.ledger("ch001_sc002")["phases"]["repair"]["timestamp"] == repair_before


@pytest.mark.slow
def test_manual_edit_of_prose_fails_fast_then_force_resume_builds_on_it(built):
    prose = built.artifact("ch001_sc002", "write/prose.md")
    edited = prose.read_text() + "\nMara kept the key.\n"
    prose.write_text(edited)
    before = snapshot(built.draft / "scenes")
    n = len(built.calls())

    proc = built.doit()
    assert proc.returncode != 0
    assert "workspace/books/example/draft/scenes/ch001_sc002/write/prose.md" in proc.out
    assert "edited by hand" in proc.out and "force_resume=1" in proc.out
    assert built.calls()[n:] == [] and snapshot(built.draft / "scenes") == before

    proc = built.build("force_resume=1")
    assert prose.read_text() == edited  # never overwritten
    repaired = {c["task"] for c in built.misses(n)}
    assert "repair:ch001_sc002" in repaired and "write:ch001_sc002" not in repaired
    prompt = json.loads(built.artifact("ch001_sc002", "repair/prompt.json").read_text())
    assert "Mara kept the key." in prompt["messages"][1]["content"]
    entry = built.ledger("ch001_sc002")["phases"]["write"]
    assert entry["status"] == "success"
    [edit] = entry["manual_edits"]
    assert edit["path"].endswith("write/prose.md") and edit["hash_prev"] != edit["hash_new"]

    n = len(built.calls())
    assert executed(built.build()) == ["guard"] and built.calls()[n:] == []


def test_rerun_from_regenerates_a_hand_edited_artifact(built):
    prose = built.artifact("ch001_sc002", "write/prose.md")
    prose.write_text("A hand-written scene that the writer no longer wants.\n")
    n = len(built.calls())
    built.build("rerun-from", "write:ch001_sc002")
    assert "no longer wants" not in prose.read_text()
    write = [c for c in built.calls()[n:] if c["task"] == "write:ch001_sc002"]
    assert write and write[0]["cache"] == "miss" and write[0]["attempt"] == 1
    assert built.ledger("ch001_sc002")["phases"]["write"]["attempt"] == 1


@pytest.mark.slow
def test_manual_edit_of_state_patch(built):
    patch_file = built.artifact("ch002_sc001", "write/state_patch.json")
    patch = json.loads(patch_file.read_text())
    patch["events"].append("Ines burned the harbour records.")
    patch_file.write_text(json.dumps(patch, indent=2))
    n = len(built.calls())
    proc = built.doit()
    assert proc.returncode != 0 and "write/state_patch.json" in proc.out
    assert built.calls()[n:] == []
    built.build("force_resume=1")
    assert "repair:ch002_sc001" in {c["task"] for c in built.misses(n)}
    assert json.loads(patch_file.read_text())["events"][-1] == "Ines burned the harbour records."


def test_invalid_hand_edit_is_a_clear_error(built):
    patch_file = built.artifact("ch002_sc001", "write/state_patch.json")
    patch_file.write_text("{ not json")
    proc = built.doit("force_resume=1")
    assert proc.returncode != 0
    assert "write/state_patch.json: invalid JSON" in proc.out
    assert "Traceback" not in proc.out
    assert built.ledger("ch002_sc001")["phases"]["repair"]["status"] == "fail"


def test_lint_failed_previously_resume_reruns_lint_only(built):
    cfg = "workspace/books/example/book.json"
    built.edit_json(cfg, lambda d: d["lint"].update(min_words=100000))
    n = len(built.calls())
    proc = built.doit()
    assert proc.returncode == 1
    lint = built.ledger("ch001_sc001")["phases"]["lint"]
    assert lint["status"] == "fail" and "min_words" not in lint  # no stale success fields
    assert "fewer than 100000" in lint["error"]
    assert built.calls()[n:] == []
    report = json.loads(built.artifact("ch001_sc001", "lint/report.json").read_text())
    assert report["passed"] is False

    built.edit_json(cfg, lambda d: d["lint"].update(min_words=60))
    proc = built.build()
    ran = executed(proc)
    assert "lint:ch001_sc001" in ran
    assert not [t for t in ran if t.startswith(("repair:", "state_repair:", "write:"))]
    assert built.calls()[n:] == []
    ledger = built.ledger("ch001_sc001")
    lint = ledger["phases"]["lint"]
    assert lint["status"] == "success" and "error" not in lint
    db = built.root / "workspace" / ".scenemake" / "books" / "example.sqlite"
    with sqlite3.connect(db) as conn:  # the failure went with the success's commit
        assert conn.execute("select count(*) from sm_failures").fetchone()[0] == 0
    # retries update the phase in place: one entry per phase, never duplicates
    raw = (built.draft / "context" / "phase_history" / "ch001_sc001.json").read_text()
    assert raw.count('"lint": {') == 1


def test_pre_state_change_reruns_unless_forced(built):
    state = "workspace/books/example/state.json"
    built.edit_json(state, lambda d: d["characters"]["ines"].update(condition="uneasy"))
    n = len(built.calls())
    forced = built.build("force_resume=1")
    assert built.misses(n) == [] and built.calls()[n:] == []
    assert "preflight:ch001_sc001" in executed(forced)
    entry = built.ledger("ch001_sc001")["phases"]["write"]
    [accepted] = entry["forced_resume"]
    assert accepted["path"].endswith("ch001_sc001/preflight/state.json")
    assert accepted["hash_prev"] != accepted["hash_new"] == entry["pre_state_hash"]
    ran = executed(forced)
    assert {"preflight:ch001_sc001", "lint:ch001_sc001", "commit:ch001_sc001"} <= set(ran)
    patch = json.loads(built.artifact("ch001_sc001", "state_repair/state_patch.json").read_text())
    if not any(c["id"] == "ines" and c["condition"] for c in patch["characters"]):
        post = json.loads(built.artifact("ch001_sc001", "commit/post_state.json").read_text())
        assert post["characters"]["ines"]["condition"] == "uneasy"
    # accepted once, recorded once: the next run is a no-op without the flag
    n = len(built.calls())
    assert executed(built.build()) == ["guard"] and built.calls()[n:] == []


@pytest.mark.slow
def test_pre_state_change_without_force_reruns_the_phase(built):
    state = "workspace/books/example/state.json"
    built.edit_json(state, lambda d: d["characters"]["ines"].update(condition="uneasy"))
    n = len(built.calls())
    built.build()
    tasks = {c["task"] for c in built.misses(n)}
    assert "continuity_pack:ch001_sc001" in tasks and "write:ch001_sc001" in tasks
    assert not any(t.startswith("plan:") for t in tasks)


@pytest.mark.slow
def test_rerun_from_forgets_downstream_and_later_scenes(built):
    dry = built.build("rerun-from", "--dry-run", "write:ch001_sc002")
    listed = [line.split()[-1] for line in dry.stdout.splitlines() if line.startswith("would")]
    assert "write:ch001_sc002" in listed and "commit:ch002_sc003" in listed
    assert "plan:ch001_sc002" not in listed and "write:ch001_sc001" not in listed
    assert "nothing changed" in dry.stdout
    n = len(built.calls())
    built.build("rerun-from", "write:ch001_sc002")
    tasks = {c["task"] for c in built.misses(n)}
    assert "write:ch001_sc002" in tasks and not any(t.startswith("plan:") for t in tasks)
    assert "write:ch001_sc001" not in tasks
    assert built.ledger("ch001_sc002")["phases"]["write"]["attempt"] == 1


def test_rerun_all_gives_fresh_samples(built):
    n = len(built.calls())
    built.build("rerun-from", "--all")
    assert len(built.misses(n)) == len(SCENES) * len(LLM)
    assert all(c["attempt"] == 1 for c in built.calls()[n:])


@pytest.mark.slow
def test_reset_archives_phase_history_and_forgets(built):
    proc = built.build("reset")
    assert "forgot" in proc.stdout
    archives = list((built.draft / "context" / "phase_history_archive").iterdir())
    assert len(archives) == 1 and (archives[0] / "ch001_sc001.json").exists()
    assert not any(t.startswith(tuple(p + ":" for p in PHASES)) for t in built.db_tasks())
    assert list((built.draft / "context" / "phase_history").iterdir()) == []
    n = len(built.calls())
    built.build()
    assert built.misses(n) == []  # rebuilt from the response cache
    assert built.ledger("ch002_sc003")["phases"]["commit"]["status"] == "success"


def test_parallel_plans(project):
    project.build("-n", "4", "-P", "thread", "plan")
    assert sorted(c["task"] for c in project.calls()) == sorted(f"plan:{s}" for s in SCENES)


def test_unknown_variable_is_refused(built):
    n = len(built.calls())
    proc = built.doit("force_resme=1")
    assert proc.returncode != 0 and "unknown variable 'force_resme=1'" in proc.out
    assert "Traceback" not in proc.out
    assert built.calls()[n:] == []


@pytest.mark.slow
def test_several_books_keep_short_task_names_and_separate_dbs(project):
    import shutil

    shutil.copytree(project.book, project.book.parent / "other")
    project.edit_json("workspace/books/other/book.json", lambda d: d.update(title="Other"))
    project.build("book=other", "plan:ch001_sc001")
    assert [(c["book"], c["task"]) for c in project.calls()] == [("other", "plan:ch001_sc001")]
    assert (project.root / "workspace/books/other/draft/scenes/ch001_sc001/plan").is_dir()
    assert not project.draft.exists()  # the default book is untouched
    assert (project.root / "workspace/.scenemake/books/other.sqlite").exists()
    # the workspace default is `example`
    proc = project.build("plan:ch001_sc001")
    assert "plan:ch001_sc001" in executed(proc) and project.calls()[-1]["book"] == "example"
    bad = project.doit("book=nope", "list")
    assert bad.returncode != 0 and "no book 'nope'" in bad.out
