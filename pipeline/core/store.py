"""The one atomic writer: temp file in the same folder, fsync, rename, fsync the folder.

A crash never leaves a half-written artifact: readers see the old file or the new one.
A temp file is named ``.NAME.PID-TID-N.tmp``; the temp files a killed process left behind
(its PID no longer alive) are removed the first time this process writes into their folder.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path
from pipeline.core.lock import pid_alive

_names = itertools.count()
_TEMP_RE = re.compile(r"\..+\.(\d+)-\d+-\d+\.tmp")
_swept: set[str] = set()  # folders this process already cleared of dead writers' temp files
_swept_lock = threading.Lock()

_FIXES = {
    errno.ENOSPC: "free some disk space and run again: no file was left half-written",
    errno.EDQUOT: "free some disk space and run again: no file was left half-written",
    errno.EACCES: "check that you may write to that folder",
    errno.EPERM: "check that you may write to that folder",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a file stands where a folder belongs on that path: move it away",
    errno.EISDIR: "a folder stands where the file belongs: move it away",
}


class WriteError(UserError):
    """A file could not be written: one line naming it, the reason and what to do."""

    def __init__(self, path: str | os.PathLike, exc: OSError):
        super().__init__(f"could not write it ({exc.strerror or exc})", path=display_path(path),
                         fix=_FIXES.get(exc.errno or 0, "check the path and run again"))


def _temp_file(path: Path) -> tuple[int, str]:
    """A new, exclusive temp file beside ``path``: (fd, name).

    ``os.open`` with mode 0666 lets the umask decide the permissions, as for any file the
    user creates (``mkstemp`` makes 0600 files and needs an extra ``fchmod``).
    """
    while True:
        tmp = f"{path.parent}/.{path.name}.{os.getpid()}-{threading.get_ident()}-{next(_names)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:  # left by a killed run with the same pid: take another
            continue


def sweep_debris(folder: str | os.PathLike) -> list[str]:
    """Remove the temp files in ``folder`` whose writer (the PID in the name) is dead.

    A ``kill -9`` in the middle of a write leaves its temp file; no live process owns it,
    and the rename that would have used it never comes. Returns the names removed; a file
    that cannot be removed (a read-only folder) stays for a later run.
    """
    removed = []
    try:
        entries = os.scandir(folder)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            match = _TEMP_RE.fullmatch(entry.name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                pass
    return removed


def _sweep_once(folder: Path) -> None:
    key = str(folder)
    if key in _swept:
        return
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    sweep_debris(folder)


def _fault(point: str, paths) -> None:
    """``SCENEMAKE_KILL_AT=point[@part]:N`` kills this process (SIGKILL) at the Nth ``point``
    (of a write to a path containing ``part``, if given).

    The reliability tests choose where a run dies: ``staged`` (temp files written, not yet
    renamed), ``written`` (renamed, before the task's DB record); ``@phase_history`` picks
    the ledger writes (the views thread). Unset: nothing happens.
    """
    spec = os.environ.get("SCENEMAKE_KILL_AT")
    if not spec:
        return
    where, _, count = spec.rpartition(":")
    name, _, part = where.partition("@")
    if name != point or (part and not any(part in str(p) for p in paths)):
        return
    with _swept_lock:
        _FAULTS[where] = _FAULTS.get(where, 0) + 1
        hit = _FAULTS[where] == int(count or 1)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


_FAULTS: dict[str, int] = {}


def _stage(path: Path, data: bytes, sweep: bool = True) -> tuple[int, str]:
    """``data`` in a new temp file beside ``path``: (open fd, temp name)."""
    if sweep:
        _sweep_once(path.parent)
    try:
        fd, tmp = _temp_file(path)
    except FileNotFoundError:  # folders are made on the first write only (a syscall saved)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temp_file(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    return fd, tmp


def _unlink(tmp: str) -> None:
    # Best effort: in a folder that just became unwritable the temp file cannot go; it is
    # debris of a dead writer for the next run to sweep, and the error that matters is
    # the write's own.
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _replace_all(files: dict[Path, bytes], durable: bool, sweep: bool = True) -> None:
    """Stage every file, fsync them, then rename each over its target.

    Written first and synced after, the files of one phase share a journal commit on a
    journaled file system: the first fsync flushes them all, the others find little left
    to do. Each file is on disk before its rename, so a crash shows the old file or the
    whole new one.
    """
    staged: list[tuple[int, str, Path]] = []
    current = next(iter(files), None)
    try:
        for path, data in files.items():
            current = path
            fd, tmp = _stage(path, data, sweep)
            staged.append((fd, tmp, path))
        if durable:
            for fd, _, path in staged:
                current = path
                os.fsync(fd)
    except BaseException as exc:
        for fd, tmp, _ in staged:
            os.close(fd)
            _unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(current, exc) from exc
        raise
    for fd, _, _ in staged:
        os.close(fd)
    _fault("staged", files)
    for i, (_, tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except BaseException as exc:
            for _, left, _ in staged[i:]:
                _unlink(left)
            if isinstance(exc, OSError):
                raise WriteError(path, exc) from exc
            raise
    _fault("written", files)


def sync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so the renames in it survive a crash."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise WriteError(folder, exc) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders.

    ``durable=False`` skips the fsyncs: still all-or-nothing for readers and after a kill,
    but a power cut may lose the file. Only for files that are a cache (a lost entry
    is a miss), never for artifacts.
    """
    path = Path(path)
    _replace_all({path: data}, durable)
    if durable:
        sync_dir(path.parent)


def atomic_write_many(files: dict[str, bytes], sweep: bool = True) -> None:
    """Write several files, each atomically; fsynced together, each folder synced once.

    A phase's artifacts share a folder: one folder fsync instead of one per file.
    ``sweep=False``: leave other writers' temp files alone even if their PID is not alive
    here (a folder on a file system other machines write to: the PID is theirs).
    """
    paths = {Path(name): data for name, data in files.items()}
    _replace_all(paths, durable=True, sweep=sweep)
    for folder in dict.fromkeys(p.parent for p in paths):
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
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise WriteError(path, exc) from exc
