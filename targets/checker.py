"""doit's file checker: blake3 through the one hasher, with a (mtime_ns, size) shortcut."""

from __future__ import annotations

import os

from doit.dependency import FileChangedChecker

from pipeline.core.hashing import hash_file


class Blake3Checker(FileChangedChecker):
    """doit ``check_file_uptodate`` checker: (mtime_ns, size) shortcut, then memoised blake3."""

    def check_modified(self, file_path, file_stat, state):
        if not isinstance(state, list | tuple) or len(state) != 3:
            return True
        if file_stat.st_mtime_ns == state[0] and file_stat.st_size == state[1]:
            return False
        if file_stat.st_size != state[1]:
            return True
        return hash_file(file_path, file_stat) != state[2]

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if (
            isinstance(current_state, list | tuple)
            and len(current_state) == 3
            and current_state[0] == st.st_mtime_ns
            and current_state[1] == st.st_size
        ):
            return None
        return [st.st_mtime_ns, st.st_size, hash_file(dep, st)]
