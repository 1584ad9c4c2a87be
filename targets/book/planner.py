"""The plan: one decision of what is up to date in a book, asked by every shortcut.

doit decides task by task as it runs them (its record of the task, the file checker, the
targets, the up-to-date rules) and the guard refuses hand edits and prompt changes before
any LLM call. The planner decides the same thing without doit, with the same rules
(pipeline/core/filestate.py for files, targets/book/uptodate.py for the inputs, the guard's
rules in pipeline/book/rules.py), from one snapshot of the build DB:

- ``RecordCheck.task``: would doit find this task up to date, and would the guard pass it?
  It only ever says yes where doit and the guard would; any doubt says no and doit decides.
- ``Planner.reach``: for a plain ``doit``, from which scene on tasks must load at all. The
  saved index (the stamp, pipeline/book/stamp.py) is a memo of "everything up to date",
  keyed by every observation the plan made: the DB's generation, the environment, every
  file's state (the book's own inputs by content), the template overrides that were absent
  and the model files, all as the run read them. Nothing moved: no task loads. Some files
  moved: the scenes from the first one that reads them load. No usable index: the records
  are checked scene by scene, and the scenes before the first one that is not up to date
  need not load.
- ``Planner.save_index``: after a complete build, the index of what it read.
"""

from __future__ import annotations

import gc
import json
import os
from typing import TYPE_CHECKING

from pipeline.book import stamp
from pipeline.book.phase_table import PHASES
from pipeline.core import filestate
from pipeline.core.builddb import plan_of
from targets.book.uptodate import InputsUnchanged, OutputsAsRecorded
from targets.checker import Blake3Checker

if TYPE_CHECKING:
    from pipeline.core.builddb import Records
    from targets.book.run import BookRun

_CHECKER = Blake3Checker.__name__


