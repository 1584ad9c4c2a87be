"""What scenemake's doit commands share: telling a scenemake project from any other.

Installing scenemake adds its commands to every doit project in that environment; in a
project whose dodo.py is not scenemake's they say so in one line and touch nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from doit.exceptions import InvalidCommand

from pipeline.core.builddb import SceneDB
from pipeline.core.errors import UserError


def scene_db(command: str, dep_manager) -> SceneDB:
    """The book's build DB, or one line saying this is not a scenemake project."""
    backend = getattr(dep_manager, "backend", None)
    if not isinstance(backend, SceneDB):
        raise InvalidCommand(f"doit {command}: this is not a scenemake project (its dodo.py "
                             "does not use scenemake's build DB); run it where scenemake's "
                             "dodo.py is")
    return backend


def require_scenemake(command: str, dep_manager) -> SceneDB:
    """``scene_db`` for commands that close the DB themselves later: closes it on refusal."""
    try:
        return scene_db(command, dep_manager)
    except InvalidCommand:
        dep_manager.close()
        raise


@contextmanager
def command_db(command: str, dep_manager) -> Iterator[SceneDB]:
    """The book's build DB for the body of a command: a :class:`UserError` raised in it is
    doit's one ``ERROR:`` line, and the DB is closed when the body ends, however it ends."""
    try:
        yield scene_db(command, dep_manager)
    except UserError as exc:
        raise InvalidCommand(str(exc)) from None
    finally:
        dep_manager.close()
