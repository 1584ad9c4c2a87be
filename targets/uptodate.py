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

    def configure_task(self, task) -> None:
        """Save the value and its pieces with the task's values after each success."""
        task.value_savers.append(self._save)

    def _save(self) -> dict:
        return {self.KEY: self.digest or self._digest(), self.FIELDS_KEY: self._fingerprint()}

    def __call__(self, task, values: dict) -> bool:
        """True when the inputs are unchanged since the last success."""
        self.digest = self._digest()
        saved = values.get(self.KEY)
        same = saved == self.digest
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
