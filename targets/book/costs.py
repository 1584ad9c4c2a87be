"""doit commands ``cost`` (what the book's LLM calls cost so far) and ``estimate``
(what the next run would cost), both from the call log and the build DB."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from pipeline.core.errors import UserError
from targets.book.tries import opt_templates
from targets.command import BookCommand


def _console(outstream):
    from rich.console import Console  # doit imports every command plugin on every command

    return Console(file=outstream, width=120)


class Cost(BookCommand):
    """Calls, cache hits, tokens, dollars spent and dollars the cache saved, per phase."""

    name = "cost"
    doc_purpose = "print what the book's LLM calls cost: per phase and in total"
    doc_usage = ""
    doc_description = ("Read from workspace/.scenemake/llm_calls.jsonl (every call, hit or miss), "
                       "or from the shared call log when a shared cache is configured "
                       "(SCENEMAKE_CACHE_URL / cache_url); --all-machines: every machine's.")
    cmd_options = ({"name": "all_machines", "long": "all-machines", "type": bool,
                    "default": False,
                    "help": "spend and savings of every machine on the shared cache"},)

    def run(self, db, args, all_machines=False) -> int:
        from rich.table import Table

        from pipeline.book.workspace import LLM_PHASES
        from pipeline.core.jsonio import display_path
        from pipeline.llm import read_calls
        from pipeline.llm.shared import read_shared_calls
        from targets.book.run import of_command

        if args:
            raise UserError("cost takes no arguments", fix="doit cost, or doit cost "
                            "--all-machines")
        book = of_command(self).book
        shared = read_shared_calls(book.workspace.root, book.name, all_machines)
        if shared is None and all_machines:
            raise UserError("cost --all-machines reads the shared call log",
                            fix="set SCENEMAKE_CACHE_URL, or cache_url in "
                                "workspace/scenemake.json")
        if shared is not None:
            calls = shared
        else:
            calls = [c for c in read_calls(book.workspace.call_log)
                     if c.get("book") == book.name]
        rows = _tally(calls, lambda c: c.get("phase") or "?", "total")
        if not calls:  # say so, rather than print tables with no rows
            where = ("the shared call log (every machine)" if all_machines else
                     "the shared call log (this machine)" if shared is not None else
                     display_path(book.workspace.call_log))
            self.outstream.write(f"cost: no LLM calls of book '{book.name}' yet in {where}; "
                                 "a build (doit) makes them\n")
            if all_machines:
                return 0
        table = Table(title=f"LLM cost of book '{book.name}'")
        for col in ("phase", "calls", "cache hits", "tokens in", "tokens out", "spent $",
                    "avoided by cache $"):
            table.add_column(col, justify="left" if col == "phase" else "right")
        order = [p for p in LLM_PHASES if p in rows] + sorted(
            k for k in rows if k not in LLM_PHASES and k != "total")
        for key in order + (["total"] if calls else []):
            r = rows[key]
            table.add_row(key, f"{int(r['calls'])}", f"{int(r['hits'])}",
                          f"{int(r['tokens_in'])}", f"{int(r['tokens_out'])}",
                          f"{r['spent']:.4f}", f"{r['avoided']:.4f}",
                          style="bold" if key == "total" else None)
        if calls:
            _console(self.outstream).print(table)
        if all_machines:
            _console(self.outstream).print(_per_machine(calls, book.name))
        # the book's totals beside its phase ledgers, for tools that read files
        from pipeline.core.store import atomic_write_json

        if all_machines:  # the file holds this machine's view; the team's is printed only
            return 0
        atomic_write_json(book.draft / "context" / "cost_totals.json", {
            "book": book.name,
            "phases": {k: {n: round(v, 6) for n, v in rows[k].items()} for k in order},
            "total": {n: round(v, 6) for n, v in rows["total"].items()} if calls else {}})
        return 0


def _tally(calls: list[dict], key: Callable[[dict], str], total: str) -> dict[str, dict]:
    """Per ``key(call)`` and for ``total``: calls, cache hits, tokens paid for (misses
    only), dollars spent and dollars the cache avoided."""
    rows: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for c in calls:
        paid = c["cache"] == "miss"
        for name in (key(c), total):
            r = rows[name]
            r["calls"] += 1
            r["hits"] += c["cache"] == "hit"
            r["tokens_in"] += c["tokens_in"] if paid else 0
            r["tokens_out"] += c["tokens_out"] if paid else 0
            r["spent"] += c.get("cost_usd", 0.0) or 0.0
            r["avoided"] += c.get("cost_avoided_usd", 0.0) or 0.0
    return rows


def _per_machine(calls: list[dict], book: str):
    """A table of calls, hits, spent and avoided dollars per machine (and the team's total)."""
    from rich.table import Table

    rows = _tally(calls, lambda c: c.get("machine") or "?", "all machines")
    table = Table(title=f"LLM cost of book '{book}' per machine (shared call log)")
    for col in ("machine", "calls", "cache hits", "spent $", "avoided by cache $"):
        table.add_column(col, justify="left" if col == "machine" else "right")
    for key in sorted(k for k in rows if k != "all machines") + ["all machines"] * bool(calls):
        r = rows[key]
        table.add_row(key, f"{int(r['calls'])}", f"{int(r['hits'])}", f"{r['spent']:.4f}",
                      f"{r['avoided']:.4f}", style="bold" if key == "all machines" else None)
    return table


class Estimate(BookCommand):
    """Before a run: the stale tasks, the LLM calls they need, their cost and time."""

    name = "estimate"
    doc_purpose = "estimate the next run: stale tasks, LLM calls, cost and time, before running"
    doc_usage = "[TASK ...] | [try:NAME [SCENE ...] [--templates DIR]]"
    doc_description = ("Tokens per call come from this book's earlier calls of the same phase "
                       "and model; a request already in the response cache costs nothing. "
                       "Time comes from the tokens per second the model was measured at on "
                       "this machine (workspace/.scenemake/endpoints.json), or is unknown. "
                       "TASK names (write:ch001_sc002, a phase group): only what they need. "
                       "try:NAME: the next run of that try (doit try NAME ...), or of a try "
                       "not made yet with the SCENEs and --templates DIR it would be made "
                       "with; nothing is written.")
    cmd_options = (opt_templates,)

    def execute(self, params, args):
        self.area = None
        if args and args[0].startswith("try:"):
            from targets.book.tries import accepted_run, area_of

            try:
                self.area = area_of(accepted_run(), args[0][4:])
            except UserError as exc:
                from doit.exceptions import InvalidCommand

                raise InvalidCommand(str(exc)) from None
            if self.area.exists():  # its own records; else the book's (read only)
                params["dep_file"] = str(self.area.db_path)
        return super().execute(params, args)

    def book_run(self, pos_args, options, db):
        """The run whose next build is estimated: the book's, or a try's (targets/loader.py)."""
        from pipeline.book import tries
        from targets.book.run import BookRun, Selection
        from targets.book.tries import accepted_run, try_run

        if self.area is None:
            return BookRun.from_doit(self.name, pos_args, options)
        run = accepted_run()
        book = run.book
        templates = self.options.get("try_templates") or None
        if self.area.exists():
            meta, _variants = tries.plan(book, self.area, pos_args[1:], templates,
                                         run.vars.reason)
            return try_run(run, self.area, meta)
        scenes = [book.scene(s).id for s in pos_args[1:]] or [s.id for s in book.scenes]
        return BookRun(run.workspace, run.name, run.vars,
                       Selection("run", tuple(tries.try_tasks(book, scenes))),
                       side=tries.planned_side(self.area, book, templates))

    def run(self, db, args, try_templates="") -> int:
        from rich.table import Table

        from pipeline.book.estimate import cached_request, request_estimate
        from pipeline.book.workspace import LLM_PHASES, PHASES
        from pipeline.llm import ResponseCache, providers, read_calls
        from pipeline.llm.endpoints import estimate_seconds
        from pipeline.llm.pricing import PriceTable
        from targets.book.run import of_command

        if try_templates and self.area is None:
            raise UserError("--templates goes with try:NAME",
                            fix="doit estimate try:NAME SCENE... --templates DIR")
        book = of_command(self).book
        tasks = {t.name: t for t in self.task_list}
        phase_tasks = [n for n in tasks if n.partition(":")[0] in PHASES and ":" in n]
        named = list(args) if args and self.area is None else []
        needed = set(phase_tasks)
        if named:  # only what those tasks need
            unknown = [n for n in named if n not in tasks]
            if unknown:
                raise UserError(f"estimate: no task '{unknown[0]}'",
                                fix=f"name a task (write:{book.scenes[0].id}), a phase "
                                    f"({', '.join(PHASES)}), or try:NAME")
            needed = set(upstream(self.task_list, named))
        # the plan of doit why and doit list --status: stale by a cause of its own; may
        # rerun when it runs or when a task it reads from does
        from targets.book.why import Explainer

        explainer = Explainer(self.task_list, self.dep_manager, db,
                              set(book.templates.values()), book.side)
        verdicts = {n: explainer.verdict(n) for n in phase_tasks if n in needed}
        stale = [n for n, v in verdicts.items() if v.runs and v.own]
        why = _why_stale(explainer, stale)
        affected = {n for n, v in verdicts.items() if v.active}
        # a stale task whose inputs no other task rewrites sends the request it would send
        # now: if the response cache has it, it is served, not paid
        producer = {target: t.name for t in self.task_list for target in t.targets}
        cache = ResponseCache(book.workspace.cache_dir)
        served: set[str] = set()
        for name in sorted(affected):
            phase, _, sid = name.partition(":")
            makers = {producer.get(d) for d in tasks[name].file_dep} - {None, name}
            if (phase in LLM_PHASES and not makers & affected
                    and cached_request(book, sid, phase, db.attempt(name), cache)):
                served.add(name)
        model = book.config.model
        history: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for c in read_calls(book.workspace.call_log):
            if (c.get("book") == book.name and c["cache"] == "miss" and c.get("try", 0) == 0
                    and c.get("model") == model.model):
                history[c["phase"]].append((c["tokens_in"], c["tokens_out"]))
        every = [t for runs in history.values() for t in runs]
        prices = PriceTable({m: p.model_dump() for m, p in book.config.prices.items()})
        # a model on this machine costs nothing: no price entry, no warning
        free = bool(getattr(providers.plugin(model.provider), "free", False))
        endpoint = book.config.endpoint.model_dump()
        what = (f"Next run of try '{book.side}' of book '{book.name}'" if book.side else
                f"Next run of book '{book.name}'")
        table = Table(title=f"{what} ({model.label})"
                      + (f", for {' '.join(named)}" if named else ""))
        for col in ("phase", "stale now", "may rerun", "LLM calls (at most)", "est. tokens",
                    "est. cost $", "from the cache", "est. time"):
            table.add_column(col, justify="left" if col == "phase" else "right")
        total_calls, total_tokens, total_cost, bound = 0, 0, 0.0, False
        total_served = 0
        total_s: float | None = 0.0
        for phase in PHASES:
            now = sum(1 for n in stale if n.startswith(phase + ":"))
            may = sorted(n for n in affected if n.startswith(phase + ":"))
            hits = sum(1 for n in may if n in served)
            paid = [n for n in may if n not in served]
            calls = len(paid) if phase in LLM_PHASES else 0
            tokens, cost, took = "-", "-", "-"
            if calls:
                runs = history.get(phase) or every
                if runs:
                    t_in = sum(r[0] for r in runs) / len(runs) * calls
                    t_out = sum(r[1] for r in runs) / len(runs) * calls
                else:  # this model was never called: count the prompts as they would render
                    t_in = t_out = 0
                    for name in paid:
                        guess = request_estimate(book, name.partition(":")[2], phase)
                        t_in += guess.tokens_in
                        t_out += guess.tokens_out
                        bound |= not guess.exact_prompt
                    bound = True  # max_tokens for every answer
                c = 0.0 if free else prices.cost(model.model, int(t_in), int(t_out))
                seconds = estimate_seconds(book.workspace.state_dir, model.provider,
                                           model.model, endpoint, calls, t_in, t_out)
                tokens, cost, took = f"{int(t_in + t_out)}", f"{c:.4f}", _duration(seconds)
                total_tokens += int(t_in + t_out)
                total_cost += c
                total_s = None if seconds is None or total_s is None else total_s + seconds
            total_calls += calls
            total_served += hits
            table.add_row(phase, str(now), str(len(may)), str(calls), tokens, cost,
                          str(hits) if phase in LLM_PHASES else "-", took)
        table.add_row("total", str(len(stale)), str(len(affected)), str(total_calls),
                      str(total_tokens), f"{total_cost:.4f}", str(total_served),
                      _duration(total_s) if total_calls else "-", style="bold")
        con = _console(self.outstream)
        con.print(table)
        if bound:
            con.print("no earlier calls of this model: an upper bound, from the prompts as they "
                      "would render (inputs not built yet counted at max_tokens) and max_tokens "
                      "for every answer; tokens approximated (1.3 per word, at least 1 per 4 "
                      "characters)")
        if total_calls and total_s is None:
            con.print("time unknown: this model never answered on this machine (a run measures "
                      "its tokens per second)")
        elif total_calls:
            con.print("time: the calls one after the other, at the tokens per second measured "
                      "on this machine; -n N answers N at once where the model allows")
        if why:
            con.print("why they run (doit why TASK says more):")
            for line in why:
                con.print(f"  - {line}", highlight=False, markup=False)
        return 0


def _duration(seconds: float | None) -> str:
    """``unknown``, ``45s``, ``3m 05s``, ``1h 02m``."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def upstream(task_list, names: list[str]) -> list[str]:
    """``names`` and every task they need, through task_dep or the files they read."""
    from collections import deque

    producer = {target: task.name for task in task_list for target in task.targets}
    by_name = {task.name: task for task in task_list}
    seen, todo = set(names), deque(names)
    while todo:
        task = by_name.get(todo.popleft())
        if task is None:
            continue
        needs = [producer[d] for d in task.file_dep if d in producer] + list(task.task_dep)
        for name in needs:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return sorted(seen)


def _why_stale(explainer, stale: list[str], shown: int = 12) -> list[str]:
    """The first reason of each stale task, as ``doit why`` words it (at most ``shown``)."""
    lines = []
    for name in stale[:shown]:
        verdict = explainer.verdict(name)
        if verdict.reasons:
            lines.append(f"{name}: {verdict.reasons[0]}")
    if len(stale) > shown:
        lines.append(f"... and {len(stale) - shown} more")
    return lines