class RecordCheck:
    """Tasks checked against one snapshot of their records, each file stat'ed once."""

    def __init__(self, records: Records, by_content: frozenset[str] = frozenset()):
        self.records = records
        self.by_content = by_content
        self._stats: dict[str, os.stat_result | None] = {}
        self._outputs: dict[str, list | None] | None = None
        self._plans: dict[str, list] | None = None
        # path -> the recorded state found to match the file as it is now: a file read by
        # several tasks is judged once per state (the stat and the digest are this run's)
        self._matched: dict[str, list] = {}
        self.checked = 0
        # the index's rows: path -> (mtime_ns, size, first scene that reads or writes it),
        # and for the files compared by content path -> (blake3, first scene)
        self.files: dict[str, tuple[int, int, int]] = {}
        self.contents: dict[str, tuple[str, int]] = {}

    def stat(self, path: str) -> os.stat_result | None:
        try:
            return self._stats[path]
        except KeyError:
            st = self._stats[path] = filestate.observe(path)
            return st

    def output_state(self, path: str):
        """The state the build recorded for an artifact at its last commit (None: none)."""
        outputs = self._outputs if self._outputs is not None else self._read_outputs()
        return outputs.get(path)

    def _read_outputs(self) -> dict[str, list | None]:
        rows = self.records.outputs
        try:  # one decode for all 26000 states of a 1000-scene book, not one call each
            states = json.loads(f"[{','.join(r[2] or 'null' for r in rows.values())}]")
            self._outputs = dict(zip(rows, states, strict=True))
        except ValueError:  # a state not as scenemake writes it: none is trusted
            self._outputs = dict.fromkeys(rows)
        return self._outputs

    def plan(self, name: str) -> list | None:
        """The task's ``_plan`` (None: no usable record); the plan rows are decoded all at
        once, when the first task is checked."""
        plans = self._plans
        if plans is None:
            rows = self.records.plans
            try:  # one decode for the 8000 rows of a 1000-scene book, not one call each
                plans = dict(zip(rows, json.loads(f"[{','.join(rows.values())}]"),
                                 strict=True))
            except ValueError:  # a row not as scenemake writes it: each on its own
                plans = {}
            self._plans = plans
        plan = plans.pop(name, None)
        return _plan(self.records, name) if plan is None else _shaped(plan)

    def task(self, task: dict, index: int, templates: dict[str, str] | None = None) -> bool:
        """True when doit would find ``task`` (a task dict as the run yields it, ``name`` its
        full name) up to date and the guard would find nothing: its files are then noted as
        read or written first by scene ``index``."""
        inputs = None
        for rule in task.get("uptodate") or ():
            if isinstance(rule, InputsUnchanged):
                inputs = rule.value
            elif not isinstance(rule, OutputsAsRecorded):
                return False  # a rule only doit can call
        return self.check(task["name"], task.get("file_dep") or (), task.get("targets") or (),
                          inputs, templates, index)

    def check(self, name: str, file_dep, targets, inputs, templates: dict[str, str] | None,
              index: int) -> bool:
        """``task`` for its parts: ``inputs`` gives the inputs rule's value now (None: the
        task has no such rule). Its outputs are checked against their recorded states, as
        ``OutputsAsRecorded`` does (and more: they must be there)."""
        records = self.records
        if name in records.failed or name in records.dirty:
            return False
        plan = self.plan(name)
        if plan is None:
            return False
        checker, ignored, states, inputs_hash, recorded_templates = plan
        if checker != _CHECKER or ignored or not file_dep or states.keys() != set(file_dep):
            return False
        stats, matched, by_content, observe = self._stats, self._matched, self.by_content, \
            filestate.observe
        for dep, state in states.items():
            # most files are read by several tasks (85000 reads of 29000 files at 1000
            # scenes): a recorded state found to match needs no second look this run
            known = matched.get(dep)
            if known is None or known != state:
                try:
                    st = stats[dep]
                except KeyError:
                    st = stats[dep] = observe(dep)
                # make's contract first, inline; else the rule
                if not (type(state) is list and len(state) == 3 and st is not None
                        and st.st_mtime_ns == state[0] and st.st_size == state[1]
                        and dep not in by_content) \
                        and not filestate.matches(dep, state, st, by_content=dep in by_content):
                    return False
                matched[dep] = state
        if inputs is not None and inputs_hash != inputs():
            return False
        if templates and not _as_recorded(templates, recorded_templates, states):
            return False
        outputs = self._outputs if self._outputs is not None else self._read_outputs()
        for target in targets:  # there, with the content the build last wrote
            state = outputs.get(target)
            try:
                st = stats[target]
            except KeyError:
                st = stats[target] = observe(target)
            if not (type(state) is list and len(state) == 3 and st is not None
                    and st.st_mtime_ns == state[0] and st.st_size == state[1]) \
                    and not filestate.matches(target, state, st):
                return False
        self.checked += 1
        files, contents = self.files, self.contents
        for path in file_dep:
            if path in by_content:
                contents.setdefault(path, (states[path][2], index))
            elif path not in files:
                st = stats[path]
                files[path] = (st.st_mtime_ns, st.st_size, index)
        for path in targets:
            if path not in files:
                st = stats[path]
                files[path] = (st.st_mtime_ns, st.st_size, index)
        return True

    def orphans_as_recorded(self, tasks: set[str]) -> bool:
        """The artifacts of tasks the book no longer has (a removed scene's files) are as
        recorded: the guard would find no hand edit among them."""
        for path, (task_id, _known, _state) in self.records.outputs.items():
            if task_id in tasks:
                continue
            st = self.stat(path)
            if st is None:
                continue  # gone: nothing to refuse
            if not filestate.matches(path, self.output_state(path), st):
                return False
            self.files[path] = (st.st_mtime_ns, st.st_size, 0)
        return True


