"""doit tasks of the book pipeline, built from a run (targets/book/run.py): ``guard``,
``PHASE:SCENE`` for the eight phases, ``manuscript`` and ``_stamp``.

Task loading runs on every doit command, so it only builds dicts from strings; the book
is loaded once per run. What a plain ``doit`` loads at all is the plan's to say
(targets/book/planner.py).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from doit.exceptions import InvalidDodoFile, TaskFailed

from pipeline.book.runvars import ACCEPTED_SETTING, parse
from pipeline.book.workspace import (
    OLD_TEMPLATES_FOLDER,
    PACKAGE_DIR,
    PHASES,
    TEMPLATES_FOLDER,
    Book,
    Workspace,
    default_template_home,
)
from pipeline.core import builddb
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_file
from targets.backend import BuildDBError  # noqa: F401  (the backend plugin, loaded by doit)
from targets.book.run import WORKSPACE, BookRun
from targets.book.uptodate import ExplainedOnInfo, InputsUnchanged, OutputsAsRecorded
from targets.checker import Blake3Checker

if TYPE_CHECKING:
    from pipeline.core.builddb import SceneDB

# Every book task, in the order a plain doit runs them (the stamp last).
DEFAULT_TASKS = ["guard", *PHASES, "manuscript", "_stamp"]
# Phases whose non-file inputs are the same for every scene: hashed once per run.
_PER_SCENE_INPUTS = ("plan", "preflight")


def doit_config() -> dict:
    """DOIT_CONFIG for dodo.py: the book's per-task-commit sqlite DB, the blake3 checker.

    Only the variables are read here (which book): what the command loads is decided by
    the task loader, which knows the command (targets/loader.py).
    """
    import sys

    from doit import doit_cmd

    try:
        rv = parse(dict(doit_cmd._CMDLINE_VARS or {}))
        ws = Workspace(WORKSPACE)
        db_path = ws.db_path(rv.book or ws.default_book())
    except UserError as exc:
        raise InvalidDodoFile(str(exc)) from None
    from targets.progress import watch_signals

    watch_signals()  # Ctrl-C/SIGTERM while tasks load: one line too
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "backend": "scenemake",
        "dep_file": str(db_path),
        "check_file_uptodate": Blake3Checker,
        "default_tasks": list(DEFAULT_TASKS),
        # phases run in threads: model calls overlap, the build DB stays one process's
        "par_type": "thread",
        "verbosity": 2,
        # the live display on a terminal; plain lines in logs and pipes
        "reporter": "scenemake" if sys.stdout.isatty() else "scenemake-lines",
    }


def task_book():
    """The book's tasks; scenemake's task loader (doit.cfg: ``[GLOBAL] loader = scenemake``)
    replaces this with the tasks of the command's run."""
    raise InvalidDodoFile("scenemake needs its task loader: put doit.cfg with "
                          "'[GLOBAL]' and 'loader = scenemake' beside dodo.py")


task_book.scenemake = True  # the loader finds the book's generator by this mark


# -- the build DB of a run --------------------------------------------------------------
def attach(run: BookRun, db: SceneDB) -> None:
    """Hand the run the build DB doit opened: records follow a moved install, and each
    committed task rewrites its scene's ledger."""
    run.db = db
    follow_package(db)
    if run.side is None:
        _take_acceptance(run, db)
    db.subscribe(lambda task_id, what: _on_task_recorded(run, task_id, what))


def _take_acceptance(run: BookRun, db: SceneDB) -> None:
    """The templates ``doit accept`` made the book's: this run records them as accepted
    prompt changes (with the try's reason), as ``allow_prompt_change`` would."""
    raw = db.setting(ACCEPTED_SETTING)
    if raw:
        import dataclasses

        from pipeline.book.tries import accepted_vars

        run.vars = dataclasses.replace(run.vars, **accepted_vars(raw))


def _acceptance_used(run: BookRun) -> None:
    """A complete build used the accepted templates: the acceptance is done (a later change
    back to them is a change like any other)."""
    if run.vars.accepted:
        run.db.drop_setting(ACCEPTED_SETTING)


def follow_package(db: SceneDB) -> None:
    """scenemake's own files (the default templates) are recorded by path; after a move (a
    new venv, a moved checkout) the records follow them instead of every phase rebuilding.
    The recorded hashes stay: a default template whose content differs is still a prompt
    change, stopped by the guard. (The one relocation of a book's records.)"""
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


