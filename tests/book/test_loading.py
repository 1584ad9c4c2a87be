"""A named command loads and checks its scene chain, not the book (issue #14: "commands
cost what they touch"), through scenemake's doit task loader (targets/loader.py)."""

from __future__ import annotations

import json

import pytest
from support.project import PHASES, built_files, executed, loaded, scenes_of

SCENES = ["ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003"]


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

    from targets.loader import SceneLoader

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
        assert loader.run is None  # no book in this namespace: no run
    finally:
        gc.unfreeze()


# -- a plain doit after a small change: the scenes the moved files reach ------------------
OUTLINE = "workspace/books/example/outline.json"
STAMP = "workspace/.scenemake/books/example.stamp.json"


def _brief(project, chapter: int, scene: int, text: str) -> None:
    project.edit_json(OUTLINE, lambda d: d["chapters"][chapter]["scenes"][scene].update(brief=text))


def _stamp_shape(root) -> tuple:
    data = json.loads((root / STAMP).read_text())
    return data["outline"], [(folder + name, size, at) for folder, rows in data["files"].items()
                             for name, _m, size, at in rows]


@pytest.mark.slow
def test_a_changed_brief_loads_only_the_scenes_it_reaches_and_builds_what_the_full_path_does(
        built, tmp_path):
    import shutil

    from support.project import Project

    full = Project(tmp_path / "full")
    shutil.copytree(built.root, full.root, symlinks=True)
    for p in (built, full):
        _brief(p, 1, 1, "The tide turns while they argue on the pier.")
    (full.root / STAMP).unlink()  # this copy takes the full path: doit checks every task

    before = len(built.calls())
    names, proc = loaded(built)
    assert proc.returncode == 0, proc.out
    # ch002_sc002's plan reads its brief; ch002_sc003's plan reads the brief before it and
    # its pre-state is ch002_sc002's commit: those two scenes load, the four before do not
    assert scenes_of(names) == {"ch002_sc002", "ch002_sc003"}
    assert {"guard", "manuscript", "_stamp"} <= names
    assert "plan:ch002_sc002" in executed(proc) and "manuscript" in executed(proc)
    assert "4 earlier scene(s) unchanged (their files did not move)" in proc.stdout
    full_names, full_proc = loaded(full, "guard", *PHASES, "manuscript", "_stamp")
    assert full_proc.returncode == 0 and scenes_of(full_names) == set(SCENES)

    # the same work, the same calls, the same files as the full path
    assert executed(proc) == [t for t in executed(full_proc)
                              if t.partition(":")[2] in ("", "ch002_sc002", "ch002_sc003")]
    assert [c["request_hash"] for c in built.calls()[before:]] == \
        [c["request_hash"] for c in full.calls()[before:]]
    assert built_files(built.root) == built_files(full.root)
    for sid in SCENES:
        assert built.ledger(sid)["phases"].keys() == full.ledger(sid)["phases"].keys()
    # and the stamp it leaves says what a full build's stamp says
    assert _stamp_shape(built.root) == _stamp_shape(full.root)
    names, proc = loaded(built)
    assert executed(proc) == ["guard"] and scenes_of(names) == set()  # the fast path again


@pytest.mark.slow
def test_a_small_change_reaches_from_where_it_is_read(built):
    # no scene reads the manuscript: a hand edit of it loads no scene (and, as on the
    # full path, it stays until a scene's prose changes, then is kept beside the new one)
    md = built.book / "draft" / "manuscript.md"
    md.write_text(md.read_text() + "\nA note by hand.\n")
    names, proc = loaded(built)
    assert proc.returncode == 0, proc.out
    assert scenes_of(names) == set() and "manuscript" in names
    assert md.read_text().endswith("A note by hand.\n")
    names, proc = loaded(built)
    assert names == {"guard"}  # stamped: the fast path loads the guard alone
    # a deleted artifact in the middle of the book: from its scene on
    pack = built.artifact("ch002_sc001", "continuity_pack/pack.json")
    pack.unlink()
    names, proc = loaded(built)
    assert scenes_of(names) == {"ch002_sc001", "ch002_sc002", "ch002_sc003"}
    assert "continuity_pack:ch002_sc001" in executed(proc) and pack.exists()
    # a hand edit in the middle: still refused, naming the file, nothing lost
    prose = built.artifact("ch001_sc003", "write/prose.md")
    prose.write_text(prose.read_text() + "An edit.\n")
    names, proc = loaded(built)
    assert proc.returncode != 0 and "edited by hand" in proc.out
    assert scenes_of(names) == set(SCENES[2:])
    assert prose.read_text().endswith("An edit.\n")
    built.build("force_resume=1")
    # the first scene's brief, a template, the book's settings: every scene
    for change in (lambda: _brief(built, 0, 0, "Fog at dawn."),
                   lambda: built.edit_json("workspace/books/example/book.json",
                                           lambda d: d.update(title="Another Title"))):
        change()
        names, proc = loaded(built)
        assert proc.returncode == 0, proc.out
        assert scenes_of(names) == set(SCENES)
    # an outline whose scenes moved: the stamp cannot say, the records can (the scenes
    # before the swapped pair read nothing that moved)
    def swap(d):
        scenes = d["chapters"][1]["scenes"]
        scenes[1], scenes[2] = scenes[2], scenes[1]
    built.edit_json(OUTLINE, swap)
    names, proc = loaded(built)
    assert proc.returncode == 0, proc.out
    assert scenes_of(names) == {"ch002_sc002", "ch002_sc003"}
    assert "4 earlier scene(s) unchanged (checked against their build records)" in proc.stdout


