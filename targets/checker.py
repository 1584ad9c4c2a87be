"""doit's file checker: the one rule of pipeline/core/filestate.py, through the one hasher."""

from __future__ import annotations

import os
from collections.abc import Callable

from doit.dependency import FileChangedChecker

from pipeline.core import filestate


class LazyPaths:
    """A set of paths made on first use (the book is loaded only if a file is checked)."""

    def __init__(self, make: Callable[[], frozenset[str]]):
        self._make = make
        self._paths: frozenset[str] | None = None

    def __contains__(self, path: object) -> bool:
        if self._paths is None:
            self._paths = self._make()
        return path in self._paths


class Blake3Checker(FileChangedChecker):
    """doit ``check_file_uptodate`` checker: make's (mtime_ns, size) contract with blake3 when
    the stat moved, or by content for the paths in ``by_content`` (a book's own inputs; the
    task loader sets them from the run, see targets/loader.py)."""

    by_content: frozenset[str] | LazyPaths = frozenset()

    def check_modified(self, file_path, file_stat, state):
        return not filestate.matches(file_path, state, file_stat,
                                     by_content=file_path in self.by_content)

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if dep not in self.by_content and filestate.is_recorded_state(current_state) \
                and (current_state[0], current_state[1]) == (st.st_mtime_ns, st.st_size):
            return None  # doit keeps the saved state
        now = filestate.current(dep, st)
        if now is None:  # a folder where a file was read: doit saves what it saw
            return [st.st_mtime_ns, st.st_size, ""]
        return None if list(current_state or ()) == now else now
