"""The seam between the scenario loop and the engine that runs its review tasks.

Reviews are doit tasks (content-addressed, so a run reviewed again redoes only what
changed); the loop itself knows no doit. The command line hands it a ``Reviewer``
(``targets.scenario.tasks.DoitReviewer``) through ``CaptureOptions.reviewer`` or ``Stage``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pipeline.core.taskrun import TaskRun

from .layout import RunLayout

__all__ = ["Reviewer", "TaskRun", "db_path"]


class Reviewer(Protocol):
    """Runs the review tasks of a captured run, or of a GUI run."""

    def review_run(self, layout: RunLayout, workspace: Path,
                   score_spec: Path | None) -> TaskRun:
        """Truth, business and judge reviews of ``layout``'s run."""
        ...

    def review_gui(self, run_id: str, runs_dir: Path, out_dir: Path, db_name: str,
                   workspace: Path) -> TaskRun:
        """The GUI run review of ``run_id`` into ``out_dir``."""
        ...


def db_path(workspace: Path, name: str) -> Path:
    """The build DB of one run's reviews."""
    return Path(workspace) / ".scenemake" / "scenarios" / f"{name}.sqlite"
