"""doit commands of scenemake: ``rerun-from``, ``ledger``, ``reset``, ``verify``.

They are doit plugins (entry points in pyproject.toml): doit imports them before
dodo.py, so they live in the installed package and import the book lazily.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict, deque

from doit.cmd_run import Run

from pipeline.core.errors import UserError
from targets.command import BookCommand, CommandBase

opt_dry_run = {"name": "rerun_dry_run", "long": "dry-run", "type": bool, "default": False,
               "help": "list the tasks that would be forgotten, forget nothing, run nothing"}
opt_all = {"name": "rerun_all", "long": "all", "type": bool, "default": False,
           "help": "rerun every phase of the book (fresh samples: new attempt numbers)"}


def downstream(task_list, start: list[str]) -> list[str]:
    """``start`` and every task that depends on them, through task_dep or files."""
    producer = {}
    for task in task_list:
        for target in task.targets:
            producer[target] = task.name
    users: dict[str, set[str]] = defaultdict(set)
    for task in task_list:
        for dep in task.file_dep:
            if dep in producer:
                users[producer[dep]].add(task.name)
        for dep in task.task_dep:
            users[dep].add(task.name)
    seen, queue = set(start), deque(start)
    while queue:
        for user in users[queue.popleft()]:
            if user not in seen:
                seen.add(user)
                queue.append(user)
    return sorted(seen, key=_scene_then_phase)


def _scene_then_phase(name: str) -> tuple:
    from pipeline.book.workspace import PHASES

    phase, _, sid = name.partition(":")
    return (sid, PHASES.index(phase) if phase in PHASES else -1, name)


class RerunFrom(CommandBase, Run):
    """Forget a phase and everything downstream of it, then build (fresh LLM samples)."""

    name = "rerun-from"
    doc_purpose = "forget PHASE:SCENE and everything downstream (later scenes too), then build"
    doc_usage = "PHASE:SCENE [...] | --all"
    doc_description = ("The forgotten LLM phases get a new attempt number, so they are asked "
                       "afresh instead of served from the response cache.")
    cmd_options = Run.cmd_options + (opt_dry_run, opt_all)

    def _execute(self, outfile, verbosity=None, always=False, continue_=False,
                 reporter="console", num_process=0, par_type="process", single=False,
                 auto_delayed_regex=False, force_verbosity=False, failure_verbosity=0,
                 pdb=False, rerun_dry_run=False, rerun_all=False, pos_args=None):
        db = self.scene_db()  # elsewhere: one line, nothing done
        try:
            forget = self._to_forget(pos_args or [], rerun_all)
        except BaseException:
            self.dep_manager.close()
            raise
        if rerun_dry_run:
            for name in forget:
                self.outstream.write(f"would forget {name}\n")
            self.outstream.write(f"{len(forget)} task(s); nothing changed\n")
            self.dep_manager.close()
            return 0
        from pipeline.book.phase_table import ASKING_PHASES  # lint too: its repair rounds

        for name in forget:
            note = ""
            if name.partition(":")[0] in ASKING_PHASES:
                note = f" (attempt {db.bump_attempt(name)})"
            db.forget(name)
            self.outstream.write(f"forgetting {name}{note}\n")
        from targets.book.tasks import DEFAULT_TASKS

        self.sel_tasks = list(DEFAULT_TASKS)  # then build, as a plain `doit` would
        self.control = None
        return super()._execute(outfile, verbosity, always, continue_, reporter, num_process,
                                par_type, single, auto_delayed_regex, force_verbosity,
                                failure_verbosity, pdb)

    def _to_forget(self, args: list[str], rerun_all: bool) -> list[str]:
        """The tasks ``rerun-from ARGS`` forgets, in scene then phase order."""
        from pipeline.book.workspace import PHASES, check_scene_id
        from targets.command import close_matches

        phase_tasks = [t for t in self.task_list if t.name.partition(":")[0] in PHASES
                       and ":" in t.name]
        by_name = {t.name: t for t in self.task_list}
        if rerun_all:
            if args:
                raise UserError("rerun-from --all takes no task names",
                                fix="doit rerun-from --all, or doit rerun-from PHASE:SCENE")
            start = [t.name for t in phase_tasks]
        else:
            if not args:
                raise UserError("rerun-from needs PHASE:SCENE or --all",
                                fix="e.g. doit rerun-from write:ch001_sc002")
            start = []
            for arg in args:
                phase, _, sid = arg.partition(":")
                if arg == "manuscript":  # the book's one text, regenerated from the prose
                    start.append(arg)
                    continue
                if phase not in PHASES:
                    raise UserError(f"'{arg}': unknown phase '{phase}'",
                                    fix=f"phases: {', '.join(PHASES)}, or manuscript")
                if sid:
                    check_scene_id(sid)
                    if arg not in by_name:
                        raise UserError(f"'{arg}': no such scene in this book"
                                        + close_matches(arg, sorted(by_name)))
                    start.append(arg)
                else:
                    start.extend(t.name for t in phase_tasks if t.name.startswith(phase + ":"))
        # the manuscript is rebuilt when a prose it reads changes (doit's own check); it is
        # forgotten only when named, so its record still tells its hand edits from its own
        return [n for n in downstream(self.task_list, start)
                if n in by_name and (":" in n or (n == "manuscript" and n in start))]


opt_json = {"name": "as_json", "long": "json", "type": bool, "default": False,
            "help": "print the ledger file's JSON instead of the table"}


class Ledger(BookCommand):
    """Print a scene's phase ledger, rewritten from the build DB."""

    name = "ledger"
    doc_purpose = "print the phase ledger of a scene as a table (rewritten from the build DB)"
    doc_usage = "SCENE [--json]"
    doc_description = ("One row per phase: status, when, attempt, cache, tokens, cost, prompt "
                       "change and its reason; --json prints the ledger file's JSON.")
    cmd_options = (opt_json,)

    def run(self, db, args, as_json=False) -> int:
        from pipeline.book import ledger
        from pipeline.book.workspace import check_scene_id
        from pipeline.core.store import dump_json
        from targets.book.run import of_command

        if len(args) != 1:
            raise UserError("ledger needs one scene id", fix="e.g. doit ledger ch001_sc001")
        sid = check_scene_id(args[0])
        book = of_command(self).book
        book.scene(sid)
        data = ledger.export(db, book, sid)
        # --json: the same text as the ledger file
        self.outstream.write(dump_json(data) if as_json else ledger.table(data))
        return 0


