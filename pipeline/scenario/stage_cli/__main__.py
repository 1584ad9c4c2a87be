"""``python -m pipeline.scenario.stage_cli STEP --manifest M``: the stage-level AGENT loop.

The same as ``python -m pipeline.scenario stage STEP --manifest M`` (steps: plan, run,
ingest-gui-run, prepare-repair, run-repair, status, summarize).
"""

import sys

from targets.scenario.cli import stage_main

sys.exit(stage_main())
