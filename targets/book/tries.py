"""doit commands over tries of a book (pipeline/book/tries.py): ``try`` builds one beside
the accepted book, ``tries`` lists them, ``compare`` shows them against the accepted scenes,
``accept`` makes one's templates the book's, ``drop`` removes one.

``doit try`` is a build like ``doit``: its tasks are the book's, built by scenemake's task
loader from a run whose book is the try's view (its draft folder and templates) and whose
build DB is the try's own, under that DB's run lock. The accepted book's files, ledgers,
build DB and stamp are only ever read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from doit.cmd_run import Run
from doit.exceptions import InvalidCommand

from pipeline.core.errors import UserError
from targets.command import BookCommand, CommandBase, PlainCommand

opt_templates = {"name": "try_templates", "long": "templates", "type": str, "default": "",
                 "help": "a folder of variant templates (e.g. variants/terse/ holding "
                         "write.j2): they replace the book's for this try"}


def accepted_run():
    """The accepted book's run of this command line (its variables: book=NAME ...)."""
    from targets.book.run import BookRun

    return BookRun.from_doit()


def area_of(run, name: str):
    """Where try ``name`` of the run's book lives (one line for a name that is none)."""
    from pipeline.book import tries

    return tries.Area(run.workspace, run.name, tries.check_name(name))


def try_run(run, area, meta: dict):
    """The run that builds try ``area`` (``meta`` its record): the book as the try sees it,
    the try's scenes named, every template change allowed (it is what a try is for)."""
    from pipeline.book import tries
    from targets.book.run import BookRun, Selection

    rv = dataclasses.replace(run.vars, allow_prompt_change=True,
                             reason=run.vars.reason or meta.get("reason") or f"try {area.name}")
    book = run.book
    selection = Selection("run", tuple(tries.try_tasks(book, meta["scenes"])))
    return BookRun(run.workspace, run.name, rv, selection, side=tries.side(area, meta))


class Try(CommandBase, Run):
    """``doit try NAME SCENE... [--templates DIR]``: build scenes with other templates beside
    the accepted book."""

    name = "try"
    doc_purpose = ("build scenes (and what they need upstream) with other templates, beside "
                   "the accepted book (draft/tries/NAME/)")
    doc_usage = "NAME [SCENE ...] [--templates DIR] [reason=\"...\"]"
    doc_description = (
        "The templates are the book's as they are now, or with --templates DIR those of DIR "
        "over them. A try starts from the accepted book's files and records for the scenes "
        "it needs, so a phase whose prompt did not change costs nothing; what it builds "
        "goes to draft/tries/NAME/ with its own build DB, and a request already paid (by "
        "the book or another try) is served from the response cache. The accepted book "
        "does not change. Again with the same NAME: resumes it (more SCENEs: adds them). "
        "No SCENE for a new try: every scene. Then: doit compare NAME, doit accept NAME "
        "reason=..., doit drop NAME.")
    cmd_options = Run.cmd_options + (opt_templates,)

    def execute(self, params, args):
        from pipeline.book import tries

        if not args:
            raise InvalidCommand("doit try needs a name for the try (e.g. doit try terse "
                                 "ch001_sc001 ch001_sc002 --templates variants/terse)")
        try:
            run = accepted_run()
            self.area = area_of(run, args[0])
            # bad input is one line before anything is made (the plan is made again, under
            # the try's lock, when the tasks load)
            tries.plan(run.book, self.area, args[1:], self._templates(params), run.vars.reason)
        except UserError as exc:
            raise InvalidCommand(str(exc)) from None
        # the try's own build DB, under its own run lock (two runs of one try: one line)
        self.area.db_path.parent.mkdir(parents=True, exist_ok=True)
        params["dep_file"] = str(self.area.db_path)
        return super().execute(params, args)

    @staticmethod
    def _templates(params) -> str | None:
        return params.get("try_templates") or None

    def book_run(self, pos_args, options, db):
        """The loader's run (targets/loader.py): the try, made or continued under its DB's
        lock, its records started from the accepted book's."""
        from pipeline.book import tries
        from pipeline.core.clock import now_iso

        run = accepted_run()
        book = run.book
        area = self.area
        templates = self.options.get("try_templates") or None
        meta, variants = tries.plan(book, area, pos_args[1:], templates, run.vars.reason)
        tries.take_in(area, variants)
        area.save(meta)
        tries.seed(db, book, area, tries.chain(book, meta["scenes"]))
        self.meta, self.started = meta, now_iso()
        made = try_run(run, area, meta)
        self.sel_tasks = list(made.selection.tasks)
        return made

    def _execute(self, outfile, verbosity=None, always=False, continue_=False,
                 reporter="console", num_process=0, par_type="process", single=False,
                 auto_delayed_regex=False, force_verbosity=False, failure_verbosity=0,
                 pdb=False):
        from pipeline.book import tries

        code = super()._execute(outfile, verbosity, always, continue_, reporter, num_process,
                                par_type, single, auto_delayed_regex, force_verbosity,
                                failure_verbosity, pdb)
        tries.record_run(self.area, self.meta, self.started, code)
        return code


