"""The no-op fast path: a stamp of every file a complete build read or wrote.

After a plain ``doit`` that built (or found up to date) every task, the stamp records
each file's (mtime_ns, size) as the build DB recorded them, with the first scene that
reads or writes it; the DB's generation (bumped by every task commit and every forget);
the environment that changes the book; and a digest of each scene's outline entry.

The next plain ``doit`` stats those files first. If nothing moved, no task can be out of
date, so doit need not load and check thousands of tasks. If some moved (a brief, one
scene's file), the moved files reach the scenes from the first one that reads them to
the end of the book (a scene's pre-state is the previous scene's commit): only those
load; the scenes before it are up to date by the stamp. Anything else - a task name, an
option, another command, a forgotten task, a ledger left behind by a kill, a template,
the book's settings, a changed order of scenes - takes the full path.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from pipeline.book.workspace import PACKAGE_DIR
from pipeline.core.hashing import hash_json
from pipeline.core.jsonio import load_json, load_own_json
from pipeline.core.store import atomic_write_text

# 4: each file names the first scene that reads it; the outline per scene; files by folder
VERSION = 4
ENV_KEYS = ("SCENEMAKE_MODEL", "SCENEMAKE_BASE_URL", "SCENEMAKE_API_KEY_ENV")
# Which scenemake wrote the stamp: another install (a venv, a checkout) may bring other
# default templates, whose files the stamp never stat'ed.
_CODE = os.path.abspath(PACKAGE_DIR)
OUTLINE = -1  # a file's "first scene" when it is the outline: the scenes' digests say


@dataclass(frozen=True)
class Reach:
    """What a usable stamp says of the files now.

    ``first`` is None when nothing moved; else the index of the first scene a moved file
    reaches (the number of scenes when only the book-wide tasks are reached, e.g. the
    manuscript). ``files`` are the stamp's (by folder), for the next stamp of a partial build.
    ``checked``: how many tasks were checked against their build records to find it (0:
    the stamp said so).
    """

    first: int | None
    files: dict
    checked: int = 0


def env_key() -> list[str | None]:
    """The environment and the scenemake install that change what a book build means."""
    return [os.environ.get(k) for k in ENV_KEYS] + [_CODE]


def db_state(db_path: Path) -> tuple[int | None, int]:
    """(generation, ledgers waiting to be rewritten) of a build DB, read-only."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, 0
    try:
        row = conn.execute("select n from sm_meta where key='generation'").fetchone()
        dirty = conn.execute("select count(*) from sm_dirty").fetchone()[0]
        return (row[0] if row else 0), dirty
    except sqlite3.Error:
        return None, 0
    finally:
        conn.close()


def outline_digest(path: str | os.PathLike) -> dict | None:
    """Per scene, in outline order, a digest of what its outline entry says (with its
    chapter's fields); and one of everything else in the outline. None if unreadable."""
    try:
        data = load_json(path)
        chapters = data["chapters"]
        scenes = []
        for chapter in chapters:
            head = {k: v for k, v in chapter.items() if k != "scenes"}
            for scene in chapter["scenes"]:
                scenes.append([scene["id"], hash_json([head, scene])])
        rest = hash_json({k: v for k, v in data.items() if k != "chapters"})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"rest": rest, "scenes": scenes}


def _outline_reach(before: dict | None, path: str) -> int | None:
    """The first scene whose outline entry changed (the number of scenes if none did);
    None when the outline changed shape (scenes added, removed or reordered)."""
    now = outline_digest(path)
    if before is None or now is None or now["rest"] != before.get("rest"):
        return None
    old, new = before.get("scenes") or [], now["scenes"]
    if [s for s, _ in old] != [s for s, _ in new]:
        return None
    return next((i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b), len(new))


def reach(stamp_path: Path, db_path: Path) -> Reach | None:
    """What moved since the stamp (see ``Reach``); None: no stamp this build can use."""
    try:
        data = load_own_json(stamp_path)
    except (OSError, ValueError):
        return None
    if data.get("version") != VERSION or data.get("env") != env_key():
        return None
    generation, dirty = db_state(db_path)
    if generation is None or dirty or generation != data.get("generation"):
        return None
    stat = os.stat
    first: int | None = None
    try:
        # a file that would change what the build reads (a new template override)
        if any(os.path.exists(p) for p in data["absent"]):
            return None
        files = data["files"]
        scenes = len(data["outline"]["scenes"])
        for folder, entries in files.items():
            for name, mtime_ns, size, index in entries:
                path = folder + name
                try:
                    st = stat(path)
                    if st.st_mtime_ns == mtime_ns and st.st_size == size:
                        continue
                except FileNotFoundError:
                    pass
                if index == OUTLINE:
                    index = _outline_reach(data["outline"], path)
                if index is None or index <= 0:
                    return None  # read by the first scene (or every scene): the full path
                first = index if first is None else min(first, index)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return Reach(None if first is None else min(first, scenes), files)


def grouped(files: dict[str, tuple[int, int, int]]) -> dict[str, list]:
    """{path: (mtime_ns, size, first scene)} as the stamp stores it: by folder."""
    folders: dict[str, list] = {}
    for path, entry in sorted(files.items()):
        folder, slash, name = path.rpartition("/")
        folders.setdefault(folder + slash, []).append([name, *entry])
    return dict(sorted(folders.items()))


def carry(before: Reach, first: int, files: dict[str, tuple[int, int, int]]) -> dict[str, list]:
    """The folders of the stamp after a build that loaded the scenes from ``first`` on:
    ``files`` (what that build recorded) over the entries of ``before`` that belong to the
    earlier scenes (none of them moved). A file that an earlier scene reads too keeps the
    earliest reader."""
    folders = grouped(files)
    for folder, entries in before.files.items():
        now = folders.get(folder)
        if now is None:  # most folders: an earlier scene's, untouched by this build
            kept = [entry for entry in entries if entry[3] < first]
            if kept:
                folders[folder] = kept
            continue
        names = {entry[0]: entry for entry in now}
        for entry in entries:
            mine = names.get(entry[0])
            if mine is not None:
                mine[3] = min(mine[3], entry[3])
            elif entry[3] < first:
                now.append(entry)
        now.sort()
    return dict(sorted(folders.items()))  # the same stamp as a full build's


def write(stamp_path: Path, generation: int, folders: dict[str, list], absent: list[str],
          outline: dict) -> None:
    """Record the files of a complete build (by folder, see ``grouped``), the files whose
    appearance matters, and the outline's digest."""
    # compact: the next no-op reads it first thing (1000 scenes: 26000 files)
    atomic_write_text(stamp_path, json.dumps({
        "version": VERSION, "generation": generation, "env": env_key(), "absent": absent,
        "outline": outline, "files": folders}, separators=(",", ":")))


def drop(stamp_path: Path) -> None:
    """Forget the stamp (the next plain doit takes the full path)."""
    try:
        stamp_path.unlink()
    except FileNotFoundError:
        pass
