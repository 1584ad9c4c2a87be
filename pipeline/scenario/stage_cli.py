"""``python -m pipeline.scenario.stage_cli STEP --manifest M`` (or ``python -m
pipeline.scenario.stage``): the stage-level AGENT loop.

The same as ``python -m pipeline.scenario stage STEP --manifest M`` (steps: plan, run,
ingest-gui-run, prepare-repair, run-repair, status, summarize).
"""

from __future__ import annotations

import sys

from .cli import main as scenario_main


def main(argv: list[str] | None = None) -> int:
    """Entry point of the stage loop command."""
    return scenario_main(["stage", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
