"""``python -m pipeline.assistant``: same as ``scenemake-assistant``."""

import sys

from .server import main

sys.exit(main())
