"""A rich progress display for doit runs: the default on a terminal.

Shows tasks done/total, what runs now, LLM cache hits, tokens and cost so far, and
requests waiting in backoff. Off a terminal (CI logs) doit's plain line output is used.
"""

from __future__ import annotations

import sys

from doit.reporter import ConsoleReporter

# rich is imported in the methods: doit imports every reporter plugin for every run.


def _llm_stats() -> dict:
    from pipeline.book.runner import llm_stats

    return llm_stats()


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

    def initialize(self, tasks, selected_tasks):
        """Count the tasks this run will look at (the selection and what it depends on)."""
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
        if task.actions and task.name[0] != "_":  # groups and private tasks are not counted
            self.done += 1
            self.ran += 1

    def skip_uptodate(self, task):
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
