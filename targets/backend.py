"""The doit backend plugin ``scenemake``: the build DB of pipeline/core/builddb.py, whose
errors doit reports in one line."""

from __future__ import annotations

from doit.dependency import DatabaseException
from doit.exceptions import InvalidCommand

from pipeline.core import builddb


class BuildDBError(DatabaseException, InvalidCommand):
    """The build DB cannot be used. doit prints an InvalidCommand as one ``ERROR:`` line
    and exits 3; any other exception from a backend is printed with its traceback."""


class SceneDB(builddb.SceneDB):
    """doit backend (plugin name ``scenemake``): sqlite, WAL, one commit per finished task."""

    desc = "sqlite, committed per task (scenemake)"

    def __init__(self, name: str, codec, *, module_name=None):
        try:
            super().__init__(name, codec, module_name=module_name)
        except builddb.BuildDBError as exc:
            raise BuildDBError(str(exc)) from exc
