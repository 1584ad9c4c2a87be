"""``python -m pipeline.scenario``: same as ``scenemake-scenario``."""

import sys

from targets.scenario_cli import main

sys.exit(main())
