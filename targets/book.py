"""doit tasks of the book pipeline: ``PHASE:SCENE`` for the eight phases, and ``guard``.

Task loading runs on every doit command, so it only builds dicts from strings; the
book is loaded once per process.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from doit.exceptions import InvalidDodoFile, TaskFailed

from pipeline.book.runvars import RunVars, parse
from pipeline.book.workspace import (
    OLD_TEMPLATES_FOLDER,
    PACKAGE_DIR,
    PHASES,
    TEMPLATE_NAMES,
    TEMPLATES_FOLDER,
    Book,
    Workspace,
    default_template_home,
    load_book,
)
from pipeline.core import builddb
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from targets.backend import BuildDBError  # noqa: F401  (the backend plugin, loaded by doit)
from targets.checker import Blake3Checker
from targets.uptodate import ExplainedOnInfo, InputsUnchanged

if TYPE_CHECKING:
    from pipeline.book import phases

WORKSPACE = Path("workspace")


def _run_vars() -> RunVars:
    """The validated variables of the current doit command line."""
    from doit import doit_cmd

    return parse(dict(doit_cmd._CMDLINE_VARS or {}))


@functools.cache
def _target() -> tuple[Workspace, str, RunVars]:
    try:
        rv = _run_vars()
        ws = Workspace(WORKSPACE)
        return ws, rv.book or ws.default_book(), rv
    except UserError as exc:
        raise InvalidDodoFile(str(exc)) from None


@functools.cache
def context() -> tuple[Book, RunVars]:
    """The book this run builds and the validated command-line variables."""
    ws, name, rv = _target()
    inputs = [ws.root / "scenemake.json", ws.book_dir(name) / "book.json",
              ws.book_dir(name) / "outline.json", ws.book_dir(name) / "state.json"]
    # stats of the book's inputs as this run reads them (for the stamp it may write)
    _input_stats.update({str(p): (st.st_mtime_ns, st.st_size) for p in inputs
                         if (st := _stat(p)) is not None})
    try:
        book = load_book(ws, name)
    except UserError as exc:
        raise InvalidDodoFile(str(exc)) from None
    builddb.subscribe(functools.partial(_on_task_recorded, book))
    builddb.on_open(_follow_package)
    return book, rv


def _follow_package(db) -> None:
    """scenemake's own files (the default templates) are recorded by path; after a move (a
    new venv, a moved checkout) the records follow them instead of every phase rebuilding.
    The recorded hashes stay: a default template whose content differs is still a prompt
    change, stopped by the guard. (Runs on every open, after the migrations below.)"""
    from pipeline.core.jsonio import display_path

    now = display_path(PACKAGE_DIR)
    before = db.setting("package_dir")
    if before is not None and before != now:
        db.relocate(before, now)
    if before != now:
        db.set_setting("package_dir", now)


def _recorded_package_dir(db) -> str | None:
    """The package folder a DB's phases read the default templates from, as its records
    show it (None when no record names a default template)."""
    for task_id in db.task_ids():
        template_set = db.values(task_id).get("template_set") or {}
        for entry in template_set.values():
            home = default_template_home(str((entry or {}).get("path", "")))
            if home is not None:
                return home
    return None


@builddb.migration("book.package_dir_setting")
def _m_package_dir_setting(db) -> None:
    """A DB from before the ``package_dir`` setting: the package folder is inferred from a
    recorded default template path (.../pipeline/templates/NAME.j2)."""
    if db.setting("package_dir") is None:
        found = _recorded_package_dir(db)
        if found is not None:
            db.set_setting("package_dir", found)


@builddb.migration("book.templates_in_book_family")
def _m_templates_moved(db) -> None:
    """The default templates moved from pipeline/templates/ to pipeline/book/templates/
    when the book became a family: records naming the old folder follow them (a DB
    written after the move, before migrations, says so in its ``templates_folder``)."""
    before = db.setting("package_dir")
    if before is not None and db.setting("templates_folder") != TEMPLATES_FOLDER:
        db.relocate(f"{before}/{OLD_TEMPLATES_FOLDER}", f"{before}/{TEMPLATES_FOLDER}")


_input_stats: dict[str, tuple[int, int]] = {}


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None


def _stat_key(path: str) -> tuple[int, int] | None:
    st = _stat(Path(path))
    return None if st is None else (st.st_mtime_ns, st.st_size)


def _stamp_path(ws: Workspace, name: str) -> Path:
    return ws.state_dir / "books" / f"{name}.stamp.json"


def _doit_cli() -> bool:
    """Running as doit's own command line (not doit's loader used from other code)."""
    return os.path.basename(sys.argv[0]) in ("doit", "__main__.py")


class _Selection:
    """What the running doit command names, as the task loader (targets/loader.py) told it.

    ``command`` is None when doit's own loader runs (no doit.cfg, or doit's loader used
    from other code): then every task loads.
    """

    command: str | None = None
    tasks: list[str] = []


_selection = _Selection()

# commands whose named tasks need only what is upstream of them (rerun-from, history and
# the others reach downstream or the whole book: they load everything)
_UPSTREAM_COMMANDS = frozenset({"run", "info", "list", "why"})


def select(command: str, tasks: list[str]) -> None:
    """Called by the task loader before any task is built: the command and its task names."""
    _selection.command = command
    _selection.tasks = list(tasks)
    _scene_limit.cache_clear()


def _cli_tasks() -> list[str] | None:
    """The tasks named by ``doit [run] [options] [TASK...]`` ([] for the defaults); None
    for another command or when doit's own loader runs (nothing is known)."""
    return list(_selection.tasks) if _selection.command == "run" else None


