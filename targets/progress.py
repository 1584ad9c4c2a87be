"""How a doit run of the book reports itself.

On a terminal (reporter ``scenemake``): one live status block with tasks done/total, what
runs now, LLM cache hits, tokens and cost so far, and requests waiting in backoff. In logs
and pipes (reporter ``scenemake-lines``): doit's plain lines. Both end with one line saying
what the run did: scenes built, tasks run / up to date, LLM calls paid / served by the
cache, tokens, cost, where the manuscript and the report are, and whether the text came
from the offline stand-in model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from doit.reporter import ConsoleReporter

# rich is imported in the methods: doit imports every reporter plugin for every run.


def _llm_stats() -> dict:
    from pipeline.book.runner import llm_stats

    return llm_stats()


def watch_signals() -> None:
    """On doit's command line, Ctrl-C or SIGTERM end the run in one line, exit 130/143, its
    model servers and worker processes stopped (``pipeline.core.interrupt``). Installed when
    dodo.py is read and again by the reporter, after the build DB opened (it makes SIGTERM a
    KeyboardInterrupt); doit run in-process by other code keeps its own handlers."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "doit" or argv0.endswith(f"doit{os.sep}__main__.py"):
        from pipeline.core import interrupt

        interrupt.install()


class RunCalls:
    """The LLM calls of this run, as the call log counts them: the lines the book's calls
    added to ``llm_calls.jsonl`` since the run began, whichever process made them (a
    ``doit -n N`` worker process counts too)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.book = ""
        self.offset = 0

    def start(self, run) -> None:
        """Remember where the call log of ``run`` (the book's run) ends now."""
        if run is None:  # not a book run: nothing to count
            return
        self.path, self.book = run.workspace.state_dir / "llm_calls.jsonl", run.name
        try:
            self.offset = self.path.stat().st_size
        except OSError:
            self.offset = 0

    def read(self) -> list[dict]:
        """The book's call-log lines written since ``start``."""
        if self.path is None:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                raw = fh.read()
        except OSError:
            return []
        calls = []
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                call = json.loads(line)
            except ValueError:
                continue  # (a line still being written by another process)
            if isinstance(call, dict) and call.get("book") == self.book:
                calls.append(call)
        return calls

    def totals(self) -> tuple[dict, bool]:
        """Paid calls, cache hits, tokens and cost of this run, and whether the offline
        stand-in answered."""
        calls = self.read()
        paid = [c for c in calls if c.get("cache") == "miss"]
        st = {"misses": len(paid), "hits": len(calls) - len(paid),
              "tokens": sum(int(c.get("tokens_in") or 0) + int(c.get("tokens_out") or 0)
                            for c in calls),
              "cost_usd": sum(float(c.get("cost_usd") or 0.0) for c in paid)}
        return st, any(c.get("provider") == "offline" for c in calls)


class RunSummary:
    """Counts of one run, for its last line."""

    def __init__(self) -> None:
        self.run = None  # the book's run (targets/book/run.py), from the guard task
        self.ran: list[str] = []
        self.up_to_date = 0
        self.failed = 0
        self.book_run = False
        self.calls = RunCalls()

    def find_run(self, tasks) -> None:
        """The run of the book's tasks, as the guard task carries it; its calls are
        counted from here."""
        guard = tasks.get("guard") if isinstance(tasks, dict) else None
        self.run = (getattr(guard, "meta", None) or {}).get("scenemake_run")
        self.calls.start(self.run)

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
            st, stand_in = self.calls.totals()
            scenes = {t.partition(":")[2] for t in self.ran if ":" in t}
            what = (f"{len(scenes)} scene(s) built, {len(self.ran)} task(s) run, "
                    f"{self.up_to_date} up to date"
                    + (f", {first} earlier scene(s) unchanged ("
                       + ("checked against their build records)" if checked else
                          "their files did not move)")
                       if (first := run.reached_from()) else "")
                    + (f", {self.failed} failed" if self.failed else "")
                    + f"; LLM: {st['misses']} call(s) paid, {st['hits']} served by the cache, "
                    f"{st['tokens']} tokens, ${st['cost_usd']:.4f}")
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
        watch_signals()

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
        self.pid = os.getpid()
        watch_signals()
        from pipeline.core import interrupt

        interrupt.on_interrupt(self._stop_live)

    def _stop_live(self) -> None:
        if self.live is not None and os.getpid() == self.pid:  # (not in a worker's fork)
            self.live.stop()

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
