"""``python -m pipeline.scenario.stage STEP --manifest M``: the stage loop's command line."""

import sys

from targets.scenario.cli import stage_main

sys.exit(stage_main())