def book_tasks_only() -> bool:
    """``doit`` naming only book tasks (or none: the defaults), or ``info``/``list``/``why``
    of book tasks.

    Other families (L7) then need not load: no book task depends on theirs. Anything
    else - another command, ``doit list`` of everything, a target file - loads all.
    """
    if _selection.command not in _UPSTREAM_COMMANDS:
        return False
    if not _selection.tasks:
        return _selection.command == "run"
    names = set(PHASES) | {"guard", "_stamp", "manuscript"}
    return all(t.partition(":")[0] in names for t in _selection.tasks)


def plans_only() -> bool:
    """``doit plan`` or ``doit plan:SCENE ...``: plans read no other phase's output (only
    the outline, templates and config), so the other phases need not load."""
    tasks = _cli_tasks()
    return bool(tasks) and all(t.partition(":")[0] == "plan" for t in tasks)


@functools.cache
def _scene_limit() -> int | None:
    """How many scenes, from the first, the named tasks need: a phase of scene N reads
    only what scenes 1..N built (its pre-state is the previous scene's commit), so
    ``doit write:ch001_sc001`` loads and checks that chain, not the book. None: all.

    Only for commands that look upstream (run, info, list, why) and only when every name is
    a scene's phase; a phase group, ``guard`` (named, it checks the whole book),
    ``manuscript``, a file or an unknown name loads all (doit then reports what it does
    not know).
    """
    if _selection.command not in _UPSTREAM_COMMANDS or not _selection.tasks:
        return None
    book, _ = context()
    index = {scene.id: i for i, scene in enumerate(book.scenes)}
    limit = 0
    for name in _selection.tasks:
        phase, _, sid = name.partition(":")
        if phase not in PHASES or sid not in index:
            return None
        limit = max(limit, index[sid] + 1)
    return limit


def loaded_scenes() -> list:
    """The scenes whose tasks this command loads: all, unless it names a scene chain, or
    the stamp shows that the files which moved reach only the later scenes."""
    book, _ = context()
    limit = _scene_limit()
    if limit is not None:
        return book.scenes[:limit]
    first = reached_from()
    return book.scenes[first:] if first else book.scenes


def partial() -> bool:
    """This command loads only a chain of scenes (the book-wide tasks are left out)."""
    return _scene_limit() is not None


