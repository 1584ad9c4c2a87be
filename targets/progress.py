"""How a doit run of the book reports itself.

On a terminal (reporter ``scenemake``): one live status block with tasks done/total, what
runs now, LLM cache hits, tokens and cost so far, and requests waiting in backoff. In logs
and pipes (reporter ``scenemake-lines``): doit's plain lines. Both end with one line saying
what the run did: scenes built, tasks run / up to date, LLM calls paid / served by the
cache, tokens, cost, where the manuscript and the report are, and whether the text came
from the offline stand-in model.
"""

from __future__ import annotations

import sys

from doit.reporter import ConsoleReporter

# rich is imported in the methods: doit imports every reporter plugin for every run.


def _llm_stats() -> dict:
    from pipeline.book.runner import llm_stats

    return llm_stats()


def _calls_made() -> tuple[dict, bool]:
    """This process's LLM totals and whether the offline stand-in answered; nothing is
    imported when no phase ran (the no-op fast path stays light)."""
    runner = sys.modules.get("pipeline.book.runner")
    if runner is None:
        return {"calls": 0, "hits": 0, "misses": 0, "tokens_in": 0, "tokens_out": 0,
                "cost_usd": 0.0}, False
    with runner._clients_lock:
        providers = {name for c in runner._clients.values() for name in c.providers}
    return runner.llm_stats(), "offline" in providers


class RunSummary:
    """Counts of one run, for its last line."""

    def __init__(self) -> None:
        self.run = None  # the book's run (targets/book/run.py), from the guard task
        self.ran: list[str] = []
        self.up_to_date = 0
        self.failed = 0
        self.book_run = False

    def find_run(self, tasks) -> None:
        """The run of the book's tasks, as the guard task carries it."""
        guard = tasks.get("guard") if isinstance(tasks, dict) else None
        self.run = (getattr(guard, "meta", None) or {}).get("scenemake_run")

    def note(self, task, what: str) -> None:
        """Count a task that ran (``ran``), was up to date (``skip``) or failed (``fail``)."""
        from pipeline.book.workspace import PHASES

        if task.name.partition(":")[0] in PHASES or task.name in ("guard", "manuscript"):
            self.book_run = True
        if not task.actions or task.name[0] == "_":
            return
        if what == "ran":
            self.ran.append(task.name)
        elif what == "skip":
            self.up_to_date += 1
        else:
            self.failed += 1

    def line(self) -> str | None:
        """The end-of-run line of a book run (None when the run built no book task)."""
        if not self.book_run:
            return None
        run = self.run
        if run is None:
            return None
        draft = run.draft
        checked = (found := run.planner.reach()) is not None and found.checked
        if run.fast():
            what = (f"nothing changed: all {checked} task(s) match their build records "
                    "(checked without loading them; stamped), no LLM call" if checked else
                    "nothing changed since the last complete build: no task checked, "
                    "no LLM call")
        else:
            st, stand_in = _calls_made()
            scenes = {t.partition(":")[2] for t in self.ran if ":" in t}
            what = (f"{len(scenes)} scene(s) built, {len(self.ran)} task(s) run, "
                    f"{self.up_to_date} up to date"
                    + (f", {first} earlier scene(s) unchanged ("
                       + ("checked against their build records)" if checked else
                          "their files did not move)")
                       if (first := run.reached_from()) else "")
                    + (f", {self.failed} failed" if self.failed else "")
                    + f"; LLM: {st['misses']} call(s) paid, {st['hits']} served by the cache, "
                    f"{st['tokens_in'] + st['tokens_out']} tokens, ${st['cost_usd']:.4f}")
            if stand_in:
                what += " (text from the offline stand-in model: placeholder prose)"
        if run.side is not None:  # a try: what it is, and how to see it against the book
            return (f"scenemake: try {run.side.name}: {what}; its files: {draft.as_posix()}/, "
                    f"compare: doit compare {run.side.name}")
        # the manuscript is a target (rewritten when the prose changes); the report page is
        # written by `doit report` only, so the line does not point at a page it did not write
        manuscript = draft / "manuscript.md"
        return "scenemake: " + what + (f"; manuscript: {manuscript.as_posix()}"
                                       if manuscript.exists() else "")


