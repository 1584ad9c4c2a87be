"""``python -m pipeline.l7``: same as ``scenemake-l7``."""

import sys

from targets.l7.cli import main

sys.exit(main())
