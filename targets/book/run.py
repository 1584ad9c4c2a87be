"""The run object: one doit command on one book.

The task loader (targets/loader.py) builds a ``BookRun`` from what doit hands it - the
command, its task names and its parsed options - and the build DB doit opened. Everything
a command needs travels in it: the workspace and book, the validated variables, what the
command names, the files the run read as it read them, and the plan
(targets/book/planner.py). Nothing lives in module state, so two runs can be built in one
process (tests, ``doit try``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doit.exceptions import InvalidCommand, InvalidDodoFile

from pipeline.book.phase_table import PHASES
from pipeline.book.runvars import RunVars, parse
from pipeline.book.workspace import TEMPLATE_NAMES, Book, Workspace, load_book
from pipeline.core import filestate
from pipeline.core.errors import UserError

if TYPE_CHECKING:
    from pipeline.book.phases import PhaseFiles
    from pipeline.book.tries import Side
    from pipeline.core.builddb import SceneDB
    from targets.book.planner import Planner

WORKSPACE = Path("workspace")

# doit run's options that change how tasks run or report, never which are up to date
HOW_OPTIONS = frozenset({"num_process", "par_type", "verbosity", "reporter", "continue",
                         "failure_verbosity", "pdb", "outfile", "auto_delayed_regex"})
# commands whose named tasks need only what is upstream of them (rerun-from, history and
# the others reach downstream or the whole book: they load everything)
UPSTREAM_COMMANDS = frozenset({"run", "info", "list", "why"})
BOOK_TASKS = frozenset(PHASES) | {"guard", "_stamp", "manuscript"}


@dataclass(frozen=True)
class Selection:
    """What a doit command names: ``command`` (None when nothing is known: every task
    loads), its task names, and whether it is a plain run (no task named, only options of
    how tasks run or report: it may take the shortcuts of the plan)."""

    command: str | None = None
    tasks: tuple[str, ...] = ()
    plain: bool = False

    @classmethod
    def of(cls, command: str, tasks, options=None) -> Selection:
        """From doit's parsed command: its name, positional arguments and options (the
        options it was given on the command line are the ``_non_default_keys`` of doit's
        ``DefaultUpdate``)."""
        tasks = tuple(tasks or ())
        given = set(getattr(options, "_non_default_keys", ()) or ())
        plain = command == "run" and not tasks and given <= HOW_OPTIONS
        return cls(command, tasks, plain)

    def book_only(self) -> bool:
        """Only book tasks are named (or none: the defaults of ``run``): other families
        (L7) need not load, no book task depends on theirs."""
        if self.command not in UPSTREAM_COMMANDS:
            return False
        if not self.tasks:
            return self.command == "run"
        return all(t.partition(":")[0] in BOOK_TASKS for t in self.tasks)

    def plans_only(self) -> bool:
        """``doit plan`` or ``doit plan:SCENE ...``: plans read no other phase's output."""
        return (self.command == "run" and bool(self.tasks)
                and all(t.partition(":")[0] == "plan" for t in self.tasks))


