"""``python -m pipeline.l7``: the L7 scene prompt map runner."""

from pipeline.l7.cli import main

raise SystemExit(main())
