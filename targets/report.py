"""``doit report``: the book's report page, ``draft/report.html`` (pipeline/book/report.py
draws it; this command gathers the build DB, the call log, the versions and the prose)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pipeline.core.errors import UserError
from targets.command import BookCommand

LAST_DIFFS = 8  # the most recent changes shown with their diff


def _calls(book) -> tuple[dict, dict, dict]:
    """Per phase, per scene and total: calls, hits, tokens paid, the model's seconds for
    them, cost, cost avoided."""
    from pipeline.book.workspace import LLM_PHASES
    from pipeline.llm import read_calls

    per_phase: dict[str, dict[str, float]] = {p: defaultdict(float) for p in LLM_PHASES}
    per_scene: dict[str, dict[str, float]] = {s.id: defaultdict(float) for s in book.scenes}
    total: dict[str, float] = defaultdict(float)
    for c in read_calls(book.workspace.call_log):
        if c.get("book") != book.name or str(c.get("task", "")).startswith(("try:", "judge:")):
            continue  # a try's calls and the judge's are theirs (doit tries, doit compare)
        hit = c.get("cache") == "hit"
        tokens = 0 if hit else (c.get("tokens_in", 0) + c.get("tokens_out", 0))
        seconds = 0 if hit else (c.get("latency_ms") or 0) / 1000  # the model's time
        rows = [total, per_phase.setdefault(c.get("phase") or "?", defaultdict(float))]
        if c.get("scene") in per_scene:
            rows.append(per_scene[c["scene"]])
        for row in rows:
            row["calls"] += 1
            row["hits"] += hit
            row["tokens"] += tokens
            row["seconds"] += seconds
            row["cost"] += c.get("cost_usd") or 0.0
            row["avoided"] += c.get("cost_avoided_usd") or 0.0
    return per_phase, per_scene, total


def gather(book, db, explainer) -> object:
    """The report's data for ``book`` from its build DB, call log, versions and prose."""
    from pipeline.book import ledger, manuscript
    from pipeline.book.report import Cell, ReportData, SceneRow
    from pipeline.book.versions import Versions, diff_files
    from pipeline.book.workspace import PHASES
    from pipeline.core.builddb import now_iso

    scenes, changes, prose = [], [], {}
    stand_in = False
    versions = Versions(book.workspace.state_dir, book.versions_name)
    recent = []
    for scene in book.scenes:
        entries = ledger.build(db, book, scene.id)["phases"]
        cells = {}
        for phase in PHASES:
            task_id = f"{phase}:{scene.id}"
            entry = entries.get(phase)
            llm = (entry or {}).get("llm") or {}
            verdict = explainer.verdict(task_id) if task_id in explainer.tasks else None
            cells[phase] = Cell(
                status=entry["status"] if entry else "not run",
                stale=verdict.reasons[0] if verdict and verdict.runs and entry else "",
                cost_usd=llm.get("cost_usd", 0.0), cache=llm.get("cache", ""),
                tokens=llm.get("tokens_in", 0) + llm.get("tokens_out", 0))
            update = db.values(task_id).get("prompt_update")
            if update:
                changes.append({"task": task_id, "timestamp": update.get("timestamp"),
                                "reason": update.get("prompt_update_reason"),
                                "prev": update.get("prompt_hash_prev"),
                                "new": update.get("prompt_hash_new"),
                                "templates": update.get("templates", [])})
            history = versions.history(task_id)
            if len(history) >= 2:
                recent.append((history[-1].get("timestamp") or "", task_id, history))
        scenes.append(SceneRow(scene.id, scene.title, cells))
        path = Path(manuscript.final_prose_path(book, scene.id))
        if path.exists():
            prose[scene.id] = path.read_text(encoding="utf-8")
            llm = db.values(f"repair:{scene.id}").get("llm") or {}
            stand_in |= llm.get("provider") == "offline"
    diffs = []
    # what the user asked for (a prompt change, a rerun, a restore) first, then the newest
    def asked_for(item) -> bool:
        return item[2][-1].get("reason", "").startswith(("prompt change", "rerun-from",
                                                         "restored"))

    recent.sort(key=lambda item: item[0], reverse=True)
    recent.sort(key=lambda item: not asked_for(item))  # stable: newest first within each
    for _when, task_id, history in recent[:LAST_DIFFS]:
        old, new = history[-2], history[-1]
        lines = []
        for name in dict.fromkeys(list(old["files"]) + list(new["files"])):
            if name in ("prompt", "response"):
                continue
            try:
                lines += diff_files(
                    name, versions.content(task_id, old, name) if name in old["files"] else None,
                    versions.content(task_id, new, name) if name in new["files"] else None)
            except UserError as exc:  # a pruned or damaged version: say so, show the rest
                lines.append(f"{name}: {exc}")
        diffs.append({"task": task_id, "from": old["version"], "to": new["version"],
                      "reason": new.get("reason", ""), "lines": lines})
    per_phase, per_scene, total = _calls(book)
    changes.sort(key=lambda c: c.get("timestamp") or "", reverse=True)
    return ReportData(
        tries=_tries(book),
        book=book.name, title=book.config.title, phases=list(PHASES), scenes=scenes,
        per_phase={p: dict(r) for p, r in per_phase.items()},
        per_scene={s: dict(r) for s, r in per_scene.items()}, totals=dict(total),
        prompt_changes=changes, diffs=diffs,
        manuscript_html=manuscript.body_html(book, prose, stand_in) if prose else
        "<p>No scene has its final prose yet.</p>",
        stand_in=stand_in, generated=now_iso(), build=db.generation())


