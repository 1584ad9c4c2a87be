"""``python -m pipeline.scenario``: same as ``scenemake-scenario``."""

import sys

from targets.scenario.cli import main

sys.exit(main())
