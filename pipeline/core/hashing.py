"""The one hasher: blake3 of bytes, files and canonical JSON (doit's checker is in targets/).

Every family hashes through here, so a file is hashed at most once per process
for a given (path, inode, size, mtime_ns).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import blake3

_CHUNK = 1 << 20
_memo: dict[tuple[str, int, int, int], str] = {}
_memo_lock = threading.Lock()
# Counts real file reads; the benchmark reads it to prove the memo works.
stats = {"files_hashed": 0}


def hash_bytes(data: bytes) -> str:
    """blake3 hex digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def hash_text(text: str) -> str:
    """blake3 hex digest of a UTF-8 string."""
    return hash_bytes(text.encode("utf-8"))


def canonical_json(obj: Any) -> str:
    """The canonical JSON form used for content addresses (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_json(obj: Any) -> str:
    """blake3 of the canonical JSON of ``obj``."""
    return hash_text(canonical_json(obj))


def _hash_file_uncached(path: str) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            hasher.update(chunk)
    stats["files_hashed"] += 1
    log = os.environ.get("SCENEMAKE_HASH_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(path + "\n")
    return hasher.hexdigest()


def hash_file(path: str, st: os.stat_result | None = None) -> str:
    """blake3 of a file's content, memoised per process on (path, inode, size, mtime_ns)."""
    if st is None:
        st = os.stat(path)
    key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _memo.get(key)
    if digest is None:
        digest = _hash_file_uncached(path)
        with _memo_lock:
            _memo[key] = digest
    return digest


def hash_file_fresh(path: str, st: os.stat_result) -> str:
    """blake3 of a file read now, whatever the memo holds (a file compared by content may
    have been edited with its stat put back), and remembered."""
    digest = _hash_file_uncached(path)
    with _memo_lock:
        _memo[(path, st.st_ino, st.st_size, st.st_mtime_ns)] = digest
    return digest


def file_state(path: str) -> list:
    """[mtime_ns, size, blake3] of a file: the state recorded for deps and artifacts."""
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size, hash_file(path, st)]


def hash_known(path: str, state: list | None) -> str:
    """blake3 of a file, taken from a recorded [mtime_ns, size, hash] when the stat matches."""
    st = os.stat(path)
    if state and len(state) == 3 and st.st_mtime_ns == state[0] and st.st_size == state[1]:
        return state[2]
    return hash_file(path, st)


def remember(path: str, st: os.stat_result, digest: str) -> None:
    """Seed the memo with a hash we already know (a file we just wrote)."""
    with _memo_lock:
        _memo[(path, st.st_ino, st.st_size, st.st_mtime_ns)] = digest