def test_the_fast_no_op_imports_no_model_stack(built):
    """The no-op's cost is mostly start-up: it must not import what only a phase needs
    (pydantic alone took 200 ms of a 480 ms no-op at 1000 scenes)."""
    import subprocess
    import sys

    built.build()  # stamped
    probe = ("import atexit, os, runpy, sys, doit\n"
             "atexit.register(lambda: print('MODULES', ' '.join(sorted(sys.modules))))\n"
             "sys.argv = [os.path.join(os.path.dirname(doit.__file__), '__main__.py')]\n"
             "runpy.run_module('doit', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=built.root, capture_output=True,
                          text=True, timeout=120)
    assert "nothing changed since the last complete build" in proc.stdout, proc.stdout
    modules = set(proc.stdout.rpartition("MODULES ")[2].split())
    assert "targets.book.tasks" in modules  # the probe saw the run
    heavy = {m for m in modules if m.partition(".")[0] in
             ("pydantic", "jsonschema", "jinja2", "httpx", "rich")
             or m.startswith(("pipeline.llm", "pipeline.book.models"))}
    assert heavy == set()


@pytest.mark.parametrize("args, plain", [
    ([], True), (["book=example", "budget=2"], True), (["-n", "4", "-P", "thread"], True),
    (["-n4", "-Pthread"], True), (["--process=4", "--verbosity", "2", "-c"], True),
    (["-a"], False), (["--always-execute"], False), (["write:ch001_sc001"], False),
    (["-n", "4", "write:ch001_sc001"], False), (["list"], False), (["-f", "other.py"], False),
    (["-s", "plan:ch001_sc001"], False)])
def test_only_how_tasks_run_or_report_keeps_a_run_plain(args, plain):
    """A plain run may use the stamp: options of how tasks run (``-n 4 -P thread``, as the
    README suggests) do not change what is up to date; ``-a``, a task name, a command or
    another dodo file do. The run knows the command only as doit parsed it."""
    from doit.cmd_list import List
    from doit.cmd_run import Run

    from targets.book.run import Selection
    from targets.loader import SceneLoader

    command = (List if args[:1] == ["list"] else Run)(task_loader=SceneLoader())
    params, positional = command.cmdparser.parse(args[1:] if args[:1] == ["list"] else args)
    assert Selection.of(command.name, [a for a in positional if "=" not in a],
                        params).plain is plain


@pytest.mark.slow
def test_an_outline_edited_during_a_run_is_not_stamped_as_built(built):
    """The stamp describes the outline the run loaded: a brief edited while the run was on
    must not look built to the next run."""
    import subprocess
    import sys

    _brief(built, 1, 2, "Fog rolls over the pier.")  # a change for this run to build
    probe = (
        "import json, os, runpy, sys, doit\n"
        "from targets.book.planner import Planner\n"
        "real = Planner.save_index\n"
        "def late_edit(self):\n"
        f"    path = {OUTLINE!r}\n"
        "    data = json.load(open(path))\n"
        "    data['chapters'][1]['scenes'][2]['brief'] = 'Edited while the run was on.'\n"
        "    open(path, 'w').write(json.dumps(data, indent=2))\n"
        "    return real(self)\n"
        "Planner.save_index = late_edit\n"
        "sys.argv = [os.path.join(os.path.dirname(doit.__file__), '__main__.py')]\n"
        "runpy.run_module('doit', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=built.root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plan:ch002_sc003" in executed(proc)
    assert not (built.root / STAMP).exists()  # not stamped: the edit came after the load
    proc = built.build()
    assert "plan:ch002_sc003" in executed(proc)  # the next run builds the late edit
    plan = json.loads(built.artifact("ch002_sc003", "plan/prompt.json").read_text())
    assert "Edited while the run was on." in json.dumps(plan)
