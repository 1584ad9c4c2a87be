"""doit's task loader for scenemake: hands the command's task names to the task generators
and keeps the cyclic garbage collector away from the task objects while they are built.

Configured by ``doit.cfg`` (``[GLOBAL] loader = scenemake``) in the project folder; the
entry point ``doit.LOADER`` in pyproject.toml registers the class. Without it doit's own
loader runs and every task of the book loads (correct, only slower).
``SCENEMAKE_LOADED_TASKS=FILE`` writes the names of the tasks a command loaded to FILE.
"""

from __future__ import annotations

import gc
import json
import os

from doit.cmd_base import DodoTaskLoader


class SceneLoader(DodoTaskLoader):
    """dodo.py's tasks, built for what the command names (see ``targets.book.tasks.select``)."""

    def load_tasks(self, cmd, pos_args):
        """Tell the book which tasks ``cmd`` names, then build the tasks with the
        collector off: its passes walk every object made so far, so loading N tasks cost
        O(N^2) (bench/README.md section 10). The tasks live until the process exits, so they
        are frozen out of later passes too; the collector is on again afterwards."""
        from targets.book import tasks as book

        book.select(cmd.name, list(pos_args))
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            tasks = super().load_tasks(cmd, pos_args)
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()
        report = os.environ.get("SCENEMAKE_LOADED_TASKS")
        if report:  # for tests and benchmarks: which tasks this command built
            with open(report, "w", encoding="utf-8") as fh:
                json.dump([t.name for t in tasks], fh)
        return tasks
