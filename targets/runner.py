"""The one in-process doit runner: the L7 runner and the scenario reviews run their tasks here.

A run builds its tasks from a namespace of ``task_*`` generators (no ``dodo.py``), records them
in a ``scenemake`` build DB committed per task, checks files with blake3, and returns a
:class:`~pipeline.core.taskrun.TaskRun`: what ran, what was up to date, and every failure as
one line with its kind -- the caller maps that to its own exit codes. Nothing travels through
module-level state, so two runs in one process (tests, the scenario loop) never see each
other's failures.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from doit.reporter import ConsoleReporter

from pipeline.core import builddb
from pipeline.core.errors import UserError
from pipeline.core.store import atomic_write_text
from pipeline.core.taskrun import Failure, TaskRun
from targets.checker import Blake3Checker


def _one_line(task: str, fail: Any, error_log: Path | None) -> Failure:
    """A doit failure as one line; an unexpected exception's traceback goes to ``error_log``."""
    kind = getattr(fail, "kind", "error")
    message = (getattr(fail, "message", None) or "").strip()
    text = fail.get_msg().strip() if hasattr(fail, "get_msg") else str(fail)
    if "Traceback" in text:  # a bug in an action: the details go to a file, not the screen
        last = text.splitlines()[-1]
        if error_log is not None:
            try:
                atomic_write_text(error_log, text + "\n")
                last = f"{last} (details in {error_log})"
            except Exception:  # noqa: BLE001 - the failure line matters more than its log
                pass
        return Failure(task, last, kind)
    message = message or text
    return Failure(task, message.splitlines()[-1] if message else "failed", kind)


def _reporter(result: TaskRun, echo: bool, error_log: Path | None) -> type:
    class RunReporter(ConsoleReporter):
        """Records into the run's result; with ``echo``, doit's task lines on stdout too (but
        never its failure dump: the caller reports failures in one line)."""

        desc = "scenemake in-process run"

        def write(self, text: str) -> None:
            if echo:
                super().write(text)

        def execute_task(self, task) -> None:
            if task.actions:
                result.ran.append(task.name)
            super().execute_task(task)

        def skip_uptodate(self, task) -> None:
            if task.actions:
                result.up_to_date.append(task.name)
            super().skip_uptodate(task)

        def add_failure(self, task, fail) -> None:
            result.failed.append(_one_line(task.name, fail, error_log))

        def runtime_error(self, msg: str) -> None:
            result.failed.append(Failure("doit", msg.strip().splitlines()[-1] if msg
                                         else "error"))
            super().runtime_error(msg)

        def complete_run(self) -> None:
            for error in self.runtime_errors:
                self.write(f"{error}\n")

    return RunReporter


def run_tasks(namespace: Mapping[str, Any], db: Path, *, tasks: Iterable[str] = (),
              echo: bool = False, verbosity: int = 0, error_log: Path | None = None,
              config: Mapping[str, Any] | None = None, parallel: int = 1) -> TaskRun:
    """Run ``tasks`` (default: all, or the namespace's ``default_tasks``) of ``namespace``.

    ``db`` is the run's build DB (its folder is created); ``echo`` prints doit's task lines;
    ``error_log`` receives the traceback of a bug in an action or in doit itself (the failure
    line names it). ``config`` adds to the DOIT_CONFIG (``default_tasks`` ...).
    ``parallel`` > 1 runs that many independent tasks at once (threads: doit ``-n N -P
    thread``).
    """
    result = TaskRun(code=0)
    db.parent.mkdir(parents=True, exist_ok=True)
    try:  # a damaged DB is the caller's one line, not doit's ERROR line beside it
        builddb.check_file(db)
    except UserError as exc:
        result.code = 3
        result.failed.append(Failure("doit", str(exc)))
        return result
    ns = dict(namespace)
    ns["DOIT_CONFIG"] = {**(config or {}), "backend": "scenemake", "dep_file": str(db),
                         "check_file_uptodate": Blake3Checker,
                         "reporter": _reporter(result, echo, error_log),
                         "verbosity": verbosity,
                         # today's stdout (doit's default is the one of its import time)
                         "outfile": sys.stdout}
    try:
        options = ["-n", str(parallel), "-P", "thread"] if parallel > 1 else []
        result.code = DoitMain(ModuleTaskLoader(ns), config_filenames=()).run(
            [*options, *tasks])
    except Exception as exc:  # noqa: BLE001 - one line for the caller; the traceback in a file
        result.code = 3
        result.failed.append(Failure("doit", f"{type(exc).__name__}: {exc}"))
        if error_log is not None:
            atomic_write_text(error_log, traceback.format_exc())
    return result