@functools.cache
def _reach():
    """For a plain ``doit`` (variables allowed): what moved since the last complete build,
    as its stamp shows it (``stamp.Reach``); None: the full path.

    The variables (validated by ``_target`` first, so a typo still fails) cannot change a
    build in which nothing moved: ``force_resume`` and ``allow_prompt_change`` only accept
    changes, ``budget`` only caps calls, ``book`` picks the stamp. Nor can the options of
    how tasks run and report (``-n 4 -P thread``, ``-v 2``, ``--continue``).
    """
    from pipeline.book import stamp

    if not _doit_cli() or not _plain_run(sys.argv[1:]):
        # task names, other options, another command, or doit's loader used from other code
        return None
    ws, name, _ = _target()
    found = stamp.reach(_stamp_path(ws, name), ws.db_path(name))
    if found is not None:
        return found
    # what the check builds lives until the process exits: keep the collector's passes
    # off it (as the task loader does, targets/loader.py)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _records_reach()
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _records_reach():
    """No stamp to go by: the book's tasks checked against their records, scene by scene
    (targets/records_check.py), before doit loads any. All up to date: stamped, and the
    fast path. Else the scenes before the first one that is not need not load (they read
    nothing a later scene writes). None: from the first scene, doit checks everything."""
    from pipeline.book import stamp
    from pipeline.core.jsonio import display_path
    from targets.records_check import RecordsCheck

    ws, name, _ = _target()
    check = RecordsCheck.open(ws.db_path(name), display_path(PACKAGE_DIR))
    if check is None:
        return None
    book, _ = context()
    first: int | None = None
    for i, scene in enumerate(book.scenes):
        layout = _layout(scene.id)
        if not all(check.task({**_scene_task(phase, scene), "name": f"{phase}:{scene.id}"}, i,
                              layout[phase].templates) for phase in layout):
            first = i
            break
    else:
        if not check.task(_manuscript_task(), len(book.scenes)):
            first = len(book.scenes)
    if first == 0:
        return None
    folders = stamp.grouped(_with_inputs(check.files))
    if first is None and not _stamp(folders, check.generation):
        return None  # the outline moved while it was read: doit checks
    return stamp.Reach(first, folders, checked=check.checked)


# doit run's options that change how tasks run or report, never which are up to date;
# True: the option takes a value
_HOW_OPTIONS = {"-n": True, "--process": True, "-P": True, "--parallel-type": True,
                "-v": True, "--verbosity": True, "-r": True, "--reporter": True,
                "-c": False, "--continue": False}


