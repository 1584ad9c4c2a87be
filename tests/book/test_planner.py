"""The plan (targets/book/planner.py): with no stamp to go by, a plain ``doit`` checks the
book's tasks against their records before loading any, and answers "up to date" only where
doit itself would (issue #14: the full-path no-op; issue #23: one planner)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from support.project import PHASES, Project, built_files, executed, loaded, scenes_of

from pipeline.core.builddb import Records, plan_row
from pipeline.core.hashing import hash_file
from targets.book.planner import RecordCheck
from targets.book.uptodate import InputsUnchanged

STAMP = "workspace/.scenemake/books/example.stamp.json"
SCENES = ["ch001_sc001", "ch001_sc002", "ch001_sc003", "ch002_sc001", "ch002_sc002",
          "ch002_sc003"]
# every default task named: a run that is not plain, so doit checks every task itself
DOIT_CHECKS = ("guard", *PHASES, "manuscript", "_stamp")


# -- the check, task by task --------------------------------------------------------------
def _state(path) -> list:
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size, hash_file(str(path), st)]


@pytest.fixture
def files(tmp_path):
    """A task reading ``a.txt`` and the template ``t.j2``, writing ``out.txt``; its record
    as doit saved it and the output as the build recorded it."""
    dep, tpl, out = (tmp_path / n for n in ("a.txt", "t.j2", "out.txt"))
    dep.write_text("input")
    tpl.write_text("template")
    out.write_text("output")
    record = {"checker:": "Blake3Checker", "deps:": [str(dep), str(tpl)],
              str(dep): _state(dep), str(tpl): _state(tpl),
              "_values_:": {"inputs_hash": "h1",
                            "template_set": {"phase": {"path": str(tpl),
                                                       "hash": _state(tpl)[2]}}}}
    task = {"name": "write:s1", "file_dep": [str(dep), str(tpl)], "targets": [str(out)],
            "uptodate": [InputsUnchanged("write:s1", lambda: "h1", dict)]}
    return dep, tpl, out, record, task


def _records(tasks: dict, outputs: dict, plans: dict | None = None) -> Records:
    return Records(tasks, {p: ("write:s1", json.dumps([s[2]]), json.dumps(s))
                           for p, s in outputs.items()}, 1, frozenset(), frozenset(), {},
                   plans or {})


def _check(record: dict | None, outputs: dict, task: dict, template: str) -> bool:
    """The check's answer, asked of the record whole and of its plan row (the build DB's
    ``plan`` column): the two must agree."""
    records = {} if record is None else {task["name"]: json.dumps(record)}
    plans = {} if record is None else {task["name"]: plan_row(record)}
    whole = RecordCheck(_records(records, outputs)).task(task, 0, {"phase": template})
    planned = RecordCheck(_records({}, outputs, plans)).task(task, 0, {"phase": template})
    assert whole == planned
    return whole


def test_a_task_whose_record_matches_is_up_to_date_and_its_files_noted(files):
    dep, tpl, out, record, task = files
    check = RecordCheck(_records({"write:s1": json.dumps(record)}, {str(out): _state(out)}))
    assert check.task(task, 3, {"phase": str(tpl)})
    assert check.checked == 1
    assert {p: entry[2] for p, entry in check.files.items()} == {
        str(dep): 3, str(tpl): 3, str(out): 3}
    # the book's own inputs are noted by content
    check = RecordCheck(_records({"write:s1": json.dumps(record)}, {str(out): _state(out)}),
                        by_content=frozenset({str(tpl)}))
    assert check.task(task, 2, {"phase": str(tpl)})
    assert check.contents == {str(tpl): (_state(tpl)[2], 2)} and str(tpl) not in check.files
    # touched, same content: up to date (as the checker's hash says)
    os.utime(dep, ns=(1, 1))
    assert _check(record, {str(out): _state(out)}, task, str(tpl))


@pytest.mark.parametrize("change", [
    "no record", "another checker", "ignored", "a dep added", "a dep edited", "inputs changed",
    "template recorded otherwise", "output missing", "output edited by hand", "no output row",
    "no deps"])
def test_whatever_doit_or_the_guard_would_act_on_is_not_up_to_date(files, change):
    dep, tpl, out, record, task = files
    outputs = {str(out): _state(out)}
    if change == "no record":
        record = None
    elif change == "another checker":
        record["checker:"] = "MD5Checker"
    elif change == "ignored":
        record["ignore:"] = "1"
    elif change == "a dep added":
        extra = dep.with_name("b.txt")
        extra.write_text("more")
        task["file_dep"] = [*task["file_dep"], str(extra)]
    elif change == "a dep edited":
        dep.write_text("changed")
    elif change == "inputs changed":
        task["uptodate"] = [InputsUnchanged("write:s1", lambda: "h2", dict)]
    elif change == "template recorded otherwise":
        record["_values_:"]["template_set"]["phase"]["hash"] = "0" * 64
    elif change == "output missing":
        out.unlink()
    elif change == "output edited by hand":
        out.write_text("edited")
    elif change == "no output row":
        outputs = {}
    elif change == "no deps":  # doit never finds such a task up to date
        task["file_dep"], record["deps:"] = [], []
    assert not _check(record, outputs, task, str(tpl))


@pytest.mark.parametrize("second", ["another size", "another stat and content", "null",
                                    "a string"])
def test_a_file_two_tasks_read_is_judged_against_each_ones_record(files, second):
    """A file found as the first task recorded it proves nothing of the second task's
    record of it (the check remembers per recorded state, not per file)."""
    dep, tpl, out, record, task = files
    other = json.loads(json.dumps(record))
    mtime, size, digest = record[str(dep)]
    other[str(dep)] = {"another size": [mtime, size + 1, digest],
                       "another stat and content": [mtime + 1, size, "0" * 64],
                       "null": None, "a string": "x"}[second]
    later = {**task, "name": "write:s2"}
    outputs = {str(out): _state(out)}
    plans = {"write:s1": plan_row(record), "write:s2": plan_row(other)}
    for records in (_records({}, outputs, plans),  # the plan rows
                    _records({n: json.dumps(r) for n, r in (("write:s1", record),
                                                            ("write:s2", other))}, outputs)):
        check = RecordCheck(records)
        assert check.task(task, 0, {"phase": str(tpl)})
        assert not check.task(later, 1, {"phase": str(tpl)})
        assert not RecordCheck(records).task(later, 1, {"phase": str(tpl)})  # read first


def test_a_plan_row_scenemake_did_not_write_leaves_the_others_readable(files):
    """The plan rows are decoded together; one that is not JSON is that task's record read
    whole, and the other rows still count."""
    _dep, tpl, out, record, task = files
    outputs = {str(out): _state(out)}
    check = RecordCheck(_records({"write:s1": json.dumps(record)}, outputs,
                                 {"write:s1": plan_row(record), "write:s2": "[1,"}))
    assert check.task(task, 0, {"phase": str(tpl)})
    check = RecordCheck(_records({}, outputs, {"write:s1": "{broken", "write:s2": "[1,"}))
    assert not check.task(task, 0, {"phase": str(tpl)})


def test_a_rule_it_does_not_know_is_left_to_doit(files):
    _dep, tpl, out, record, task = files
    task["uptodate"] = [*task["uptodate"], lambda: True]
    assert not _check(record, {str(out): _state(out)}, task, str(tpl))


# -- plain doit without a stamp -----------------------------------------------------------
@pytest.mark.slow
def test_without_a_stamp_a_no_op_checks_the_records_loads_no_task_and_stamps(built):
    def shape() -> tuple:
        data = json.loads((built.root / STAMP).read_text())
        return data["outline"], data["absent"], data["inputs"], data["models"], [
            (folder + name, size, first) for folder, rows in data["files"].items()
            for name, _mtime, size, first in rows]

    written_by_the_build = shape()
    (built.root / STAMP).unlink()
    calls = len(built.calls())
    names, proc = loaded(built)
    assert proc.returncode == 0, proc.out
    assert executed(proc) == ["guard"] and scenes_of(names) == set()
    assert ("nothing changed: all 49 task(s) match their build records (checked without "
            "loading them; stamped), no LLM call") in proc.stdout
    assert len(built.calls()) == calls
    assert shape() == written_by_the_build  # the stamp a complete build writes
    _, proc = loaded(built)
    assert "nothing changed since the last complete build" in proc.stdout  # the stamp's


def _twins(built, tmp_path) -> tuple[Project, Project]:
    """The built book and a copy of it, neither with a stamp."""
    other = Project(tmp_path / "doit")
    shutil.copytree(built.root, other.root, symlinks=True)
    for p in (built, other):
        (p.root / STAMP).unlink()
    return built, other


def _same_run(checked: Project, by_doit: Project, *args: str) -> tuple[set[str], object]:
    """Run a plain doit on ``checked`` and doit's own checks on ``by_doit``: the same
    tasks run, the same calls are paid, the same files result."""
    names, proc = loaded(checked, *args)
    _, full = loaded(by_doit, *DOIT_CHECKS, *args)
    assert proc.returncode == full.returncode, proc.out + full.out
    ran = [t for t in executed(full) if t != "_stamp"]
    assert [t for t in executed(proc) if t != "_stamp"] == \
        [t for t in ran if t.partition(":")[2] in scenes_of(names) or ":" not in t]
    assert set(ran) - set(executed(proc)) <= {"_stamp"}  # nothing doit ran is skipped
    assert [c["request_hash"] for c in checked.calls()] == \
        [c["request_hash"] for c in by_doit.calls()]
    assert built_files(checked.root) == built_files(by_doit.root)
    return names, proc


@pytest.mark.slow
def test_without_a_stamp_it_runs_what_doit_runs(built, tmp_path):
    checked, by_doit = _twins(built, tmp_path)
    outline = "workspace/books/example/outline.json"

    def brief(p):
        p.edit_json(outline, lambda d: d["chapters"][1]["scenes"][0].update(
            brief="The tide turns while they argue on the pier."))

    # a brief in the middle: the scenes before it are not even loaded
    for p in (checked, by_doit):
        brief(p)
    names, proc = _same_run(checked, by_doit)
    assert scenes_of(names) == set(SCENES[3:])
    assert "3 earlier scene(s) unchanged (checked against their build records)" in proc.stdout

    # a named run leaves the stamp behind the DB: the next plain doit checks the records
    for p in (checked, by_doit):
        p.edit_json(outline, lambda d: d["chapters"][1]["scenes"][2].update(
            brief="Fog rolls over the pier."))
        assert p.doit("write:ch002_sc003").returncode == 0
    names, _ = _same_run(checked, by_doit)
    assert scenes_of(names) == {"ch002_sc003"}

    # a touched file with the same content, a deleted artifact, a forgotten task
    for p in (checked, by_doit):
        prose = p.artifact("ch001_sc002", "write/prose.md")
        os.utime(prose, ns=(10**18, 10**18))
        p.artifact("ch002_sc002", "continuity_pack/pack.json").unlink()
        (p.root / STAMP).unlink()
    names, _ = _same_run(checked, by_doit)
    assert scenes_of(names) == set(SCENES[4:])
    for p in (checked, by_doit):
        assert p.doit("forget", "lint:ch001_sc003").returncode == 0
    names, _ = _same_run(checked, by_doit)
    assert scenes_of(names) == set(SCENES[2:])

    # the book's settings: every scene, through doit
    for p in (checked, by_doit):
        p.edit_json("workspace/books/example/book.json", lambda d: d.update(title="Another"))
    names, _ = _same_run(checked, by_doit)
    assert scenes_of(names) == set(SCENES)


@pytest.mark.slow
def test_without_a_stamp_hand_edits_and_prompt_changes_are_still_refused(built, tmp_path):
    checked, by_doit = _twins(built, tmp_path)
    for p in (checked, by_doit):
        prose = p.artifact("ch001_sc003", "write/prose.md")
        prose.write_text(prose.read_text() + "An edit.\n")
    names, proc = _same_run(checked, by_doit)
    assert proc.returncode != 0 and "edited by hand" in proc.out
    assert scenes_of(names) == set(SCENES[2:])
    assert checked.artifact("ch001_sc003", "write/prose.md").read_text().endswith("An edit.\n")
    for p in (checked, by_doit):
        assert p.doit("force_resume=1").returncode == 0
        tpl = p.root / "workspace/books/example/templates"
        tpl.mkdir(exist_ok=True)
        (tpl / "write.j2").write_text("Write the scene.\n")  # a book's own template
        (p.root / STAMP).unlink(missing_ok=True)
    _, proc = _same_run(checked, by_doit)
    assert proc.returncode != 0 and "prompt template" in proc.out


# -- the saved index (pipeline/book/stamp.py) ---------------------------------------------
@pytest.fixture
def index(tmp_path):
    """A stamp over an input compared by content, a model file, an absent override and an
    artifact read first by scene 3; and a function that reads it back."""
    from pipeline.book import stamp

    inp, model, art = tmp_path / "outline.json", tmp_path / "m.gguf", tmp_path / "a.md"
    absent = tmp_path / "templates" / "write.j2"
    inp.write_text('{"chapters": []}')
    model.write_bytes(b"weights")
    art.write_text("prose")
    st_m, st_a = model.stat(), art.stat()
    path = tmp_path / "stamp.json"
    stamp.write(path, 7, stamp.grouped({str(art): (st_a.st_mtime_ns, st_a.st_size, 3)}),
                {str(inp): (hash_file(str(inp)), 0)}, [str(absent)], {"rest": "", "scenes": []},
                {str(model): (st_m.st_mtime_ns, st_m.st_size)})
    return path, inp, model, art, absent, lambda: stamp.reach(path, 7, False)


def test_the_index_holds_until_an_observation_moves(index):
    path, inp, model, art, absent, reach = index
    assert reach().first is None
    from pipeline.book import stamp

    assert stamp.reach(path, 8, False) is None  # a task committed since
    assert stamp.reach(path, 7, True) is None  # a ledger waits to be rewritten
    os.utime(art, ns=(1, 1))  # an artifact's stat moved: from its first reader on
    assert reach().first == 0 or reach().first == 3


def test_a_same_size_input_edit_with_its_mtime_put_back_is_seen(index):
    _path, inp, _model, _art, _absent, reach = index
    st = inp.stat()
    inp.write_text('{"chapters": {}}'[:len('{"chapters": []}')])
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert reach() is None  # read by every scene: the full path


def test_a_replaced_model_file_or_a_new_override_means_the_full_path(index):
    _path, _inp, model, _art, absent, reach = index
    absent.parent.mkdir()
    absent.write_text("override")
    assert reach() is None
    absent.unlink()
    assert reach() is not None
    model.write_bytes(b"WEIGHTS")
    os.utime(model, ns=(5, 5))
    assert reach() is None


@pytest.mark.parametrize("garbage", ["[]", "null", "3", '"x"', "{", '{"version": 5}',
                                     '{"version": 5, "env": null, "files": []}'])
def test_an_index_scenemake_did_not_write_is_no_index(index, garbage):
    path, *_rest, reach = index
    path.write_text(garbage)
    assert reach() is None
