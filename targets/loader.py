"""doit's task loader for scenemake: builds the run of the command doit hands it and the
tasks of that run, with the cyclic garbage collector away from the task objects.

Configured by ``doit.cfg`` (``[GLOBAL] loader = scenemake``) in the project folder; the
entry point ``doit.LOADER`` in pyproject.toml registers the class. doit hands its loader
the parsed options (``setup``) and then the command with its positional arguments
(``load_tasks``): that is all the run knows of the command line.
``SCENEMAKE_LOADED_TASKS=FILE`` writes the names of the tasks a command loaded to FILE.
"""

from __future__ import annotations

import gc
import json
import os

from doit.cmd_base import DodoTaskLoader
from doit.exceptions import InvalidCommand

from targets.checker import LazyPaths


class SceneLoader(DodoTaskLoader):
    """dodo.py's tasks, the book's built for what the command names."""

    run = None  # the command's run (targets/book/run.py), once its tasks are loaded

    def setup(self, opt_values):
        """Keep doit's parsed options: which of them the user gave decides whether a run
        is plain (targets/book/run.py ``Selection``)."""
        super().setup(opt_values)
        self.options = opt_values

    def load_tasks(self, cmd, pos_args):
        """Build the run, then its tasks with the collector off: its passes walk every
        object made so far, so loading N tasks cost O(N^2) (bench/README.md section 10).
        The tasks live until the process exits, so they are frozen out of later passes too;
        the collector is on again afterwards."""
        from targets.book.run import BookRun
        from targets.book.tasks import attach, book_tasks, selected

        options = getattr(self, "options", {}) or {}
        if options.get("par_type") == "process" and options.get("num_process"):
            raise InvalidCommand("-P process: scenemake runs phases in threads (model calls "
                                 "overlap, one process writes the build DB); use -n N alone "
                                 "or with -P thread")
        namespace = dict(self.namespace)
        book_name = next((name for name, fn in namespace.items()
                          if getattr(fn, "scenemake", False)), None)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if book_name is not None:
                backend = getattr(getattr(cmd, "dep_manager", None), "backend", None)
                # a command may build its own run (doit try: a try's side of the book)
                make = getattr(cmd, "book_run", None)
                run = self.run = (make(pos_args, options, backend) if make is not None
                                  else BookRun.from_doit(cmd.name, pos_args, options))
                if backend is not None:
                    attach(run, backend)
                    # the book's own inputs are compared by content (read when first asked)
                    cmd.dep_manager.checker.by_content = LazyPaths(run.by_content)
                namespace[book_name] = lambda: book_tasks(run)
                if run.selection.plain:  # nothing named: the plan says what runs
                    cmd.sel_tasks = selected(run)
                if run.selection.book_only():  # no book task depends on another family's
                    namespace = {k: v for k, v in namespace.items()
                                 if not k.startswith("task_") or k == book_name}
            self.namespace, dodo = namespace, self.namespace
            try:
                tasks = super().load_tasks(cmd, pos_args)
            finally:
                self.namespace = dodo
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
        report = os.environ.get("SCENEMAKE_LOADED_TASKS")
        if report:  # for tests and benchmarks: which tasks this command built
            with open(report, "w", encoding="utf-8") as fh:
                json.dump([t.name for t in tasks], fh)
        return tasks
