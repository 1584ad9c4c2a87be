"""A named command loads and checks its scene chain, not the book (issue #14: "commands
cost what they touch"), through scenemake's doit task loader (targets/loader.py)."""

from __future__ import annotations

import json

import pytest
from support.project import executed

SCENES = ["ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003"]
PHASES = ["plan", "preflight", "continuity_pack", "write", "repair", "state_repair", "lint",
          "commit"]


def loaded(project, *args: str) -> tuple[set[str], object]:
    """The tasks a doit command built (as the loader reports them), and the process."""
    report = project.root / "loaded.json"
    report.unlink(missing_ok=True)
    proc = project.doit(*args, env={"SCENEMAKE_LOADED_TASKS": str(report)})
    return set(json.loads(report.read_text())), proc


def scenes_of(names: set[str]) -> set[str]:
    return {n.partition(":")[2] for n in names if n.partition(":")[0] in PHASES
            and n.partition(":")[2]}


@pytest.mark.slow
def test_a_named_scene_loads_its_chain_and_runs_only_what_is_stale_upstream(project):
    names, proc = loaded(project, "write:ch001_sc001")
    assert proc.returncode == 0, proc.out
    assert scenes_of(names) == {"ch001_sc001"}
    assert not any(n.startswith("l7_") for n in names)  # no L7 stage loads
    assert executed(proc) == ["guard", "plan:ch001_sc001", "preflight:ch001_sc001",
                              "continuity_pack:ch001_sc001", "write:ch001_sc001"]
    calls = len(project.misses())
    assert calls == 3  # plan, continuity_pack, write: the LLM phases up to write

    # the next scene's write: the chain up to it, and only what is stale runs
    names, proc = loaded(project, "write:ch001_sc002")
    assert proc.returncode == 0, proc.out
    assert scenes_of(names) == {"ch001_sc001", "ch001_sc002"}
    assert set(executed(proc)) == {
        "guard", "repair:ch001_sc001", "state_repair:ch001_sc001", "lint:ch001_sc001",
        "commit:ch001_sc001", "plan:ch001_sc002", "preflight:ch001_sc002",
        "continuity_pack:ch001_sc002", "write:ch001_sc002"}
    assert len(project.misses()) == calls + 5  # nothing already paid for is paid again

    # the whole build afterwards still builds the rest, and only the rest
    proc = project.build()
    ran = set(executed(proc))
    assert not {f"{p}:ch001_sc001" for p in PHASES} & ran
    assert {f"commit:{sid}" for sid in SCENES[1:]} <= ran and "manuscript" in ran


@pytest.mark.slow
def test_info_why_list_of_one_scene_load_its_chain_other_commands_the_book(built):
    every = {f"{p}:{sid}" for p in PHASES for sid in SCENES}
    for command in (["info"], ["why"], ["list"], []):
        names, proc = loaded(built, *command, "write:ch001_sc002")
        assert proc.returncode == 0, (command, proc.out)
        assert scenes_of(names) == {"ch001_sc001", "ch001_sc002"}, command
        assert not any(n.startswith("l7_") for n in names), command  # nor the L7 stages
    assert executed(proc) == ["guard"]  # built: the named chain is up to date
    # a phase group, the defaults, the manuscript, rerun-from: the whole book
    for args in (["list"], ["list", "write"], ["info", "manuscript"],
                 ["rerun-from", "--dry-run", "write:ch001_sc002"]):
        names, proc = loaded(built, *args)
        assert proc.returncode == 0, (args, proc.out)
        assert every <= names, args
    names, _ = loaded(built, "list")
    assert "l7_gate_in" in names  # the whole project's list still shows the L7 stages


def test_the_named_chain_still_refuses_a_hand_edit_in_it(built):
    prose = built.artifact("ch001_sc001", "repair/prose.md")
    prose.write_text(prose.read_text() + "\nA line added by hand.\n")
    proc = built.doit("write:ch001_sc002")
    assert proc.returncode != 0
    assert "edited by hand" in proc.out and "force_resume=1" in proc.out
    assert prose.read_text().endswith("A line added by hand.\n")  # nothing lost


def test_the_named_chain_still_refuses_a_changed_template_of_its_phases(built):
    from pipeline.book.workspace import DEFAULT_TEMPLATES

    override = built.book / "templates" / "write.j2"
    override.parent.mkdir(exist_ok=True)
    override.write_text((DEFAULT_TEMPLATES / "write.j2").read_text() + "Keep it short.\n")
    n = len(built.calls())
    proc = built.doit("write:ch001_sc002")
    assert proc.returncode != 0
    # the guard reports the chain's tasks that read it (not the book's six)
    assert "write:ch001_sc001" in proc.out and "allow_prompt_change=1" in proc.out
    assert "2 task(s)" in proc.out and "Traceback" not in proc.out
    assert built.calls()[n:] == []
    # named, the guard checks the whole book
    names, proc = loaded(built, "guard")
    assert {f"write:{sid}" for sid in SCENES} <= names
    assert "6 task(s)" in proc.out


def test_the_loader_keeps_the_collector_off_while_tasks_are_built(monkeypatch):
    """Part of "loading is linear": no collector pass walks the task objects while they are
    made, and the collector is on again afterwards (with the tasks frozen out of it)."""
    import gc

    from targets import book
    from targets.loader import SceneLoader

    monkeypatch.setattr(book, "_selection", book._Selection())
    seen = []

    def task_probe():
        seen.append(gc.isenabled())
        return {"actions": None}

    class Cmd:
        name = "list"
        execute_tasks = False

    loader = SceneLoader()
    loader.namespace = {"task_probe": task_probe}
    assert gc.isenabled()
    try:
        tasks = loader.load_tasks(Cmd(), ["probe"])
        assert [t.name for t in tasks] == ["probe"]
        assert seen == [False]  # off while the tasks were built
        assert gc.isenabled() and gc.get_freeze_count() > 0  # on again, the tasks frozen
        assert book._selection.command == "list" and book._selection.tasks == ["probe"]
    finally:
        gc.unfreeze()
