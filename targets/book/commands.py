"""doit commands of scenemake: ``rerun-from``, ``ledger``, ``reset``, ``verify``.

They are doit plugins (entry points in pyproject.toml): doit imports them before
dodo.py, so they live in the installed package and import the book lazily.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict, deque

from doit.cmd_base import DoitCmdBase
from doit.cmd_run import Run
from doit.exceptions import InvalidCommand

from pipeline.core.errors import UserError

opt_dry_run = {"name": "rerun_dry_run", "long": "dry-run", "type": bool, "default": False,
               "help": "list the tasks that would be forgotten, forget nothing, run nothing"}
opt_all = {"name": "rerun_all", "long": "all", "type": bool, "default": False,
           "help": "rerun every phase of the book (fresh samples: new attempt numbers)"}


def _scene_db(dep_manager):
    from pipeline.core.builddb import SceneDB

    backend = dep_manager.backend
    if not isinstance(backend, SceneDB):
        raise InvalidCommand("this command needs the scenemake backend (DOIT_CONFIG backend)")
    return backend


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


class RerunFrom(Run):
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
        from targets.command import require_scenemake

        require_scenemake(self.name, self.dep_manager)  # elsewhere: one line, nothing done
        from pipeline.book.phase_table import ASKING_PHASES
        from pipeline.book.workspace import PHASES, check_scene_id

        phase_tasks = [t for t in self.task_list if t.name.partition(":")[0] in PHASES
                       and ":" in t.name]
        by_name = {t.name: t for t in self.task_list}
        if rerun_all:
            if pos_args:
                raise InvalidCommand("rerun-from --all takes no task names")
            start = [t.name for t in phase_tasks]
        else:
            if not pos_args:
                raise InvalidCommand("rerun-from needs PHASE:SCENE (e.g. write:ch001_sc002) "
                                     "or --all")
            start = []
            for arg in pos_args:
                phase, _, sid = arg.partition(":")
                if arg == "manuscript":  # the book's one text, regenerated from the prose
                    start.append(arg)
                    continue
                if phase not in PHASES:
                    raise InvalidCommand(f"'{arg}': unknown phase '{phase}' "
                                         f"(phases: {', '.join(PHASES)})")
                if sid:
                    try:
                        check_scene_id(sid)
                    except UserError as exc:
                        raise InvalidCommand(str(exc)) from None
                    if arg not in by_name:
                        raise InvalidCommand(f"'{arg}': no such scene in this book")
                    start.append(arg)
                else:
                    start.extend(t.name for t in phase_tasks if t.name.startswith(phase + ":"))
        # the manuscript is rebuilt when a prose it reads changes (doit's own check); it is
        # forgotten only when named, so its record still tells its hand edits from its own
        forget = [n for n in downstream(self.task_list, start)
                  if n in by_name and (":" in n or (n == "manuscript" and n in start))]
        if rerun_dry_run:
            for name in forget:
                self.outstream.write(f"would forget {name}\n")
            self.outstream.write(f"{len(forget)} task(s); nothing changed\n")
            self.dep_manager.close()
            return 0
        db = _scene_db(self.dep_manager)
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


opt_json = {"name": "as_json", "long": "json", "type": bool, "default": False,
            "help": "print the ledger file's JSON instead of the table"}


class Ledger(DoitCmdBase):
    """Print a scene's phase ledger, rewritten from the build DB."""

    name = "ledger"
    doc_purpose = "print the phase ledger of a scene as a table (rewritten from the build DB)"
    doc_usage = "SCENE [--json]"
    doc_description = ("One row per phase: status, when, attempt, cache, tokens, cost, prompt "
                       "change and its reason; --json prints the ledger file's JSON.")
    cmd_options = (opt_json,)

    def _execute(self, pos_args=None, as_json=False):
        from pipeline.book import ledger
        from pipeline.book.workspace import check_scene_id
        from targets.command import command_db

        with command_db(self.name, self.dep_manager) as db:
            from targets.book.run import of_command

            if not pos_args or len(pos_args) != 1:
                raise UserError("ledger needs one scene id", fix="e.g. doit ledger ch001_sc001")
            sid = check_scene_id(pos_args[0])
            book = of_command(self).book
            book.scene(sid)
            data = ledger.export(db, book, sid)
        from pipeline.core.store import dump_json

        # --json: the same text as the ledger file
        self.outstream.write(dump_json(data) if as_json else ledger.table(data))
        return 0


class Reset(DoitCmdBase):
    """Archive the book's phase history and forget its tasks."""

    name = "reset"
    doc_purpose = "archive phase_history and forget every task of the book"
    doc_usage = ""
    doc_description = ("Artifacts stay on disk; the next doit rebuilds every phase (identical "
                       "requests are served from the response cache).")
    cmd_options = ()

    def _execute(self, pos_args=None):
        from pipeline.book.workspace import PHASES
        from targets.command import require_scenemake

        require_scenemake(self.name, self.dep_manager)  # elsewhere: one line, nothing done
        from targets.book.run import of_command

        book = of_command(self).book
        db = _scene_db(self.dep_manager)
        archived = None
        try:
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
        finally:
            self.dep_manager.close()
        where = f"; phase history archived to {archived}" if archived else ""
        self.outstream.write(f"forgot {count} task(s) of book '{book.name}'{where}\n")
        return 0


class Verify(DoitCmdBase):
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
    cmd_options = ()

    def _execute(self, pos_args=None):
        import os

        from pipeline.book import stamp
        from pipeline.core.hashing import hash_file
        from targets.book.run import of_command

        if pos_args:
            raise InvalidCommand("verify takes no arguments")
        book = of_command(self).book  # a bad book is one line before anything is read
        db = _scene_db(self.dep_manager)
        try:
            _verify_build_db(db)
        except BaseException:
            self.dep_manager.close()
            raise
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

        try:
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
        finally:
            self.dep_manager.close()
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


# -- a closed pipe ends a command quietly --------------------------------------------------
def _pipe_closed() -> int:
    """``doit list | head``: the reader went away. Like other command-line tools, stop
    without a word: no traceback, and no "Exception ignored" when Python flushes stdout at
    exit (stdout now points at /dev/null). The exit code is the shell's for SIGPIPE."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass
    finally:
        os.close(devnull)
    return 128 + 13  # SIGPIPE


def quiet_pipe(cls: type) -> type:
    """A doit command class whose output to a closed pipe ends it quietly."""

    class Quiet(cls):  # type: ignore[valid-type, misc]
        __doc__ = cls.__doc__

        def execute(self, params, args):
            import sys

            try:
                code = super().execute(params, args)
                sys.stdout.flush()  # a pipe closed after the last write fails here, not at exit
                return code
            except BrokenPipeError:
                return _pipe_closed()

    Quiet.__name__ = Quiet.__qualname__ = cls.__name__
    return Quiet


def _doit_command(module: str, name: str) -> type:
    import importlib

    return quiet_pipe(getattr(importlib.import_module(module), name))


# doit's own read-only commands, registered under their own names (a plugin command replaces
# the built-in one of the same name), and scenemake's.
List = _doit_command("doit.cmd_list", "List")
Info = _doit_command("doit.cmd_info", "Info")
Help = _doit_command("doit.cmd_help", "Help")
RerunFrom = quiet_pipe(RerunFrom)
Ledger = quiet_pipe(Ledger)
Reset = quiet_pipe(Reset)
Verify = quiet_pipe(Verify)
