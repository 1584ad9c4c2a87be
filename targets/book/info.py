"""``doit info TASK`` for a scenemake project: a book task's status is what the run will do,
from the same explanation as ``doit why`` and ``doit list --status`` (targets/book/why.py)."""

from __future__ import annotations

import io

from doit.exceptions import InvalidCommand

from pipeline.book.phase_table import PHASES
from targets.book.why import Explainer
from targets.command import Info as BaseInfo

_BOOK_TASKS = frozenset(PHASES) | {"manuscript"}


class Info(BaseInfo):
    """doit's ``info``, whose status line for a book task comes from the plan: doit's own
    status is per task, so a task downstream of a changed template said up-to-date although
    the run rebuilds it, and one downstream of a deleted file said run although the run
    leaves it. Exit code 0 up to date, 1 it runs or may run."""

    def _execute(self, pos_args, hide_status=False):
        name = pos_args[0] if len(pos_args) == 1 else None
        task = next((t for t in self.task_list if t.name == name), None)
        if name is not None and task is None:
            raise InvalidCommand(not_found=name)  # one line, with the names close to it
        if hide_status or task is None or name.partition(":")[0] not in _BOOK_TASKS:
            return super()._execute(pos_args, hide_status)
        out, self.outstream = self.outstream, io.StringIO()
        try:
            super()._execute(pos_args, hide_status=True)
            attrs = self.outstream.getvalue()
        finally:
            self.outstream = out
        from targets.book.run import of_command

        explainer = Explainer(self.task_list, self.dep_manager, self.dep_manager.backend,
                              set(of_command(self).book.templates.values()))
        verdict = explainer.verdict(name)
        status = ("run" if verdict.runs else
                  "runs only if a task it reads from writes different files"
                  if verdict.maybe else "up-to-date")
        head = f"\n{task.name}\n" + (f"\n{task.doc}\n" if task.doc else "")
        lines = [f"\n{'status':11s}: {status}\n"]
        lines += [f" - {reason}\n" for reason in verdict.reasons]
        out.write(head + "".join(lines) + attrs[len(head):])
        return 1 if verdict.active else 0
