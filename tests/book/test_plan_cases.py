"""Cases where a plain ``doit`` once decided otherwise than doit checking every task itself
(issue #23): each copy of a project is run both ways and must agree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from support.agreement import OUTLINE, SCENES, STAMP, clone, keep_mtime, twin_runs
from support.project import Project, executed

pytestmark = pytest.mark.slow


def test_a_template_override_created_during_a_run_is_seen_by_every_later_run(built, tmp_path):
    built.edit_json(OUTLINE, lambda d: d["chapters"][0]["scenes"][0].update(
        brief="Mara finds the ferry gone and the landing awash."))
    run = subprocess.Popen([sys.executable, "-m", "doit"], cwd=built.root,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": "150"})
    card = built.artifact("ch001_sc001", "plan/scene_card.json")
    first = card.stat().st_mtime_ns
    deadline = time.time() + 60
    while card.stat().st_mtime_ns == first and time.time() < deadline:
        time.sleep(0.02)  # the run has loaded the book and started building
    override = built.book / "templates" / "write.j2"
    override.parent.mkdir()
    override.write_text("Write the scene in one paragraph.\n")
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    # the run built with the templates it loaded; the override is a prompt change now
    _, outcome, plain, _ = twin_runs(built, tmp_path)
    assert outcome.code == 1 and outcome.prompt_changes, plain.stdout + plain.stderr
    after = twin_runs(built, tmp_path / "again", args=("allow_prompt_change=1", "reason=x"))[1]
    assert {t for t in after.ran if t.startswith("write:")} == {f"write:{s}" for s in SCENES}


def test_a_hand_edit_of_a_removed_scenes_artifact_is_refused_on_every_path(built, tmp_path):
    built.edit_json(OUTLINE, lambda d: d["chapters"][0]["scenes"].pop(1))  # ch001_sc002
    assert built.doit().returncode == 0
    prose = built.artifact("ch001_sc002", "write/prose.md")
    prose.write_text(prose.read_text() + "An edit.\n")
    _, outcome, plain, _ = twin_runs(built, tmp_path)
    assert outcome.code != 0 and outcome.edits == (str(prose.relative_to(built.root)),), \
        plain.stdout + plain.stderr
    accepted = twin_runs(built, tmp_path / "force", args=("force_resume=1",))[0]
    assert accepted.doit().returncode == 0  # the edit is recorded: no refusal after it


def test_a_folder_in_place_of_an_artifact_is_one_line_without_a_stamp(built, tmp_path):
    (built.root / STAMP).unlink()
    card = built.artifact("ch001_sc003", "plan/scene_card.json")
    card.unlink()
    card.mkdir()
    _, outcome, plain, _ = twin_runs(built, tmp_path)
    assert outcome.code != 0 and not outcome.traceback, plain.stdout + plain.stderr


def test_a_same_size_brief_edit_with_its_mtime_put_back_is_rebuilt(built, tmp_path):
    outline = built.root / OUTLINE
    text = outline.read_text()
    with keep_mtime(outline):
        outline.write_text(text.replace("lighthouse", "lightHouse", 1))
    assert len(outline.read_bytes()) == len(text.encode())
    _, outcome, _, _ = twin_runs(built, tmp_path)
    assert outcome.ran and outcome.paid


def test_the_books_own_inputs_are_compared_by_content_whatever_their_mtime(built, tmp_path):
    state = built.root / "workspace/books/example/state.json"
    data = state.read_text()
    with keep_mtime(state):
        state.write_text(data.replace("ferry mechanic", "ferry engineer", 1))
    assert "preflight:ch001_sc001" in twin_runs(built, tmp_path)[1].ran


def test_a_task_killed_between_its_files_and_its_record_runs_again(built, tmp_path):
    before = built.edit_json
    original = (built.root / OUTLINE).read_text()
    before(OUTLINE, lambda d: d["chapters"][1]["scenes"][2].update(
        brief="Wren climbs to the lamp room alone and finds the logbook open."))
    killed = built.doit(env={"SCENEMAKE_KILL_AT": "written@/ch002_sc003/plan/:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    (built.root / OUTLINE).write_text(original)  # the edit is given up
    plain, outcome, _, _ = twin_runs(built, tmp_path)
    assert "plan:ch002_sc003" in outcome.ran
    # the card on disk is again the one the restored brief asks for: a clean build's
    clean = Project(tmp_path / "clean")
    shutil.copytree(built.root, clean.root)
    shutil.rmtree(clean.draft)
    shutil.rmtree(clean.root / "workspace/.scenemake/books")
    assert clean.doit().returncode == 0
    for sid in SCENES:
        for rel in ("plan/scene_card.json", "repair/prose.md", "commit/post_state.json"):
            assert plain.artifact(sid, rel).read_bytes() == clean.artifact(sid, rel).read_bytes()


def test_process_mode_is_refused_in_one_line_and_n_2_counts_its_calls(project):
    refused = project.doit("-n", "2", "-P", "process")
    assert refused.returncode != 0 and "Traceback" not in refused.stdout + refused.stderr
    assert "-P thread" in refused.stdout + refused.stderr
    assert project.calls() == []
    built = project.doit("-n", "2")  # threads by default: the DB is written by one process
    assert built.returncode == 0, built.stdout + built.stderr
    paid = len(project.misses())
    assert paid > 0 and f"{paid} call(s) paid" in built.stdout


@pytest.mark.parametrize("garbage", ["[]", "null", '"x"', "3", '{"version": 4, "files": 3}',
                                     '{"version": 4, "files": {"a/": [[1]]}}', "{"])
def test_a_stamp_scenemake_did_not_write_means_check_everything(built, tmp_path, garbage):
    (built.root / STAMP).write_text(garbage)
    _, outcome, plain, _ = twin_runs(built, tmp_path)
    assert outcome.code == 0 and not outcome.traceback and not outcome.ran, plain.stdout


def test_why_says_what_the_run_will_do_after_an_intermediate_is_deleted(built):
    built.artifact("ch002_sc003", "write/prose.md").unlink()
    why = built.doit("why", "repair:ch002_sc003", "write:ch002_sc003")
    assert why.returncode == 0, why.stdout + why.stderr
    repair, _, write = why.stdout.partition("\nwrite:ch002_sc003")
    assert "repair:ch002_sc003 would run" not in why.stdout, why.stdout
    assert "only if" in repair and "write:ch002_sc003" in repair, why.stdout
    assert write.startswith(" would run") and "missing" in write, why.stdout
    run = built.doit()
    assert "write:ch002_sc003" in executed(run) and "repair:ch002_sc003" not in executed(run)


def test_every_twin_agrees_on_a_copy_with_nothing_to_do(built, tmp_path):
    a = clone(built, tmp_path / "x")
    assert json.loads((a.root / STAMP).read_text())  # the copy keeps the stamp
    _, outcome, _, _ = twin_runs(a, tmp_path / "twins")
    assert outcome.code == 0 and not outcome.ran and not outcome.paid


@pytest.mark.llama
def test_a_replaced_local_model_file_is_seen_by_every_path(project, tmp_path):
    """``SCENEMAKE_MODEL=local:PATH.gguf``: requests name the model by its blake3, so a
    replaced file changes every LLM task; the plan watches the file too."""
    from support.llama import require_llama, write_tiny_gguf

    require_llama()
    model = write_tiny_gguf(tmp_path / "tiny.gguf", seed=0)
    project.edit_json(OUTLINE, lambda d: (d["chapters"].__delitem__(slice(1, None)),
                                          d["chapters"][0]["scenes"].__delitem__(slice(1, None))))
    project.edit_json("workspace/books/example/book.json", lambda d: (
        d["lint"].update(min_words=0, forbidden=[]),
        d.update(endpoint={"response_format": "json_object"})))
    env = {"SCENEMAKE_MODEL": f"local:{model}"}
    first = project.doit(env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "nothing changed" in project.doit(env=env, timeout=600).stdout  # the stamp holds
    write_tiny_gguf(model, seed=1)  # another model at the same path
    _, outcome, plain, _ = twin_runs(project, tmp_path / "twins", env=env)
    assert "plan:ch001_sc001" in outcome.ran and outcome.paid, plain.stdout + plain.stderr


def test_rerun_from_does_not_call_the_manuscript_edited_by_hand(built):
    """issue #22 item 2: a hand-edit warning means a hand edit."""
    proc = built.doit("rerun-from", "write:ch001_sc002")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "edited by hand" not in proc.stdout + proc.stderr
    assert not list(built.draft.glob("manuscript.edited-*"))
    assert "manuscript" in executed(proc)  # rebuilt from the new prose all the same
    md = built.draft / "manuscript.md"
    md.write_text(md.read_text() + "A note by hand.\n")  # a real one is still kept
    proc = built.doit("rerun-from", "write:ch001_sc003")
    assert "manuscript.md was edited by hand" in proc.stdout, proc.stdout
    assert len(list(built.draft.glob("manuscript.edited-*.md"))) == 1