def _plain_run(args: list[str]) -> bool:
    """``args`` (after ``doit``) name no task and no command: variables and the options
    of ``_HOW_OPTIONS`` only (``-n4``, ``-n 4`` and ``--process=4`` alike)."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            if "=" not in arg:
                return False  # a task name or a command
            continue
        name, eq, _ = arg.partition("=")
        if name in _HOW_OPTIONS:
            if _HOW_OPTIONS[name] and not eq:
                i += 1  # its value is the next argument
            continue
        if not (arg[:2] in _HOW_OPTIONS and _HOW_OPTIONS[arg[:2]] and not arg.startswith("--")):
            return False  # any other option (-a always runs, -s picks, -f another dodo ...)
    return True


def fast() -> bool:
    """Nothing changed since the last complete build: load no task."""
    found = _reach()
    return found is not None and found.first is None


def reached_from() -> int:
    """The index of the first scene this plain ``doit`` loads (0: all): the scenes before
    it read no file that moved since the last complete build, so they are up to date."""
    found = _reach()
    return found.first if found is not None and found.first is not None else 0


def doit_config() -> dict:
    """DOIT_CONFIG for dodo.py: the per-task-commit sqlite DB of the book, blake3 checker."""
    ws, name, _ = _target()
    if _doit_cli():  # Ctrl-C/SIGTERM from here on: one line, exit 130/143 (targets/progress.py)
        from pipeline.core import interrupt

        interrupt.install()
    db_path = ws.db_path(name)
    if not fast():
        context()  # load and check the book now: bad input stops every command
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "backend": "scenemake",
        "dep_file": str(db_path),
        "check_file_uptodate": Blake3Checker,
        "default_tasks": (["guard"] if fast()
                          else ["guard"] + list(PHASES) + ["manuscript", "_stamp"]),
        "verbosity": 2,
        # the live display on a terminal; plain lines in logs and pipes
        "reporter": "scenemake" if sys.stdout.isatty() else "scenemake-lines",
    }


def _on_task_recorded(book: Book, task_id: str, what: str) -> None:
    """After doit commits or drops a phase's record, rewrite that scene's ledger."""
    from pipeline.book import ledger

    phase, _, sid = task_id.partition(":")
    db = builddb.current()
    if phase in PHASES and sid:
        ledger.export(db, book, sid)
        if what == "saved":
            _keep_version(book, db, task_id)
    db.views_written(task_id)


def _versions(book: Book):
    from pipeline.book.versions import Versions

    return Versions(book.workspace.state_dir, book.name)


def _keep_version(book: Book, db, task_id: str) -> None:
    """A phase committed: keep its files as a version (if they are new)."""
    from pipeline.book.versions import meta_from_values

    values = db.values(task_id)
    files = values.get("artifacts") or {}
    if not files:
        return
    store = _versions(book)
    history = store.history(task_id)
    states = values.get("artifact_states") or {}
    if history and history[-1]["files"] == {name: (states.get(path) or [0, 0, None])[2]
                                            for name, path in files.items()}:
        return  # already kept (known from the record's hashes: no file is read)
    meta = meta_from_values(values, history[-1] if history else None, db.events(task_id))
    store.add(task_id, files, meta)


def _keep_unversioned(book: Book, db, task_id: str) -> None:
    """Before a phase replaces files built before versions were kept: keep them first."""
    store = _versions(book)
    if store.index_path(task_id).exists():
        return
    values = db.values(task_id)
    if values.get("artifacts"):
        meta = {"timestamp": values.get("timestamp"), "reason": "built before versions were kept"}
        if "attempt" in values:
            meta["attempt"] = values["attempt"]
        if values.get("prompt_hash"):
            meta["prompt_hash"] = values["prompt_hash"]
        store.add(task_id, values["artifacts"], meta)


def _refresh_stale_ledgers(book: Book, db) -> None:
    """Ledgers a killed run (or a moved install) left behind the DB: each scene's once."""
    from pipeline.book import ledger

    stale = db.stale_views()
    for sid in dict.fromkeys(sid for phase, _, sid in (t.partition(":") for t in stale)
                             if phase in PHASES and sid):
        ledger.export(db, book, sid)
    for task_id in stale:  # the versions a kill kept from being recorded
        if task_id.partition(":")[0] in PHASES and db.values(task_id):
            _keep_version(book, db, task_id)
    db.views_written(*stale)


def _act(phase: str, sid: str, changed: list[str]):
    from pipeline.book.runner import run_phase  # the LLM stack loads only when a phase runs
    from pipeline.core import cpu_turn

    book, rv = context()
    task_id = f"{phase}:{sid}"
    db = builddb.current()
    try:
        _keep_unversioned(book, db, task_id)
        with cpu_turn.turn():  # one task's Python work at a time; model calls overlap
            values = run_phase(book, sid, phase, changed, rv)
    except UserError as exc:
        db.set_failure(task_id, str(exc))
        return TaskFailed(str(exc))
    return values  # its failure, if any, is cleared when doit commits the success


# Phases whose non-file inputs are the same for every scene: hash them once per process.
_PER_SCENE_INPUTS = ("plan", "preflight")


