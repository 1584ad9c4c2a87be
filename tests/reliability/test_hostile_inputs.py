"""Malformed, nested and hostile inputs of every family (issue 15, items 4-7 and 9): each is
one line naming the file, the family's exit code for bad input, no traceback, and nothing
written where it must not be."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.l7 import copy_project
from support.project import Project
from support.scenario import make_project as scenario_project

pytestmark = pytest.mark.slow  # real commands, one process each

NESTED = "[" * 100000 + "]" * 100000


def _said(out: str) -> list[str]:
    """What a command printed besides doit's progress lines and the run's closing summary
    (``scenemake: N scene(s) built, ...``, tests/book/test_run_line.py)."""
    return [line for line in out.splitlines()
            if line.strip() and not line.startswith((".  ", "-- "))
            and not (line.startswith("scenemake: ") and " task(s) run" in line)]


def _refused(proc, *needles: str, code: int | None = None) -> str:
    assert proc.returncode != 0, proc.out
    if code is not None:
        assert proc.returncode == code, proc.out
    assert "Traceback" not in proc.out, proc.out
    said = _said(proc.out)
    # doit reports a failed task as a header line and the task's message
    assert 1 <= len(said) <= 2, proc.out
    for needle in needles:
        assert needle in said[-1], said[-1]
    return said[-1]


# -- the book ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["book.json", "outline.json", "state.json"])
def test_book_input_nested_too_deep(project: Project, name: str):
    (project.book / name).write_text(NESTED)
    _refused(project.doit(), f"books/example/{name}", "nested more than")
    assert project.calls() == []


@pytest.mark.parametrize("content, needle", [
    ("[]", "not an object"),
    ("NaN", "NaN is not a JSON value"),
    ('{"default_book": 5}', "field 'default_book'"),
    ('{"default_book": "example", "x": Infinity}', "Infinity is not a JSON value"),
    pytest.param(NESTED, "nested more than", id="nested"),
    (None, "symbolic links"),  # a symlink loop
], ids=lambda v: str(v)[:20] if isinstance(v, str) and len(str(v)) < 60 else None)
def test_workspace_config_refused(project: Project, content: str | None, needle: str):
    cfg = project.root / "workspace" / "scenemake.json"
    cfg.unlink(missing_ok=True)
    if content is None:
        cfg.symlink_to("scenemake.json")
    else:
        cfg.write_text(content)
    _refused(project.doit(), "workspace/scenemake.json", needle)
    assert project.calls() == []


def _override(project: Project, name: str, text: bytes) -> None:
    folder = project.book / "templates"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.j2").write_bytes(text)


@pytest.mark.parametrize("text, needle", [
    (b'{% include "/etc/passwd" %}', "may not include"),
    (b'{% import "/etc/passwd" as p %}', "may not include, import"),
    (b"{% extends '/etc/passwd' %}", "may not include, import"),
    (b"{{ range(10**9) | list | length }}", "range() of 1000000000 items"),
    (b"{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
     "more than 1000000 steps"),
    (b"{{ 'x' * 10**9 }}", "repetition"),
    (b"{{ 7 ** 999999 }}", "power"),
    (b"plan \xff\xfe in Latin-1", "not UTF-8"),
    pytest.param(b"x" * (300 * 1024), "larger than", id="300KB"),
], ids=lambda v: v[:24].decode("ascii", "replace") if isinstance(v, bytes) else None)
def test_hostile_template_is_one_line(project: Project, text: bytes, needle: str):
    _override(project, "plan", text)
    _refused(project.doit(), "templates/plan.j2", needle)
    assert project.misses() == []  # nothing was asked with it


def test_template_paths_stay_inside_the_workspace(project: Project, tmp_path: Path):
    outside = tmp_path / "secret.j2"
    outside.write_text("the secret\n")
    project.edit_json("workspace/books/example/book.json",
                      lambda b: b.update(templates={"plan": str(outside)}))
    _refused(project.doit(), "book.json", "templates.plan", "outside the workspace")
    project.edit_json("workspace/books/example/book.json",
                      lambda b: b.update(templates={"plan": "../../../../etc/passwd"}))
    _refused(project.doit(), "templates.plan", "outside the workspace")
    # an override that links out is refused the same way
    project.edit_json("workspace/books/example/book.json", lambda b: b.pop("templates"))
    (project.book / "templates").mkdir(exist_ok=True)
    (project.book / "templates" / "plan.j2").symlink_to(outside)
    _refused(project.doit(), "templates/plan.j2", "outside the workspace")
    assert project.calls() == []
    log = project.root / "workspace" / ".scenemake" / "llm_cache"
    assert not log.exists() or not any("the secret" in p.read_text() for p in log.rglob("*"))


# -- L7 ------------------------------------------------------------------------------------
@pytest.fixture
def l7(tmp_path: Path):
    return copy_project(tmp_path / "l7proj")


@pytest.mark.parametrize("rel", ["workspace/l7/sample_session_input_l7.json",
                                 "workspace/l7/sample_session_objective_l7_prompt_map.json",
                                 "workspace/l7/l6_run_output/scenes_v2.json",
                                 "score_specs/score_spec_prompt.json"])
def test_l7_input_nested_too_deep_exits_2(l7, rel: str):
    l7.path(rel).write_text(NESTED)
    _refused(l7.cli(), rel, "nested more than", code=2)
    assert not l7.path("workspace/l7/l7_run_output").exists()


def test_l7_out_dir_symlink_is_refused_and_old_leftovers_go(l7, tmp_path: Path):
    real = tmp_path / "real_out"
    real.mkdir()
    link = l7.path("workspace/l7/linked_out")
    link.symlink_to(real)
    _refused(l7.cli(*_l7_inputs(), "--out-dir", "workspace/l7/linked_out", base=False),
             "--out-dir is a symbolic link", str(real), code=2)
    assert list(real.iterdir()) == [] and link.is_symlink()
    # what an older version left after publishing to a linked out-dir (the new set in a real
    # folder, the link renamed to .<out>.l7-old) no longer breaks every later run
    out = l7.path("workspace/l7/l7_run_output")
    first = l7.cli()
    assert first.returncode == 0, first.out
    (out.parent / ".l7_run_output.l7-old").symlink_to(real)
    ok = l7.cli()
    assert ok.returncode == 0, ok.out
    assert not os.path.lexists(out.parent / ".l7_run_output.l7-old")
    assert real.is_dir() and list(real.iterdir()) == []


def _l7_inputs() -> list[str]:
    from support.l7 import INPUT, OBJECTIVE, SCENES

    return ["--session-input", INPUT, "--session-objective", OBJECTIVE, "--scenes-v2", SCENES]


# -- scenario ------------------------------------------------------------------------------
@pytest.fixture
def sp(tmp_path: Path):
    project = scenario_project(tmp_path / "sproj")
    yield project
    project.close()


DEEP = "workspace/scenarios/deep.json"
PACK = "workspace/scenarios/packs/warehouse_basics.json"


@pytest.mark.parametrize("args", [
    ("run-case", "--case", DEEP),
    ("run-scenario", "--scenario", DEEP),
    ("run-pack", "--pack", DEEP),
    ("run-pack-loop", "--pack", PACK, "--coder-config", DEEP),
    ("stage", "plan", "--manifest", DEEP),
    ("save", "--spec", DEEP, "--validated-run-dir", "workspace"),
], ids=lambda a: a[0] if a[0] != "run-pack-loop" else "coder-config")
def test_scenario_input_nested_too_deep_exits_2(sp, args: tuple[str, ...]):
    sp.write(DEEP, NESTED)
    _refused(sp.cli(*args), "deep.json", "nested more than", code=2)


@pytest.mark.parametrize("where", ["/", "../../../../../../../../..", "nowhere"])
def test_stage_manifest_workspace_must_be_a_workspace(sp, where: str):
    manifest = json.loads((Path(__file__).parents[2] / "workspace" / "orchestration" /
                           "stage1_warehouse.json").read_text())
    manifest["workspace"] = where
    sp.write("workspace/orchestration/bad.json", manifest)
    before = sorted(os.listdir("/"))
    _refused(sp.cli("stage", "plan", "--manifest", "workspace/orchestration/bad.json"),
             "bad.json", "field 'workspace'", code=2)
    assert sorted(os.listdir("/")) == before  # nothing written at the filesystem root


SESSIONS = "workspace/llm_normalizer/data/assistant_sessions"
REPORTS = "workspace/llm_normalizer/reports"
GOOD_TURN = {"turn": 1, "message": "How many Packing Tape rolls are on hand?",
             "reply": "130 rolls of Packing Tape are on hand.\n\nData as of 2024-06-30.",
             "entries": [{"item": "Packing Tape", "on_hand": 130}],
             "debug": {"route": "inventory.stock"}}


def _session(sp, run_id: str, name: str, content) -> Path:
    path = sp.root / SESSIONS / f"{run_id}-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not JSON"),
    (b'{"turns": ["caf\xe9"]}', "not UTF-8"),
    ([1, 2], "not a session"),
    ({"session_id": "s1", "turns": "many"}, "not a session"),
    ({"session_id": "s1", "turns": [GOOD_TURN, "oops"]}, "turns[1]"),
    pytest.param(NESTED, "not JSON", id="nested"),
], ids=lambda v: str(v)[:20])
def test_review_bridge_refuses_unreadable_evidence(sp, content, needle: str):
    run = "assistant-stage1-bad"
    _session(sp, run, "s0", {"session_id": "s0", "run_id": run, "turns": [GOOD_TURN]})
    bad = _session(sp, run, "s1", content)
    proc = sp.cli("review", run, "--print-summary")
    _refused(proc, bad.name, needle, code=2)
    assert "manual_gui_confirmation_or_stage_close" not in proc.out


def test_review_bridge_refuses_a_folder_a_loop_and_an_empty_run(sp):
    run = "assistant-stage1-odd"
    _session(sp, run, "s0", {"session_id": "s0", "run_id": run, "turns": [GOOD_TURN]})
    folder = sp.root / SESSIONS / f"{run}-s1.json"
    folder.mkdir()
    _refused(sp.cli("review", run), f"{run}-s1.json", "unreadable", code=2)
    folder.rmdir()
    loop = sp.root / SESSIONS / f"{run}-s2.json"
    loop.symlink_to(loop.name)
    _refused(sp.cli("review", run), f"{run}-s2.json", "unreadable", code=2)
    loop.unlink()

    empty = "assistant-stage1-empty"
    sp.write(f"{REPORTS}/{empty}.md", "")
    proc = sp.cli("review", empty, "--print-summary")
    _refused(proc, "no answers to review", code=2)
    _session(sp, empty, "s0", {"session_id": "s0", "run_id": empty, "turns": []})
    _refused(sp.cli("review", empty), "no answers to review", code=2)

    ok = sp.cli("review", run, "--print-summary")  # the readable run still reviews
    assert ok.returncode == 0, ok.out
    assert "1 answers in 1 session(s)" in ok.stdout or "1 answer" in ok.stdout