def test_a_hand_edited_manuscript_is_kept_on_every_path(built, tmp_path):
    md = built.draft / "manuscript.md"
    md.write_text(md.read_text() + "A note by hand.\n")
    plain, outcome, _, _ = twin_runs(built, tmp_path)
    assert outcome.code == 0 and not outcome.edits
    assert (plain.draft / "manuscript.md").read_text().endswith("A note by hand.\n")


def _status(project: Project) -> dict[str, str]:
    proc = project.doit("list", "--all", "--status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines()
            if line[:2] in ("R ", "U ", "M ", "I ")}


def test_list_status_says_what_the_run_will_do(built):
    """``doit list --status`` asks the same explanation as ``doit why``: downstream of a
    changed template runs too (doit's own status said U), downstream of a regenerated file
    only if it comes out different (doit's said R)."""
    built.artifact("ch002_sc003", "write/prose.md").unlink()
    status = _status(built)
    assert status["write:ch002_sc003"] == "R" and status["repair:ch002_sc003"] == "M"
    assert status["plan:ch002_sc003"] == "U" and status["write:ch001_sc001"] == "U"
    ran = executed(built.build())
    assert "write:ch002_sc003" in ran and "repair:ch002_sc003" not in ran
    built.edit_json(OUTLINE, lambda d: d["chapters"][1]["scenes"][2].update(
        brief="Wren climbs to the lamp room alone."))
    status = _status(built)
    assert status["plan:ch002_sc003"] == "R"
    assert status["write:ch002_sc003"] == "R" and status["commit:ch002_sc003"] == "R"
    assert status["plan:ch002_sc002"] == "U"