class Reset(BookCommand):
    """Archive the book's phase history and forget its tasks."""

    name = "reset"
    doc_purpose = "archive phase_history and forget every task of the book"
    doc_usage = ""
    doc_description = ("Artifacts stay on disk; the next doit rebuilds every phase (identical "
                       "requests are served from the response cache).")

    def run(self, db, args) -> int:
        from pipeline.book.workspace import PHASES
        from targets.book.run import of_command

        if args:
            raise UserError("reset takes no arguments", fix="doit reset")
        book = of_command(self).book
        archived = None
        if book.phase_history.exists() and any(book.phase_history.iterdir()):
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            archived = book.phase_history.parent / "phase_history_archive" / stamp
            archived.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(book.phase_history), str(archived))
        count = 0
        for name in db.task_ids():
            if name.partition(":")[0] in PHASES or name == "guard":
                db.forget(name)
                count += 1
        # Forgetting re-exported empty ledgers; they belong to no run, drop them.
        db.flush_views()
        if book.phase_history.exists():
            shutil.rmtree(book.phase_history)
        book.phase_history.mkdir(parents=True, exist_ok=True)
        where = f"; phase history archived to {archived}" if archived else ""
        self.outstream.write(f"forgot {count} task(s) of book '{book.name}'{where}\n")
        return 0