def _plan(records: Records, name: str) -> list | None:
    """A task's ``builddb.plan_row``: [checker, ignored, {dep: state}, inputs hash,
    {role: [template path, hash]}], from its plan row or, for a record without one (written
    before the column, or changed by another writer), from the record itself (None: no
    usable record)."""
    try:
        raw = records.plans.get(name)
        if raw is None:
            record = records.tasks.get(name)
            raw = plan_of(record) if record is not None else None
            if raw is None:
                return None
        return _shaped(json.loads(raw))
    except (ValueError, TypeError, AttributeError):
        return None


def _shaped(plan) -> list | None:
    """A decoded plan row with its file states as a dict (None: not shaped as written)."""
    try:
        if not isinstance(plan, list) or len(plan) != 5 or not isinstance(plan[2], list):
            return None
        plan[2] = dict(plan[2])  # dep -> its recorded state
        return plan
    except (ValueError, TypeError):
        return None


def _as_recorded(templates: dict[str, str], recorded, states: dict[str, list]) -> bool:
    """The task's templates are those its last success rendered, by path and content (a
    default template found at another install path is the guard's to judge); ``states``:
    the task's file dependencies as recorded (the templates among them, found as recorded)."""
    if not isinstance(recorded, dict) or recorded.keys() != templates.keys():
        return False
    for role, path in templates.items():
        entry, state = recorded[role], states.get(path)
        if not isinstance(entry, list) or state is None or entry != [path, state[2]]:
            return False
    return True