def _row(table: str, phase: str) -> list[str]:
    line = next(line for line in table.splitlines() if f"│ {phase} " in line)
    return [c.strip() for c in line.split("│") if c.strip()]


def test_info_and_estimate_ask_the_plan_list_status_shows(built):
    """``doit info``'s status and ``doit estimate``'s rows come from the plan that ``doit
    list --status`` and ``doit why`` show: downstream of a changed template runs (doit's own
    status said up-to-date), downstream of a regenerated file runs only if it comes out
    different (doit's own said run, and estimate counted it as stale)."""
    built.artifact("ch002_sc003", "write/prose.md").unlink()
    assert _status(built)["repair:ch002_sc003"] == "M"
    info = built.doit("info", "repair:ch002_sc003")
    assert info.returncode == 1, info.stdout + info.stderr
    assert "status     : runs only if a task it reads from writes different files" in info.stdout
    assert "write:ch002_sc003" in info.stdout
    estimate = built.doit("estimate")
    assert estimate.returncode == 0, estimate.stdout + estimate.stderr
    # stale now, may rerun, LLM calls (at most), ..., from the cache
    write, repair = _row(estimate.stdout, "write"), _row(estimate.stdout, "repair")
    assert (write[1], write[2], write[3], write[6]) == ("1", "1", "0", "1"), estimate.stdout
    assert (repair[1], repair[2], repair[3]) == ("0", "1", "1"), estimate.stdout
    assert _row(estimate.stdout, "plan")[1:3] == ["0", "0"], estimate.stdout
    built.build()

    override = built.book / "templates" / "write.j2"
    override.parent.mkdir()
    override.write_text("Write the scene in one paragraph.\n")
    assert _status(built)["repair:ch001_sc001"] == "R"
    info = built.doit("info", "repair:ch001_sc001")
    assert info.returncode == 1, info.stdout + info.stderr
    assert "status     : run\n" in info.stdout and "write:ch001_sc001" in info.stdout
    plan = built.doit("info", "plan:ch001_sc001")
    assert plan.returncode == 0 and "status     : up-to-date" in plan.stdout, plan.stdout
    estimate = built.doit("estimate")
    repair = _row(estimate.stdout, "repair")
    assert (repair[1], repair[2]) == ("0", str(len(SCENES))), estimate.stdout
    assert _row(estimate.stdout, "write")[1] == str(len(SCENES)), estimate.stdout
