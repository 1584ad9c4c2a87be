"""scenemake: the book pipeline as doit tasks. Config and imports only."""

from targets.book.tasks import doit_config, task_book  # noqa: F401  (doit collects task_*)
from targets.l7.tasks import task_l7  # noqa: F401  (the L7 prompt map runner's stages: doit l7)

DOIT_CONFIG = doit_config()
