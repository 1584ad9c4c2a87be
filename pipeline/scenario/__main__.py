"""``python -m pipeline.scenario``: same as ``scenemake-scenario``."""

import sys

from .cli import main

sys.exit(main())