class BookRun:
    """One doit command on one book (see the module docstring)."""

    def __init__(self, workspace: Workspace, name: str, variables: RunVars,
                 selection: Selection | None = None, db: SceneDB | None = None,
                 side: Side | None = None):
        self.workspace = workspace
        self.name = name
        self.vars = variables
        self.selection = selection or Selection()
        self.db = db
        # a try's view of the book (pipeline/book/tries.py): its draft and templates
        self.side = side
        self._book: Book | None = None
        self._layouts: dict[str, dict[str, PhaseFiles]] = {}
        self._inputs_hashes: dict[tuple[str, str | None], str] = {}
        self._planner: Planner | None = None
        self._outputs: dict[str, str | None] | None = None
        # the book's own input files as this run read them: path -> [mtime_ns, size, blake3]
        self.inputs: dict[str, list] = {}
        # the files the model's answers come from (a local .gguf): path -> (mtime_ns, size)
        self.model_files: dict[str, tuple[int, int]] = {}
        # template overrides that did not exist when the book was read (one appearing
        # later changes which template a phase reads)
        self.absent: list[str] = []

    @classmethod
    def from_doit(cls, command: str | None = None, tasks=(), options=None,
                  db: SceneDB | None = None) -> BookRun:
        """The run of the current doit command line (its ``NAME=value`` variables are
        doit's, validated here)."""
        from doit import doit_cmd

        try:
            rv = parse(dict(doit_cmd._CMDLINE_VARS or {}))
            ws = Workspace(WORKSPACE)
            name = rv.book or ws.default_book()
        except UserError as exc:
            raise InvalidDodoFile(str(exc)) from None
        selection = Selection.of(command, tasks, options) if command else Selection()
        return cls(ws, name, rv, selection, db)

    # -- the book ---------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return self.workspace.book_dir(self.name)

    @property
    def db_path(self) -> Path:
        return self.workspace.db_path(self.name)

    @property
    def stamp_path(self) -> Path:
        if self.side is not None:  # a try never writes the book's stamp
            return self.workspace.state_dir / "tries" / self.name / f"{self.side.name}.stamp"
        return self.workspace.state_dir / "books" / f"{self.name}.stamp.json"

    @property
    def draft(self) -> Path:
        """Where this run's artifacts go: the book's ``draft/`` or a try's folder."""
        if self.side is not None and self.side.draft is not None:
            return self.side.draft
        return self.dir / "draft"

    def input_paths(self) -> list[Path]:
        """The book's own inputs besides its templates (compared by content)."""
        d = self.dir
        return [self.workspace.root / "scenemake.json", d / "book.json", d / "outline.json",
                d / "state.json"]

    @property
    def book(self) -> Book:
        """The book, loaded and checked once (bad input: one line, every command stops)."""
        if self._book is None:
            for p in self.input_paths():  # as this run reads them, for the stamp it may write
                state = filestate.current(p.as_posix())
                if state is not None:
                    self.inputs[p.as_posix()] = state
            try:
                book = load_book(self.workspace, self.name)
                if self.side is not None:
                    book = self.side.book(book)
                from pipeline.llm.providers import model_files

                for path in model_files(book.config.model):
                    st = filestate.observe(path)
                    if st is not None:
                        self.model_files[path] = (st.st_mtime_ns, st.st_size)
            except UserError as exc:
                raise InvalidDodoFile(str(exc)) from None
            self.absent = [(book.dir / "templates" / f"{n}.j2").as_posix()
                           for n in TEMPLATE_NAMES if n not in book.config.templates
                           and book.templates[n] != (book.dir / "templates" / f"{n}.j2")
                           .as_posix()]
            self._book = book
        return self._book

    def by_content(self) -> frozenset[str]:
        """The files compared by content whatever their stat (pipeline/core/filestate.py):
        the book's settings, outline, initial state and templates."""
        book = self.book
        return frozenset([p.as_posix() for p in self.input_paths()]
                         + list(book.templates.values()))

    def layout(self, sid: str) -> dict[str, PhaseFiles]:
        """Every phase's files of scene ``sid`` (built once per run)."""
        found = self._layouts.get(sid)
        if found is None:
            from pipeline.book import phases

            found = self._layouts[sid] = phases.layout(self.book, sid)
        return found

    def inputs_hash(self, phase: str, sid: str | None) -> str:
        """A phase's slice of outline and book settings, hashed once per run (``sid``
        None: the slice every scene shares)."""
        key = (phase, sid)
        found = self._inputs_hashes.get(key)
        if found is None:
            from pipeline.book import phases

            book = self.book
            found = self._inputs_hashes[key] = phases.inputs_hash(
                book, book.scene(sid) if sid else book.scenes[0], phase)
        return found

    def recorded_output(self, path: str) -> list | None:
        """The state the build DB recorded for an artifact at its task's last commit (read
        once per run, when the first task is checked: after the guard, which may accept
        hand edits)."""
        if self._outputs is None:
            # the rows of the scenes this command loads (all of them for the whole book)
            tasks = None
            if self.partial() or self.reached_from():
                tasks = [f"{phase}:{scene.id}" for scene in self.loaded_scenes()
                         for phase in PHASES]
            self._outputs = {p: s for p, _task, _known, s in self.db.output_rows(tasks=tasks)}
        raw = self._outputs.get(path)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    # -- what this command loads ---------------------------------------------------------
    @property
    def planner(self) -> Planner:
        if self._planner is None:
            from targets.book.planner import Planner

            self._planner = Planner(self)
        return self._planner

    def scene_limit(self) -> int | None:
        """How many scenes, from the first, the named tasks need: a phase of scene N reads
        only what scenes 1..N built, so ``doit write:ch001_sc001`` loads that chain, not the
        book. None: all (a phase group, ``guard``, ``manuscript``, an unknown name)."""
        sel = self.selection
        if sel.command not in UPSTREAM_COMMANDS or not sel.tasks:
            return None
        index = {scene.id: i for i, scene in enumerate(self.book.scenes)}
        limit = 0
        for name in sel.tasks:
            phase, _, sid = name.partition(":")
            if phase not in PHASES or sid not in index:
                return None
            limit = max(limit, index[sid] + 1)
        return limit

    def fast(self) -> bool:
        """Nothing changed since the last complete build: load no task."""
        reach = self.planner.reach()
        return reach is not None and reach.first is None

    def reached_from(self) -> int:
        """The index of the first scene a plain ``doit`` loads (0: all)."""
        reach = self.planner.reach()
        return reach.first if reach is not None and reach.first is not None else 0

    def partial(self) -> bool:
        """This command loads only a chain of scenes (the book-wide tasks are left out)."""
        return self.scene_limit() is not None

    def loaded_scenes(self) -> list:
        """The scenes whose tasks this command loads."""
        scenes = self.book.scenes
        limit = self.scene_limit()
        if limit is not None:
            return scenes[:limit]
        first = self.reached_from()
        return scenes[first:] if first else scenes

    def explaining(self) -> bool:
        """``doit info``: the rules that name causes in the user's terms are checked too."""
        return self.selection.command == "info"


def of_command(cmd) -> BookRun:
    """The run the task loader built for doit command ``cmd`` (one line if none was)."""
    run = getattr(getattr(cmd, "loader", None), "run", None)
    if run is None:
        raise InvalidCommand(f"doit {cmd.name}: scenemake's task loader did not run (is "
                             "doit.cfg with [GLOBAL] loader = scenemake beside dodo.py?)")
    return run


def stat_key(path: str) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file now, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
