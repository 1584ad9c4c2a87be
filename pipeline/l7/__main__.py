"""``python -m pipeline.l7``: same as ``scenemake-l7``."""

import sys

from targets.l7_cli import main

sys.exit(main())