# -- what tries are -----------------------------------------------------------------------
def _calls(book, name: str, since: str) -> tuple[int, int, float]:
    """(calls paid, served by the cache, dollars) of a try's builds since it was made."""
    from pipeline.llm import read_calls

    prefix = f"try:{name}/"
    paid = hits = 0
    cost = 0.0
    for c in read_calls(book.workspace.call_log):
        if (c.get("book") == book.name and str(c.get("task", "")).startswith(prefix)
                and str(c.get("timestamp", "")) >= since):
            if c.get("cache") == "miss":
                paid += 1
                cost += float(c.get("cost_usd") or 0.0)
            else:
                hits += 1
    return paid, hits, cost


def _lint(area, meta: dict) -> str:
    passed, failed, missing = 0, [], 0
    for sid in meta["scenes"]:
        path = area.folder / "scenes" / sid / "lint" / "report.json"
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            missing += 1
            continue
        if report.get("passed"):
            passed += 1
        else:
            failed.append(sid)
    parts = [f"{passed} of {len(meta['scenes'])} scene(s) pass"]
    if failed:
        parts.append(f"fails: {', '.join(failed)}")
    if missing:
        parts.append(f"{missing} not built")
    return "; ".join(parts)


def _status(area, meta: dict) -> str:
    if meta.get("accepted"):
        return f"accepted {meta['accepted']['at']} ({meta['accepted']['reason']})"
    runs = meta.get("runs") or []
    if not runs:
        return "not finished (stopped or running: doit try NAME resumes it)"
    last = runs[-1]
    return ("built" if last.get("exit") == 0 else
            f"last run exited {last.get('exit')} (doit try {area.name} resumes it)")


def head(book, area, meta: dict, recorded: dict):
    """A try as ``doit tries`` and the comparison page say what it is."""
    from pipeline.book import tries
    from pipeline.book.compare import TryHead

    paid, _hits, cost = _calls(book, area.name, meta["created"])
    return TryHead(area.name, meta.get("reason") or "", list(meta["scenes"]),
                   tries.changes(meta, recorded), paid, cost, meta["created"],
                   _status(area, meta))


class Tries(PlainCommand):
    """``doit tries``: the book's tries."""

    name = "tries"
    doc_purpose = "list the book's tries: scenes, template changes, cost, lint, when, status"
    doc_usage = ""
    doc_description = ("One block per try (draft/tries/NAME/): its scenes, what its templates "
                       "change against the accepted book's (+added -removed lines), the calls "
                       "its builds paid and their cost, its lint results, when it was made, "
                       "and whether it was built or accepted.")

    def run(self, args, **options) -> int:
        from pipeline.book import tries
        from pipeline.core.builddb import read_records

        if args:
            raise UserError("tries takes no arguments", fix="doit tries")
        run = accepted_run()
        book = run.book
        found = tries.names(run.workspace, run.name)
        if not found:
            print(f"book '{run.name}' has no try yet (doit try NAME SCENE... makes one)")
            return 0
        recorded = tries.recorded_templates(read_records(run.db_path))
        for name in found:
            area = tries.Area(run.workspace, run.name, name)
            meta = area.meta()
            h = head(book, area, meta, recorded)
            print(f"try {name}: {len(h.scenes)} scene(s): {', '.join(h.scenes)}")
            if h.reason:
                print(f"  reason: {h.reason}")
            print(f"  templates: {'; '.join(h.templates) or 'the same as the book'}"
                  + (f" (from {meta['templates_from']})" if meta.get("templates_from") else ""))
            print(f"  cost: {h.calls_paid} call(s) paid, ${h.cost:.4f}; lint: "
                  f"{_lint(area, meta)}")
            print(f"  made {h.made}; {h.status}")
        return 0


