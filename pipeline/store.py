"""The one atomic writer: temp file in the same folder, fsync, rename, fsync the folder.

A crash never leaves a half-written artifact: readers see the old file or the new one.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename (the folder is synced by the caller)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make artifacts private
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def sync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so the renames in it survive a crash."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    path = Path(path)
    _replace(path, data)
    sync_dir(path.parent)


def atomic_write_many(files: dict[str, bytes]) -> None:
    """Write several files, each atomically; each folder is synced once, at the end.

    A phase's artifacts share a folder: one folder fsync instead of one per file.
    """
    folders = []
    for name, data in files.items():
        path = Path(name)
        _replace(path, data)
        if path.parent not in folders:
            folders.append(path.parent)
    for folder in folders:
        sync_dir(folder)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any) -> str:
    """The JSON form of every artifact: 2-space indent, UTF-8, trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as artifact JSON atomically."""
    atomic_write_text(path, dump_json(obj))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line with a single O_APPEND write, so concurrent writers never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