@functools.cache
def _inputs_hash(phase: str, sid: str | None) -> str:
    """A phase's slice of outline and book settings, hashed when a task is first checked
    (``sid`` None: the slice every scene shares)."""
    from pipeline.book import phases

    book, _ = context()
    return phases.inputs_hash(book, book.scene(sid) if sid else book.scenes[0], phase)


def explaining() -> bool:
    """``doit info``: the rules that name causes in the user's terms are checked too."""
    if _selection.command is not None:
        return _selection.command == "info"
    if not _doit_cli():  # doit's own loader: the command line is all there is to go by
        return False
    args = [a for a in sys.argv[1:] if a.startswith("-") or "=" not in a]
    return bool(args) and args[0] == "info"


def _rules(phase: str, sid: str, templates: dict[str, str]) -> list:
    if not explaining():  # a run loads nothing it would not check
        return [_inputs_rule(phase, sid)]
    return [_inputs_rule(phase, sid), ExplainedOnInfo(f"{phase}:{sid}", templates, explaining)]


def _inputs_rule(phase: str, sid: str) -> InputsUnchanged:
    from pipeline.book import inputs

    book, _ = context()
    return InputsUnchanged(
        f"{phase}:{sid}",
        functools.partial(_inputs_hash, phase, sid if phase in _PER_SCENE_INPUTS else None),
        lambda: inputs.fingerprint(book, book.scene(sid), phase))


@functools.cache
def _layout(sid: str) -> dict[str, phases.PhaseFiles]:
    from pipeline.book import phases

    book, _ = context()
    return phases.layout(book, sid)


def _layouts() -> dict[str, dict[str, phases.PhaseFiles]]:
    """The phase files of every scene this command loads."""
    return {scene.id: _layout(scene.id) for scene in loaded_scenes()}


def _scene_task(phase: str, scene) -> dict:
    """The task ``PHASE:SCENE`` (``name`` the scene: doit's subtask of the group)."""
    files = _layout(scene.id)[phase]
    return {
        "name": scene.id,
        "actions": [(_act, [phase, scene.id])],
        "file_dep": list(files.inputs.values()) + list(files.templates.values()),
        "targets": list(files.outputs.values()),
        "uptodate": _rules(phase, scene.id, files.templates),
        "task_dep": ["guard"],
        "doc": f"{phase} of {scene.id}: {scene.title}",
        # 2: nothing captured, so a failure shows its one message and no empty dumps
        "verbosity": 2,
    }


def _phase_tasks(phase: str):
    if fast() or (phase != "plan" and plans_only()):
        return
    for scene in loaded_scenes():
        yield _scene_task(phase, scene)


def _guard() -> TaskFailed | None:
    from pipeline.book import ledger
    from pipeline.book import rules as policies

    book, rv = context()
    db = builddb.current()
    task_templates = {}
    for scene in loaded_scenes():
        for phase, files in _layout(scene.id).items():
            if files.templates:  # the LLM phases, and lint (its repair rounds)
                task_templates[f"{phase}:{scene.id}"] = files.templates
    try:
        _refresh_stale_ledgers(book, db)
        changes = policies.find_template_changes(db, task_templates)
        policies.require_prompt_change_allowed(changes, rv)
        accepted = policies.handle_edits(db, policies.find_edits(db, _loaded_outputs()), rv)
        for sid in sorted({t.partition(":")[2] for t in accepted}):
            ledger.export(db, book, sid)
    except UserError as exc:
        return TaskFailed(str(exc))
    # The book, its models and its tasks are loaded and live until the process exits:
    # keep the garbage collector off them (its full passes, and the one at exit, walked
    # them all; measured: exit 83 -> 39 ms for 200 plans, see bench/README.md 4c).
    gc.freeze()
    return None


def _loaded_outputs() -> list[str] | None:
    """The artifacts of the loaded scene chain (None: the whole book's), for the guard."""
    if not partial() and not reached_from():
        return None
    return [path for layout in _layouts().values() for pf in layout.values()
            for path in pf.outputs.values()]