class Planner:
    """The plan of one run (see the module docstring)."""

    def __init__(self, run: BookRun):
        self.run = run
        self._reach: stamp.Reach | None = None
        self._reached = False

    # -- a plain doit: from which scene tasks load --------------------------------------
    def reach(self) -> stamp.Reach | None:
        """What moved since the last complete build (see ``stamp.Reach``), for a plain
        ``doit``; None: every task loads and doit checks each."""
        if not self._reached:
            self._reached = True
            if self.run.selection.plain and self.run.db is not None:
                self._reach = self._find_reach()
        return self._reach

    def _find_reach(self) -> stamp.Reach | None:
        run, db = self.run, self.run.db
        found = stamp.reach(run.stamp_path, db.generation(), bool(db.stale_views()))
        if found is not None:
            return found
        # what the check builds lives until the process exits: keep the collector's passes
        # off it (as the task loader does)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._records_reach()
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()

    def _records_reach(self) -> stamp.Reach | None:
        """No index to go by: the book's tasks checked against their records, scene by
        scene. All up to date: indexed, and nothing loads. Else the scenes before the first
        one that is not need not load (they read nothing a later scene writes). None: from
        the first scene, doit checks everything."""
        from targets.book.tasks import inputs_digest, manuscript_task, scene_files

        run = self.run
        book = run.book
        check = RecordCheck(run.db.snapshot(whole=False), run.by_content())
        names = {f"{p}:{s.id}" for s in book.scenes for p in PHASES} | {"manuscript"}
        if not check.orphans_as_recorded(names):
            return None  # a removed scene's file edited: the guard's to refuse
        first: int | None = None
        for i, scene in enumerate(book.scenes):
            sid = scene.id
            # the files and inputs rule of the task dicts doit gets (targets/book/tasks.py)
            if not all(check.check(f"{phase}:{sid}", *scene_files(files),
                                   lambda phase=phase, sid=sid: inputs_digest(run, phase, sid),
                                   files.templates, i)
                       for phase, files in run.layout(sid).items()):
                first = i
                break
        else:
            if not check.task(manuscript_task(run), len(book.scenes)):
                first = len(book.scenes)
        if first == 0:
            return None
        folders = stamp.grouped(check.files)
        contents = self._with_inputs(check.contents)
        if first is None and not self._save(folders, contents, check.records.generation):
            return None  # an input moved while it was read: doit checks
        return stamp.Reach(first, folders, contents, checked=check.checked)

    # -- the index --------------------------------------------------------------------
    def _with_inputs(self, contents: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
        """``contents`` and the book's inputs as this run read them: every scene reads the
        settings (scene 1 the initial state); the outline's scenes are told apart by their
        digests."""
        outline = (self.run.dir / "outline.json").as_posix()
        return {**contents, **{p: (state[2], stamp.OUTLINE if p == outline else 0)
                               for p, state in self.run.inputs.items()}}

    def _save(self, folders: dict[str, list], contents: dict[str, tuple[str, int]],
              generation: int) -> bool:
        """Write the index of a book found complete at DB ``generation``; False if one of
        the book's inputs moved since this run read it (nothing is written: the next run
        looks at it again)."""
        run = self.run
        outline = stamp.outline_digest((run.dir / "outline.json").as_posix())
        if outline is None:
            return False
        for path, (digest, _first) in contents.items():  # the outline's among them
            if filestate.digest(path, fresh=True) != digest:
                return False
        stamp.write(run.stamp_path, generation, folders, contents, run.absent, outline,
                    run.model_files)
        return True

    def save_index(self) -> None:
        """After a complete build: the files as the DB recorded them, each with the first
        scene that reads or writes it. After a build that loaded only the later scenes, the
        earlier scenes' files are carried over from the index it started from (none of
        them moved)."""
        run = self.run
        db = run.db
        path = run.stamp_path
        first = run.reached_from()
        if not first:  # the full path: the index may still be right (a no-op with an option)
            before = stamp.reach(path, db.generation(), bool(db.stale_views()))
            if before is not None and before.first is None:
                return  # nothing moved and no task committed since it was written
        index: dict[str, int] = {}
        recorded: dict[str, list] = {}
        loaded: set[str] = set()
        for i, scene in enumerate(run.loaded_scenes(), start=first):
            for phase, pf in run.layout(scene.id).items():
                task_id = f"{phase}:{scene.id}"
                loaded.add(task_id)
                for dep in list(pf.inputs.values()) + list(pf.templates.values()):
                    state = db.get(task_id, dep)
                    if not filestate.is_recorded_state(state) \
                            or recorded.setdefault(dep, state)[2] != state[2]:
                        stamp.drop(path)  # the DB does not agree with itself: no index
                        return
                    index.setdefault(dep, i)
                for out in pf.outputs.values():
                    index.setdefault(out, i)
        scenes = len(run.book.scenes)
        unread: set[str] = set()  # the manuscript's files: no task reads them
        book_tasks = {f"{p}:{s.id}" for s in run.book.scenes for p in PHASES} | {"manuscript"}
        # after a partial build, the earlier scenes' artifacts are carried over
        rows = db.output_rows(tasks=[*loaded, "manuscript"]) if first else db.output_rows()
        for out_path, task_id, _known, state_raw in rows:
            state = json.loads(state_raw) if state_raw else None
            if not filestate.is_recorded_state(state):
                stamp.drop(path)
                return
            recorded[out_path] = state
            if task_id == "manuscript":
                unread.add(out_path)
            elif task_id not in book_tasks:
                index[out_path] = 0  # a removed scene's file: any edit is the guard's
        by_content = run.by_content()
        files: dict[str, tuple[int, int, int]] = {}
        contents: dict[str, tuple[str, int]] = {}
        for dep, state in recorded.items():
            # a touched file with the recorded content is indexed as it is now (hashed once,
            # through the memo), so the next no-op need not hash it again. A manuscript
            # edited by hand is indexed as it is: the full path would not rebuild it either
            st = filestate.observe(dep)
            content = dep in by_content
            if st is None or (dep not in unread
                              and not filestate.matches(dep, state, st, by_content=content)):
                stamp.drop(path)
                return
            if content:
                contents[dep] = (state[2], index.get(dep, scenes))
            else:
                files[dep] = (st.st_mtime_ns, st.st_size, index.get(dep, scenes))
        contents = self._with_inputs(contents)
        reach = run.planner.reach()
        if first:
            folders = stamp.carry(reach, first, files)
            contents = {**{p: tuple(v) for p, v in (reach.inputs or {}).items()}, **contents}
        else:
            folders = stamp.grouped(files)
        if not self._save(folders, contents, db.generation()):
            stamp.drop(path)
