"""What one in-process run of doit tasks did, in terms its caller can act on (no doit here).

``targets/runner.py`` fills it; the L7 runner and the scenario reviews map it to their exit
codes and messages. A failure carries its ``kind``: the task says it by setting ``kind`` on
the failure its action returns (L7: ``"gate"`` for a failed gate, exit 1), else ``"error"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Failure(NamedTuple):
    """One failed task: its name, a one-line message, and what kind of failure it is."""

    task: str
    message: str
    kind: str = "error"


@dataclass
class TaskRun:
    """What one run of tasks did: doit's exit code, and which tasks ran, were skipped, failed."""

    code: int
    ran: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """doit succeeded and no task failed."""
        return self.code == 0 and not self.failed
