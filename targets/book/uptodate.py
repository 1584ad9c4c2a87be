"""doit up-to-date rules of the book, as small objects that save their own value.

Modelled on doit's ``tools.config_changed``: the rule hooks a value saver into its task,
compares what it saved after the last success with the value now, and describes itself
in the user's terms, so ``doit info`` prints "outline.json: scene ch001_sc001 `brief`
changed" instead of a function's repr.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def _signature(task, values):  # pragma: no cover - only its signature is used
    """doit passes ``task`` and ``values`` to a rule whose parameters are named so."""


class InputsUnchanged:
    """A phase's slice of outline.json and book.json is what it was at its last success.

    ``digest`` gives the value now (``phases.inputs_hash``; computed when the task is
    checked, not when it is loaded, and shared by the phases whose slice is the same for
    every scene); ``fingerprint`` names its pieces, saved so that a change can be named.
    """

    # doit calls inspect.signature on every rule of every task it checks: answer at once.
    __signature__ = inspect.signature(_signature)
    KEY = "inputs_hash"
    FIELDS_KEY = "inputs_fields"

    def __init__(self, task_id: str, digest: Callable[[], str],
                 fingerprint: Callable[[], dict[str, str]]):
        self.task_id = task_id
        self._digest = digest
        self._fingerprint = fingerprint
        self.digest: str | None = None
        self.reasons: list[str] = []

    def value(self) -> str:
        """The value now."""
        return self._digest()

    @classmethod
    def holds(cls, values: dict, now: str) -> bool:
        """The saved ``values`` of a task's last success say the value was ``now``."""
        return values.get(cls.KEY) == now

    def configure_task(self, task) -> None:
        """Save the value and its pieces with the task's values after each success."""
        task.value_savers.append(self._save)

    def _save(self) -> dict:
        return {self.KEY: self.digest or self._digest(), self.FIELDS_KEY: self._fingerprint()}

    def __call__(self, task, values: dict) -> bool:
        """True when the inputs are unchanged since the last success."""
        self.digest = self._digest()
        saved = values.get(self.KEY)
        same = self.holds(values, self.digest)
        if same:
            self.reasons = []
        elif saved is None:
            self.reasons = ["never built"]
        else:
            self.reasons = self.explain(values)
        return same

    def explain(self, values: dict) -> list[str]:
        """What changed, one sentence per piece, against the saved ``values``."""
        from pipeline.book.inputs import changes

        return changes(values.get(self.FIELDS_KEY), self._fingerprint())

    def __repr__(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        return f"outline.json and book.json as {self.task_id} last read them"


class ExplainedOnInfo:
    """Causes doit's own ``info`` would name only as file paths, in the user's terms: a
    changed template (old -> new hash, needs allow_prompt_change) and a hand-edited output.

    A run never pays for it: it is checked only while ``doit info`` explains a task
    (``active``); otherwise it answers None, which doit ignores. The file checks that make
    the task run are doit's own, as before.
    """

    __signature__ = inspect.signature(_signature)

    def __init__(self, task_id: str, templates: dict[str, str], active: Callable[[], bool],
                 db: Callable[[], object]):
        self.task_id = task_id
        self.templates = templates
        self._active = active
        self._db = db
        self.reasons: list[str] = []

    def __call__(self, task, values: dict) -> bool | None:
        """False (with reasons) when a template changed or an output was edited by hand."""
        if not self._active() or not values:
            return None
        self.reasons = self._templates(values) + self._edits(task)
        return not self.reasons

    def _templates(self, values: dict) -> list[str]:
        from pipeline.book.rules import changed_templates, current_templates

        out = []
        for ch in changed_templates(values.get("template_set"), current_templates(self.templates)):
            where = f"{ch.old_path} -> {ch.path}" if ch.old_path else ch.path
            out.append(f"template {where} changed ({(ch.old_hash or 'missing')[:8]} -> "
                       f"{(ch.new_hash or 'missing')[:8]}), needs allow_prompt_change=1 "
                       'reason="..."')
        return out

    def _edits(self, task) -> list[str]:
        from pipeline.book.rules import find_edits

        return [f"{e.path} edited by hand: force_resume=1 builds on it, rerun-from "
                f"{self.task_id} regenerates it"
                for e in find_edits(self._db(), list(task.targets))]

    def __repr__(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        return f"templates and outputs of {self.task_id} as last built"


class OutputsAsRecorded:
    """A task's outputs are as its last success recorded them.

    doit never looks at a target's content. A task killed between writing its files and
    the commit of its record left files its record does not describe; were its inputs put
    back, doit would find it up to date and the scene would be built on files from the
    abandoned inputs. So an output whose content is not the recorded one makes the task run
    again (a hand edit is the guard's, which refuses it before any task runs; accepted
    with ``force_resume=1``, it becomes the recorded state). A missing output is doit's
    own target check.
    """

    __signature__ = inspect.signature(_signature)

    def __init__(self, task_id: str, targets: list[str],
                 recorded: Callable[[str], list | None]):
        self.task_id = task_id
        self.targets = targets
        self._recorded = recorded
        self.reasons: list[str] = []

    def __call__(self, task, values: dict) -> bool:
        """True when every output there has the content its last success recorded."""
        from pipeline.core import filestate

        return self.check(self._recorded, filestate.observe)

    def check(self, recorded: Callable[[str], list | None], stat) -> bool:
        """The same, with the recorded states and the file stats given (the planner's)."""
        from pipeline.core import filestate

        self.reasons = []
        for path in self.targets:
            st = stat(path)
            if st is None:
                continue
            if not filestate.matches(path, recorded(path), st):
                self.reasons.append(f"{path} is not what {self.task_id} last recorded (it "
                                    "did not finish: killed after writing it)")
        return not self.reasons

    def __repr__(self) -> str:
        if self.reasons:
            return "; ".join(self.reasons)
        return f"outputs of {self.task_id} as last recorded"