def _on_task_recorded(run: BookRun, task_id: str, what: str) -> None:
    """After doit commits or drops a phase's record, rewrite that scene's ledger."""
    from pipeline.book import ledger

    phase, _, sid = task_id.partition(":")
    db = run.db
    if phase in PHASES and sid:
        ledger.export(db, run.book, sid)
        if what == "saved":
            _keep_version(run.book, db, task_id)
    db.views_written(task_id)


def _versions(book: Book):
    from pipeline.book.versions import Versions

    return Versions(book.workspace.state_dir, book.versions_name)


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


# -- the tasks -----------------------------------------------------------------------
def _act(run: BookRun, phase: str, sid: str, changed: list[str]):
    from pipeline.book.runner import run_phase  # the LLM stack loads only when a phase runs
    from pipeline.core import cpu_turn

    task_id = f"{phase}:{sid}"
    db = run.db
    try:
        _keep_unversioned(run.book, db, task_id)
        with cpu_turn.turn():  # one task's Python work at a time; model calls overlap
            values = run_phase(run.book, sid, phase, changed, run.vars, db)
    except UserError as exc:
        db.set_failure(task_id, str(exc))
        return TaskFailed(str(exc))
    return values  # its failure, if any, is cleared when doit commits the success


def _rules(run: BookRun, phase: str, sid: str, files) -> list:
    task_id = f"{phase}:{sid}"
    rules: list = [_inputs_rule(run, phase, sid),
                   OutputsAsRecorded(task_id, list(files.outputs.values()), run.recorded_output)]
    if run.explaining():  # a run loads nothing it would not check
        rules.append(ExplainedOnInfo(task_id, files.templates, run.explaining,
                                     lambda: run.db))
    return rules


def inputs_digest(run: BookRun, phase: str, sid: str) -> str:
    """What the inputs rule of ``PHASE:SCENE`` compares (hashed once per run for the phases
    whose slice every scene shares)."""
    return run.inputs_hash(phase, sid if phase in _PER_SCENE_INPUTS else None)


def _inputs_rule(run: BookRun, phase: str, sid: str) -> InputsUnchanged:
    from pipeline.book import inputs

    return InputsUnchanged(
        f"{phase}:{sid}", lambda: inputs_digest(run, phase, sid),
        lambda: inputs.fingerprint(run.book, run.book.scene(sid), phase))


def scene_files(files) -> tuple[list[str], list[str]]:
    """(file_dep, targets) of a phase task from its files (``phases.PhaseFiles``)."""
    return (list(files.inputs.values()) + list(files.templates.values()),
            list(files.outputs.values()))


def scene_task(run: BookRun, phase: str, scene) -> dict:
    """The task ``PHASE:SCENE`` (``name`` the scene: doit's subtask of the group)."""
    files = run.layout(scene.id)[phase]
    file_dep, targets = scene_files(files)
    return {
        "name": scene.id,
        "actions": [(_act, [run, phase, scene.id])],
        "file_dep": file_dep,
        "targets": targets,
        "uptodate": _rules(run, phase, scene.id, files),
        "task_dep": ["guard"],
        "doc": f"{phase} of {scene.id}: {scene.title}",
        # 2: nothing captured, so a failure shows its one message and no empty dumps
        "verbosity": 2,
    }


def _phase_tasks(run: BookRun, phase: str) -> Iterator[dict]:
    if phase != "plan" and run.selection.plans_only():
        return
    for scene in run.loaded_scenes():
        yield scene_task(run, phase, scene)


def _guard(run: BookRun) -> TaskFailed | None:
    from pipeline.book import ledger
    from pipeline.book import rules as policies

    book, rv, db = run.book, run.vars, run.db
    task_templates = {}
    for scene in run.loaded_scenes():
        for phase, files in run.layout(scene.id).items():
            if files.templates:  # the LLM phases, and lint (its repair rounds)
                task_templates[f"{phase}:{scene.id}"] = files.templates
    try:
        _refresh_stale_ledgers(book, db)
        # a broken template stops the run before its first paid call, not at its phase
        from pipeline.book.phase_table import LLM_PHASES
        from pipeline.book.phases import check_templates

        if run.loaded_scenes():
            check_templates(book, list(LLM_PHASES))
        changes = policies.find_template_changes(db, task_templates)
        policies.require_prompt_change_allowed(changes, rv)
        accepted = policies.handle_edits(db, policies.find_edits(db, _guarded_outputs(run)), rv)
        for sid in sorted({t.partition(":")[2] for t in accepted}):
            if sid in {s.id for s in book.scenes}:
                ledger.export(db, book, sid)
    except UserError as exc:
        return TaskFailed(str(exc))
    # The book, its models and its tasks are loaded and live until the process exits:
    # keep the garbage collector off them (its full passes, and the one at exit, walked
    # them all; measured: exit 83 -> 39 ms for 200 plans, see bench/README.md 4c).
    gc.freeze()
    return None