def task_guard():
    """Checks templates and hand edits for the whole book before any LLM call."""
    if fast():
        return {"actions": [_nothing_changed], "uptodate": [False], "verbosity": 2}
    return {"actions": [_guard], "uptodate": [False], "verbosity": 2}


def _nothing_changed() -> None:
    """The fast path's guard: the stamp already showed every file as built."""


def _write_stamp() -> None:
    """After a complete build: the files as the DB recorded them, each with the first
    scene that reads or writes it, for the fast path. After a build that loaded only the
    later scenes, the earlier scenes' files are carried over from the stamp it started
    from (none of them moved)."""
    from pipeline.book import stamp

    book, _ = context()
    db = builddb.current()
    path = _stamp_path(book.workspace, book.name)
    first = reached_from()
    if not first:  # the full path: the stamp may still be right (a no-op with an option)
        before = stamp.reach(path, book.workspace.db_path(book.name))
        if before is not None and before.first is None:
            return  # nothing moved and no task committed since it was written: it stands
    index: dict[str, int] = {}
    recorded: dict[str, list] = {}
    loaded: set[str] = set()
    for i, (sid, layout) in enumerate(_layouts().items(), start=first):
        for phase, pf in layout.items():
            task_id = f"{phase}:{sid}"
            loaded.add(task_id)
            for dep in list(pf.inputs.values()) + list(pf.templates.values()):
                state = db.get(task_id, dep)
                if not state or recorded.setdefault(dep, state)[2] != state[2]:
                    stamp.drop(path)  # the DB does not agree with itself: no fast path
                    return
                index.setdefault(dep, i)
            for out in pf.outputs.values():
                index.setdefault(out, i)
    scenes = len(book.scenes)
    unread: set[str] = set()  # the manuscript's files: no task reads them
    # after a partial build, the earlier scenes' artifacts are carried over
    rows = db.output_rows(tasks=[*loaded, "manuscript"]) if first else db.output_rows()
    for out_path, task_id, _known, state_raw in rows:
        if not state_raw:
            stamp.drop(path)
            return
        recorded[out_path] = json.loads(state_raw)
        if task_id == "manuscript":
            unread.add(out_path)
    files: dict[str, tuple[int, int, int]] = {}
    for dep, state in recorded.items():
        # a touched file with the recorded content is stamped as it is now (hashed once,
        # through the memo), so the next no-op need not hash it again. A manuscript edited
        # by hand is stamped as it is: the full path would not rebuild it either (it is
        # kept beside the next one when a scene's prose changes)
        try:
            st = os.stat(dep)  # once: the recorded hash stands when the stat matches
            if dep not in unread and (st.st_mtime_ns, st.st_size) != (state[0], state[1]) \
                    and hash_file(dep, st) != state[2]:
                stamp.drop(path)
                return
        except (OSError, IndexError, TypeError):
            stamp.drop(path)
            return
        files[dep] = (st.st_mtime_ns, st.st_size, index.get(dep, scenes))
    files = _with_inputs(files)
    if not _stamp(stamp.carry(_reach(), first, files) if first else stamp.grouped(files),
                  db.generation()):
        stamp.drop(path)


