"""``doit list`` for a scenemake project: with ``--status``, the book's tasks say what the run
will do, from the same explanation as ``doit why`` (targets/book/why.py)."""

from __future__ import annotations

from pipeline.book.phase_table import PHASES
from targets.book.why import Explainer
from targets.command import List as BaseList

_BOOK_TASKS = frozenset(PHASES) | {"manuscript"}


class List(BaseList):
    """``doit list``, with ``--status`` from the same explanation as ``doit why`` for the
    book's tasks: R it runs, U up to date, M it runs only if a task it reads from writes
    different files (that task only remakes a missing file from unchanged inputs), I
    ignored. doit's own status is per task: a task downstream of a changed template showed
    U although the run rebuilds it, and one downstream of a deleted file showed R although
    the run leaves it."""

    def _print_task(self, template, task, status, list_deps, tasks):
        if status and task.name.partition(":")[0] in _BOOK_TASKS \
                and not self.dep_manager.status_is_ignore(task):
            line = {"name": task.name, "doc": task.doc,
                    "status": self._letter(task.name)}
            self.outstream.write(template.format(**line))
            if list_deps:
                for dep in task.file_dep:
                    self.outstream.write(f" -  {dep}\n")
                self.outstream.write("\n")
            return
        super()._print_task(template, task, status, list_deps, tasks)

    def _letter(self, name: str) -> str:
        explainer = getattr(self, "_explainer", None)
        if explainer is None:
            from targets.book.run import of_command

            db = self.dep_manager.backend
            explainer = self._explainer = Explainer(
                self.task_list, self.dep_manager, db,
                set(of_command(self).book.templates.values()))
        verdict = explainer.verdict(name)
        return "R" if verdict.runs else "M" if verdict.maybe else "U"