class Verify(BookCommand):
    """Re-hash every file the build DB recorded, whatever its mtime says."""

    name = "verify"
    doc_purpose = ("re-hash every recorded input and artifact of the book, ignoring mtimes; "
                   "show edits the (mtime, size) check cannot see")
    doc_usage = ""
    doc_description = (
        "A plain doit trusts a file whose size and mtime are as recorded (like make). An edit "
        "that kept the size and put the mtime back is invisible to it; verify reads every "
        "recorded file, lists those whose content differs from the record, and clears their "
        "recorded mtime so that the next doit applies its usual rules to them (a changed "
        "input rebuilds, an edited artifact is refused or accepted with force_resume=1); the "
        "next plain doit also takes the full path, which reads book.json, outline.json and "
        "state.json by content. It also reads back every kept version (doit history) and "
        "lists those whose content no longer matches its hash. Exit 1 when it found any.")

    def run(self, db, args) -> int:
        import os

        from pipeline.book import stamp
        from pipeline.core.hashing import hash_file
        from targets.book.run import of_command

        if args:
            raise UserError("verify takes no arguments", fix="doit verify")
        book = of_command(self).book  # a bad book is one line before anything is read
        _verify_build_db(db)
        hidden: dict[str, str] = {}  # path -> the task that recorded it

        def hidden_edit(path: str, state) -> bool:
            if not isinstance(state, list | tuple) or len(state) != 3:
                return False
            try:
                st = os.stat(path)
            except OSError:
                return False  # missing: every doit sees that already
            if (st.st_mtime_ns, st.st_size) != (state[0], state[1]):
                return False  # the stat check sees it already
            return hash_file(path, st) != state[2]

        for path, task_id, _known, state_raw in db.output_rows():
            state = json.loads(state_raw) if state_raw else None
            if hidden_edit(path, state):
                # mtime 0: the next check hashes the file and finds the change
                db.settle_outputs(task_id, {path: [0, state[1], state[2]]})
                hidden.setdefault(path, task_id)
        for task_id in db.task_ids():
            for path in db.get(task_id, "deps:") or []:
                state = db.get(task_id, path)
                if hidden_edit(path, state):
                    db.set(task_id, path, [0, state[1], state[2]])
                    hidden.setdefault(path, task_id)
        # The next plain doit takes the full path, which reads the book's own inputs
        # (book.json, outline.json, state.json) by content, whatever their mtime.
        stamp.drop(of_command(self).stamp_path)
        for path, task_id in sorted(hidden.items()):
            self.outstream.write(f"changed behind its mtime: {path} (recorded by {task_id})\n")
        if hidden:
            self.outstream.write(f"{len(hidden)} file(s); the next doit applies its rules "
                                 "to them\n")
        damaged = _verify_versions(book, self.outstream)
        if hidden or damaged:
            return 1
        self.outstream.write("every recorded file matches its record\n")
        return 0


def _verify_build_db(db) -> None:
    """``doit verify``'s check of the build DB itself: sqlite's ``quick_check`` whatever
    the file's size (an open checks only small ones); a damaged page is one line."""
    from pipeline.core import builddb, sqlitefile

    problem = sqlitefile.damage(db.name)
    if problem is not None:
        raise builddb.db_failure(db.name, sqlitefile.corrupt(problem), error=db.Error)


def _verify_versions(book, out) -> int:
    """``doit verify``'s check of the kept versions: every kept file read back and checked
    against its hash; prints one line per damaged one, returns how many."""
    from targets.book.versions import damaged_versions

    damaged = damaged_versions(book)
    for line in damaged:
        out.write(f"damaged kept version: {line}\n")
    if damaged:
        out.write(f"{len(damaged)} kept file(s) damaged: doit diff and restore refuse them "
                  "(the files in the book are not affected)\n")
    return len(damaged)