class Drop(PlainCommand):
    """``doit drop NAME``: remove a try."""

    name = "drop"
    doc_purpose = "remove a try: its folder, build DB and kept versions (the book is untouched)"
    doc_usage = "NAME"
    doc_description = ("Answers already paid stay in the response cache: trying the same "
                       "again costs nothing. Refused while the try is running.")

    def run(self, args, **options) -> int:
        from pipeline.book import tries
        from targets.backend import run_lock

        if len(args) != 1:
            raise UserError("drop needs one try's name", fix="e.g. doit drop terse (doit "
                            "tries lists them)")
        run = accepted_run()
        area = area_of(run, args[0])
        if not area.folder.exists() and not area.db_path.exists():
            raise UserError(f"no try '{area.name}' of book '{run.name}'",
                            fix="doit tries lists them")
        area.db_path.parent.mkdir(parents=True, exist_ok=True)
        lock = run_lock(str(area.db_path))  # not while it builds
        try:
            gone = tries.drop(area)
        finally:
            lock.release()
        print(f"dropped try {area.name}: removed {', '.join(gone)}")
        return 0


class Accept(BookCommand):
    """``doit accept NAME reason="..."``: the try's templates become the book's."""

    name = "accept"
    doc_purpose = "make a try's templates the book's; the next doit rebuilds with them"
    doc_usage = 'NAME reason="..."'
    doc_description = (
        "Writes the try's variant templates where the book reads them (its templates/ "
        "overrides) and lets the next doit rebuild with them without allow_prompt_change: "
        "each affected phase records the prompt change in its scene's ledger (old and new "
        "prompt hash, the reason) as allow_prompt_change=1 does. The scenes the try built "
        "come from its answers (response cache, nothing paid); the rest is paid (doit "
        "estimate). Refused when the book's templates changed since the try was made.")

    def run(self, db, args) -> int:
        from pipeline.book import stamp, tries
        from pipeline.book.runvars import ACCEPTED_SETTING
        from pipeline.core.clock import now_iso
        from targets.backend import run_lock
        from targets.book.run import of_command

        if len(args) != 1:
            raise UserError("accept needs one try's name",
                            fix='e.g. doit accept terse reason="shorter scenes"')
        run = of_command(self)
        book = run.book
        area = area_of(run, args[0])
        meta = area.meta()
        reason = run.vars.reason or meta.get("reason") or ""
        if not reason:
            raise UserError("accept needs a reason (it goes into each scene's ledger)",
                            fix=f'doit accept {area.name} reason="why the prompt changes"')
        lock = run_lock(str(area.db_path))  # not while the try builds
        try:
            moved = tries.base_changes(meta, tries.template_state(book.templates))
            if moved:
                raise UserError(f"try '{area.name}' was made on other templates than the "
                                f"book's now: {'; '.join(moved)}",
                                fix=f"try again on them: doit drop {area.name}, then doit try "
                                    f"{area.name} ...")
            written = tries.install(book, area, meta)
            accepted = tries.acceptance(book.dir, book.config, meta, reason)
            db.set_setting(ACCEPTED_SETTING, json.dumps(accepted))
            stamp.drop(run.stamp_path)  # the next plain doit checks every task
            area.save({**meta, "accepted": {"at": now_iso(), "reason": reason}})
        finally:
            lock.release()
        out = self.outstream
        out.write(f"accepted try {area.name} (reason: {reason})\n")
        for path, old, new in written:
            out.write(f"  {path}: {(old or 'new file')[:8]} -> {new[:8]}\n")
        if not written:
            out.write("  the book's templates already are the try's\n")
        if book.config.model.model_dump() != meta.get("model"):
            out.write("  note: the book's model settings changed since the try: its answers "
                      "do not serve the next build\n")
        out.write(f"the next doit rebuilds with them (the prompt change goes into each "
                  f"scene's ledger); the scenes the try built ({', '.join(meta['scenes'])}) "
                  "come from its answers, the rest is paid: doit estimate says how much\n")
        return 0