def _guarded_outputs(run: BookRun) -> list[str]:
    """The artifacts the guard checks for hand edits: the loaded scenes', and those of tasks
    the book no longer has (a removed scene's files are refused on every path; when the
    plan loaded only the scenes a change reaches, it found them as recorded already). Never
    the manuscript's: an edited manuscript is kept beside the next one, not refused."""
    if not run.partial() and not run.reached_from():
        return [path for path, task_id, _k, _s in run.db.output_rows()
                if task_id != "manuscript"]
    loaded = [path for scene in run.loaded_scenes() for pf in run.layout(scene.id).values()
              for path in pf.outputs.values()]
    if run.reached_from():
        return loaded
    book_tasks = {f"{p}:{s.id}" for s in run.book.scenes for p in PHASES} | {"manuscript"}
    return loaded + [path for path, task_id, _k, _s in run.db.output_rows()
                     if task_id not in book_tasks]


def _nothing_changed() -> None:
    """The fast path's guard: the plan found every task up to date."""


def _guard_task(run: BookRun) -> dict:
    action = _nothing_changed if run.fast() else (_guard, [run])
    # the reporter finds the run here (targets/progress.py)
    return {"basename": "guard", "actions": [action], "uptodate": [False], "verbosity": 2,
            "doc": "Checks templates and hand edits for the whole book before any LLM call.",
            "meta": {"scenemake_run": run}}


def _stamp_task(run: BookRun) -> dict:
    if run.selection.plans_only() or run.partial():
        return {"basename": "_stamp", "actions": None, "uptodate": [True]}
    return {"basename": "_stamp", "actions": [(_acceptance_used, [run]), run.planner.save_index],
            "task_dep": list(PHASES) + ["manuscript"], "uptodate": [False], "verbosity": 2}


def _build_manuscript(run: BookRun) -> dict | TaskFailed:
    """Write draft/manuscript.md and .html from every scene's final prose (unchanged bytes
    are not rewritten); a copy edited by hand is kept beside it, never overwritten."""
    from pipeline.book import manuscript
    from pipeline.core.hashing import hash_bytes
    from pipeline.core.store import atomic_write_many

    book, db = run.book, run.db
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


def manuscript_task(run: BookRun) -> dict:
    """The task ``manuscript``: the book as one text."""
    from pipeline.book import manuscript

    book = run.book
    where = manuscript.paths(book)
    return {"name": "manuscript", "actions": [(_build_manuscript, [run])],
            "file_dep": [manuscript.final_prose_path(book, s.id) for s in book.scenes]
            + [(book.dir / "outline.json").as_posix(), book.config_path.as_posix()],
            "targets": [where.markdown.as_posix(), where.html.as_posix()],
            "task_dep": ["guard"], "verbosity": 2,
            "doc": "The book as one text: draft/manuscript.md and draft/manuscript.html."}


def book_tasks(run: BookRun) -> Iterator[dict]:
    """Every task of the run, as doit loads them (each dict names its ``basename``); when
    the plan found everything up to date, the guard alone (``selected``)."""
    from pipeline.book.phase_table import TABLE

    yield _guard_task(run)
    if run.fast():
        return
    run.book  # noqa: B018  (load and check the book now: bad input stops every command)
    for phase in TABLE:
        yield {"basename": phase.name, "name": None, "doc": phase.doc}
        for task in _phase_tasks(run, phase.name):
            yield {"basename": phase.name, **task}
    if run.selection.plans_only() or run.partial():
        yield {"basename": "manuscript", "actions": None, "uptodate": [True]}
    else:
        task = manuscript_task(run)
        del task["name"]
        yield {"basename": "manuscript", **task}
    yield _stamp_task(run)


def selected(run: BookRun) -> list[str]:
    """The tasks a plain ``doit`` runs: the guard alone when nothing changed."""
    return ["guard"] if run.fast() else list(DEFAULT_TASKS)