def _with_inputs(files: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
    """``files`` and the book's inputs as this run read them: every scene reads the
    settings (scene 1 the initial state); the outline's scenes are told apart by their
    digests."""
    from pipeline.book import stamp

    book, _ = context()
    outline = str(book.dir / "outline.json")
    return {**files, **{p: (m, s, stamp.OUTLINE if p == outline else 0)
                        for p, (m, s) in _input_stats.items()}}


def _stamp(folders: dict[str, list], generation: int) -> bool:
    """Write the stamp of a book found complete at DB ``generation`` (its files as
    ``stamp.grouped`` gives them); False if the outline moved since this run read it
    (nothing is written: the next run looks at it again)."""
    from pipeline.book import stamp

    book, _ = context()
    # overrides that do not exist yet: one appearing changes which template a phase reads
    absent = [str(book.dir / "templates" / f"{name}.j2") for name in TEMPLATE_NAMES
              if name not in book.config.templates
              and not (book.dir / "templates" / f"{name}.j2").exists()]
    # the digest must describe the outline this run loaded: one edited since is not
    # stamped (its scenes would look built), so the next run looks at it again
    outline = str(book.dir / "outline.json")
    started = _input_stats.get(outline)
    digest = stamp.outline_digest(outline) if started == _stat_key(outline) else None
    if digest is None or started != _stat_key(outline):
        return False
    stamp.write(_stamp_path(book.workspace, book.name), generation, folders, absent, digest)
    return True


def task__stamp():
    """After every phase of the book succeeded: the fast path's stamp."""
    if fast() or plans_only() or partial():
        return {"actions": None, "uptodate": [True]}
    return {"actions": [_write_stamp], "task_dep": list(PHASES) + ["manuscript"],
            "uptodate": [False],
            "verbosity": 2}


def task_phases():
    """Every phase of every scene, as the phase table declares them
    (pipeline/book/phase_table.py): tasks ``PHASE:SCENE`` in groups ``PHASE``."""
    from pipeline.book.phase_table import TABLE

    for phase in TABLE:
        yield {"basename": phase.name, "name": None, "doc": phase.doc}
        for task in _phase_tasks(phase.name):
            yield {"basename": phase.name, **task}


def _build_manuscript() -> dict | TaskFailed:
    """Write draft/manuscript.md and .html from every scene's final prose (unchanged bytes
    are not rewritten); a copy edited by hand is kept beside it, never overwritten."""
    from pipeline.book import manuscript
    from pipeline.core.hashing import hash_bytes
    from pipeline.core.store import atomic_write_many

    book, _ = context()
    db = builddb.current()
    prose: dict[str, str] = {}
    stand_in = False
    try:
        for scene in book.scenes:
            prose[scene.id] = manuscript.read_prose(manuscript.final_prose_path(book, scene.id))
            if not stand_in:  # one scene from the stand-in is enough to say so
                llm = db.values(f"repair:{scene.id}").get("llm") or {}
                stand_in = llm.get("provider") == "offline"
        files = manuscript.render(book, prose, stand_in)
        written = db.values("manuscript").get("artifact_states", {})
        changed: dict[str, bytes] = {}
        states: dict[str, list] = {}
        for path, blob in files.items():
            digest = hash_bytes(blob)
            try:
                now = hash_file(str(path))
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                now = None
            if now != digest:
                before = written.get(str(path))
                if now is not None and (before is None or before[2] != now):
                    # not the file scenemake wrote last: a hand edit, kept under another name
                    keep = path.with_name(f"{path.stem}.edited-{now[:8]}{path.suffix}")
                    changed[str(keep)] = path.read_bytes()
                    print(f"{path} was edited by hand: kept as {keep}")
                changed[str(path)] = blob
            states[str(path)] = digest
        atomic_write_many(changed)
    except UserError as exc:
        return TaskFailed(str(exc))
    recorded = {}
    for path, digest in states.items():
        st = os.stat(path)
        recorded[path] = [st.st_mtime_ns, st.st_size, digest]
    return {"artifact_states": recorded, "stand_in": stand_in}


def _manuscript_task() -> dict:
    from pipeline.book import manuscript

    book, _ = context()
    where = manuscript.paths(book)
    return {"name": "manuscript", "actions": [_build_manuscript],
            "file_dep": [manuscript.final_prose_path(book, s.id) for s in book.scenes]
            + [(book.dir / "outline.json").as_posix(), book.config_path.as_posix()],
            "targets": [where.markdown.as_posix(), where.html.as_posix()],
            "task_dep": ["guard"], "verbosity": 2}


def task_manuscript():
    """The book as one text: draft/manuscript.md and draft/manuscript.html."""
    if fast() or plans_only() or partial():
        return {"actions": None, "uptodate": [True]}
    task = _manuscript_task()
    del task["name"]  # doit names it after the function
    return task