# -- comparing ------------------------------------------------------------------------------
def comparison(book, names: list[str], judged: bool = True):
    """The accepted scenes against the tries ``names`` (pipeline/book/compare.py)."""
    from pipeline.book import compare, judge, tries
    from pipeline.core.builddb import read_records, task_values
    from pipeline.core.clock import now_iso
    from pipeline.llm import CallContext, ResponseCache, build_client

    ws = book.workspace
    accepted = read_records(ws.db_path(book.name))
    recorded = tries.recorded_templates(accepted)
    cache = ResponseCache(ws.cache_dir)

    def cost_of(request_hash: str) -> float | None:
        try:
            entry = cache.get(request_hash) if request_hash else None
        except ValueError:
            entry = None
        return entry.cost_usd if entry is not None else None

    def values(records):
        return lambda task_id: task_values(records, task_id) if records else {}

    heads, views, wanted = [], [], set()
    for name in names:
        area = tries.Area(ws, book.name, tries.check_name(name))
        meta = area.meta()
        heads.append(head(book, area, meta, recorded))
        views.append((f"try {name}", tries.side(area, meta).book(book),
                      values(read_records(area.db_path))))
        wanted |= set(meta["scenes"])
    rows = []
    for scene in book.scenes:
        if scene.id not in wanted:
            continue
        sides = [compare.built(book, scene.id, "accepted", values(accepted), cost_of)]
        sides += [compare.built(view, scene.id, label, vals, cost_of)
                  for label, view, vals in views]
        rows.append(compare.SceneRow(scene.id, scene.title, sides))
    result = compare.Comparison(book.name, book.config.title, heads, rows, generated=now_iso())
    found = judge.load() if judged else None
    if judged and found is None:
        result.notes.append(f"no judge: {judge.SPEC.as_posix()} not found (scores left out)")
    if found is not None:
        client = build_client(ws.state_dir, found.endpoint.model_dump(), {}, None)
        style = book.config.style.model_dump()
        try:
            compare.judge_all(result, found, lambda scene, card, prose, sid: judge.score(
                found, client, CallContext(run=book.name, task=f"judge:{sid}", unit=sid,
                                           step="judge"), style, scene, card, prose), book)
        finally:
            client.close()
    return result


opt_no_judge = {"name": "no_judge", "long": "no-judge", "type": bool, "default": False,
                "help": "leave the judge's scores out (no LLM call)"}
opt_short = {"name": "short", "long": "short", "type": bool, "default": False,
             "help": "the tables only, without the diffs"}


class Compare(PlainCommand):
    """``doit compare [NAME...]``: the accepted scenes against each try."""

    name = "compare"
    doc_purpose = "the accepted scenes against each try: scores, words, lint, tokens, cost, diffs"
    doc_usage = "[NAME ...] [--short] [--no-judge]"
    doc_description = (
        "Without NAME: every try. Per scene: the judge's score (a score spec in score_specs/, "
        "the weighted mean of its criteria scored 1-5 by the local model when installed, "
        "else by the offline stand-in, which says so), words, lint, tokens and cost of each "
        "side, then each try's prose (a word diff, or side by side when most words changed), "
        "scene card and state patch against the accepted scene's. Also writes the page "
        "draft/tries/compare.html (doit report try:NAME: one try's).")
    cmd_options = (opt_short, opt_no_judge)

    def run(self, args, short=False, no_judge=False) -> int:
        from pipeline.book import compare, tries
        from pipeline.core.store import atomic_write_text

        run = accepted_run()
        book = run.book
        names = list(dict.fromkeys(args)) or tries.names(run.workspace, run.name)
        if not names:
            raise UserError(f"book '{run.name}' has no try to compare",
                            fix="doit try NAME SCENE... makes one")
        result = comparison(book, names, judged=not no_judge)
        print(compare.text(result, diffs=not short), end="")
        target = run.dir / "draft" / "tries" / "compare.html"
        atomic_write_text(target, compare.page(result))
        print(f"page: {target.as_posix()}")
        return 0


def report_try(book, name: str) -> Path:
    """``doit report try:NAME``: the page of one try against the accepted book."""
    from pipeline.book import compare, tries
    from pipeline.core.store import atomic_write_text

    area = tries.Area(book.workspace, book.name, tries.check_name(name))
    area.meta()
    atomic_write_text(area.report_path, compare.page(comparison(book, [name])))
    return area.report_path