def _tries(book) -> list[dict]:
    """The book's tries, for the report's list (each with its page when written)."""
    from pipeline.book import tries
    from pipeline.core.builddb import read_records
    from targets.book.tries import head

    names = tries.names(book.workspace, book.name)
    if not names:
        return []
    recorded = tries.recorded_templates(read_records(book.workspace.db_path(book.name)))
    out = []
    for name in names:
        area = tries.Area(book.workspace, book.name, name)
        try:
            h = head(book, area, area.meta(), recorded)
        except UserError as exc:
            out.append({"name": name, "status": exc.bare})
            continue
        out.append({"name": name, "reason": h.reason, "scenes": h.scenes,
                    "templates": h.templates, "calls_paid": h.calls_paid, "cost": h.cost,
                    "made": h.made, "status": h.status,
                    "page": f"tries/{name}/report.html" if area.report_path.exists() else ""})
    return out


def _unit_report(args: list[str]) -> Path:
    """``l7:OUT_DIR``: the L7 session's page, written beside its out-dir (which may hold
    only L7 outputs); ``pack:RUN_DIR``: a scenario pack run's page, beside it too.
    Returns the page's path."""
    from pipeline.core.store import atomic_write_text

    unit, _, where = args[0].partition(":")
    if len(args) != 1 or unit not in ("l7", "pack") or not where:
        raise UserError(f"doit report: '{' '.join(args)}' is not a unit it can report on",
                        fix="doit report (the book), doit report try:NAME (a try against "
                        "the book), doit report l7:OUT_DIR (e.g. "
                        "l7:workspace/l7/l7_run_output) or doit report pack:RUN_DIR (e.g. "
                        "pack:workspace/artifacts/domain_runs/pack-warehouse_basics)")
    folder = Path(where.rstrip("/"))
    if unit == "l7":
        from pipeline.l7.report import render

        page = render(folder)
        target = folder.with_name(folder.name + ".report.html")
    else:
        from pipeline.scenario.report import render as render_pack

        page = render_pack(folder)
        target = folder.with_name(folder.name + ".report.html")
    atomic_write_text(target, page)
    return target


class Report(BookCommand):
    """``doit report``: one self-contained HTML page for the book."""

    name = "report"
    doc_purpose = "write draft/report.html: the book's phases, costs, prompt changes, diffs, text"
    doc_usage = "[try:NAME | l7:OUT_DIR | pack:RUN_DIR]"
    doc_description = ("One HTML file, no script and no network. For the book "
                       "(draft/report.html): the scene x phase matrix (status, cost, cache, "
                       "why stale), cost and tokens per phase and per scene as SVG charts, "
                       "cache savings, prompt-change history, the last changes' diffs, the "
                       "book's tries, the manuscript. For a try (try:NAME, written as "
                       "draft/tries/NAME/report.html): its scenes against the accepted ones, "
                       "as doit compare shows them. For an L7 session (l7:OUT_DIR, written "
                       "beside it as OUT_DIR.report.html): each scene's candidates side by "
                       "side with their scores, the winner and why the others lost, the "
                       "continuity findings. For a scenario pack run (pack:RUN_DIR, written "
                       "beside it as RUN_DIR.report.html): the acceptance gate and each step's"
                       " truth, business and judge reviews side by side.")

    def run(self, db, args) -> int:
        from pipeline.book.report import render
        from pipeline.core.store import atomic_write_text
        from targets.book.run import of_command
        from targets.book.why import Explainer

        if args and args[0].startswith("try:"):
            from targets.book.tries import report_try

            if len(args) != 1:
                raise UserError("doit report try:NAME takes one try",
                                fix="e.g. doit report try:terse")
            target = report_try(of_command(self).book, args[0][4:])
        elif args:
            target = _unit_report(args)
        else:
            book = of_command(self).book
            explainer = Explainer(self.task_list, self.dep_manager, db,
                                  set(book.templates.values()))
            page = render(gather(book, db, explainer))
            target = book.draft / "report.html"
            atomic_write_text(target, page)
        self.outstream.write(f"report: {target.as_posix()}\n")
        return 0