class LineReporter(ConsoleReporter):
    """doit reporter plugin ``scenemake-lines``: doit's plain lines, then the run's line."""

    desc = "plain lines (for logs and pipes), then one line on what the run did"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.summary = RunSummary()

    def initialize(self, tasks, selected_tasks):
        self.summary.find_run(tasks)

    def add_success(self, task):
        self.summary.note(task, "ran")

    def skip_uptodate(self, task):
        super().skip_uptodate(task)
        self.summary.note(task, "skip")

    def add_failure(self, task, fail):
        super().add_failure(task, fail)
        self.summary.note(task, "fail")

    def complete_run(self):
        super().complete_run()
        line = self.summary.line()
        if line:
            self.write(line + "\n")


class ProgressReporter(ConsoleReporter):
    """doit reporter plugin ``scenemake``: one live status block instead of a line per task."""

    desc = "live progress: tasks, running, cache hits, tokens, cost, backoff"

    def __init__(self, outstream, options):
        from rich.console import Console

        super().__init__(outstream, options)
        self.console = Console(file=sys.stdout)
        self.total = 0
        self.done = self.ran = self.skipped = self.failed = 0
        self.running: list[str] = []
        self.live = None
        self.summary = RunSummary()

    def initialize(self, tasks, selected_tasks):
        """Count the tasks this run will look at (the selection and what it depends on)."""
        self.summary.find_run(tasks)
        seen, todo = set(), list(selected_tasks or [])
        while todo:
            name = todo.pop()
            if name in seen or name not in tasks:
                continue
            seen.add(name)
            task = tasks[name]
            todo.extend(task.task_dep)
            todo.extend(task.setup_tasks)
        # private tasks (``_stamp``) are not shown, as in doit's own output
        self.total = sum(1 for n in seen if tasks[n].actions and not n.startswith("_"))
        from rich.live import Live

        self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                         get_renderable=self._render, transient=True)
        self.live.start()

    def _render(self):
        from rich.text import Text

        st = _llm_stats()
        running = ", ".join(self.running[:4]) + (" ..." if len(self.running) > 4 else "")
        line = Text()
        line.append(f"{self.done}/{self.total} tasks", style="bold")
        line.append(f"  ran {self.ran}  up-to-date {self.skipped}")
        if self.failed:
            line.append(f"  failed {self.failed}", style="bold red")
        line.append(f"  | LLM {st['calls']} calls, {st['hits']} cache hits, "
                    f"{st['tokens_in'] + st['tokens_out']} tokens, ${st['cost_usd']:.4f}")
        if st["waiting_backoff"]:
            line.append(f"  | {st['waiting_backoff']} waiting in backoff", style="yellow")
        if running:
            line.append(f"\n  running: {running}", style="cyan")
        return line

    def execute_task(self, task):
        if task.actions and task.name[0] != "_":
            self.running.append(task.name)

    def add_success(self, task):
        if task.name in self.running:
            self.running.remove(task.name)
        self.summary.note(task, "ran")
        if task.actions and task.name[0] != "_":  # groups and private tasks are not counted
            self.done += 1
            self.ran += 1

    def skip_uptodate(self, task):
        self.summary.note(task, "skip")
        if task.actions and task.name[0] != "_":
            self.done += 1
            self.skipped += 1

    def skip_ignore(self, task):
        if task.actions and task.name[0] != "_":
            self.done += 1

    def add_failure(self, task, fail):
        if task.name in self.running:
            self.running.remove(task.name)
        self.done += 1
        self.failed += 1
        self.summary.note(task, "fail")
        from rich.text import Text

        result = {"task": task, "exception": fail}
        if fail.report:
            self.failures.append(result)
            self.console.print(Text(f"{fail.get_name()} - taskid:{task.name}\n{fail.get_msg()}",
                                    style="red"))

    def complete_run(self):
        if self.live is not None:
            self.live.stop()
        self.console.print(self._render())
        super().complete_run()
        line = self.summary.line()
        if line:
            self.console.print(line, highlight=False, soft_wrap=True, markup=False)
