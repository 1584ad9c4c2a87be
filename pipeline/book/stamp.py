"""The saved index of a complete build (the stamp): what the plan read, as it read it.

After a plain ``doit`` that built (or found up to date) every task, the stamp records every
observation the plan of that build depended on (targets/book/planner.py):

- ``inputs``: the book's own inputs and templates by content (blake3), each with the first
  scene that reads it;
- ``files``: every other file a task read or wrote, by (mtime_ns, size) (make's contract),
  each with the first scene that reads or writes it;
- ``models``: the files the model's answers come from (a local .gguf), by (mtime_ns, size);
- ``absent``: the template overrides that did not exist when the book was read;
- the build DB's generation (moved by every task commit and every forget), the
  environment that changes the book, and a digest of each scene's outline entry.

The next plain ``doit`` checks them first (``reach``). Nothing moved: no task can be out of
date. Some moved: they reach the scenes from the first one that reads them to the end of
the book (a scene's pre-state is the previous scene's commit); only those load. Anything
every scene reads, or anything the stamp does not know, takes the full path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.book.workspace import PACKAGE_DIR
from pipeline.core import filestate
from pipeline.core.hashing import hash_json
from pipeline.core.jsonio import load_json, load_own_json
from pipeline.core.store import atomic_write_text

# 5: the book's inputs by content, the model files, the absent overrides as read
VERSION = 5
ENV_KEYS = ("SCENEMAKE_MODEL", "SCENEMAKE_BASE_URL", "SCENEMAKE_API_KEY_ENV")
# Which scenemake wrote the stamp: another install (a venv, a checkout) may bring other
# default templates.
_CODE = os.path.abspath(PACKAGE_DIR)
OUTLINE = -1  # a file's "first scene" when it is the outline: the scenes' digests say


@dataclass(frozen=True)
class Reach:
    """What a usable stamp says of the files now.

    ``first`` is None when nothing moved; else the index of the first scene a moved file
    reaches (the number of scenes when only the book-wide tasks are reached, e.g. the
    manuscript). ``files`` and ``inputs`` are the stamp's, for the next stamp of a partial
    build. ``checked``: how many tasks were checked against their build records to find it
    (0: the stamp said so).
    """

    first: int | None
    files: dict
    inputs: dict | None = None
    checked: int = 0


def env_key() -> list[str | None]:
    """The environment and the scenemake install that change what a book build means."""
    return [os.environ.get(k) for k in ENV_KEYS] + [_CODE]


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
    if not isinstance(before, dict) or now is None or now["rest"] != before.get("rest"):
        return None
    old, new = before.get("scenes") or [], now["scenes"]
    if [s for s, _ in old] != [s for s, _ in new]:
        return None
    return next((i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b), len(new))


def _moved(first: int | None, index: int | None) -> int | None:
    """The earliest reach so far; -2 for "the full path" (read by every scene)."""
    if index is None or index <= 0:
        return -2
    return index if first is None else min(first, index)


def reach(stamp_path: Path, generation: int, views_stale: bool) -> Reach | None:
    """What moved since the stamp (see ``Reach``), given the build DB's ``generation`` and
    whether ledgers wait to be rewritten; None: no stamp this build can use (missing,
    written by another version or environment, or anything in it not as scenemake writes
    it: the full path checks everything)."""
    try:
        data = load_own_json(stamp_path)
        if (not isinstance(data, dict) or data.get("version") != VERSION
                or data.get("env") != env_key()):
            return None
        if views_stale or generation != data.get("generation"):
            return None
        return _reach(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _reach(data: dict) -> Reach | None:
    stat = os.stat
    if any(os.path.lexists(p) for p in data["absent"]):
        return None  # a new override changes which template a phase reads
    for path, (mtime_ns, size) in data["models"].items():
        st = filestate.observe(path)
        if st is None or (st.st_mtime_ns, st.st_size) != (mtime_ns, size):
            return None  # every LLM task asks that model
    scenes = len(data["outline"]["scenes"])
    first: int | None = None
    for path, (digest, index) in data["inputs"].items():
        if filestate.digest(path, fresh=True) == digest:
            continue
        if index == OUTLINE:
            index = _outline_reach(data["outline"], path)
        first = _moved(first, index)
        if first == -2:
            return None
    files = data["files"]
    for folder, entries in files.items():
        for name, mtime_ns, size, index in entries:
            try:
                st = stat(folder + name)
                if st.st_mtime_ns == mtime_ns and st.st_size == size:
                    continue
            except OSError:
                pass
            first = _moved(first, index)
            if first == -2:
                return None
    return Reach(None if first is None else min(first, scenes), files, data["inputs"])


def grouped(files: dict[str, tuple[int, int, int]]) -> dict[str, list]:
    """{path: (mtime_ns, size, first scene)} as the stamp stores it: by folder."""
    folders: dict[str, list] = {}
    for path, entry in files.items():
        folder, slash, name = path.rpartition("/")
        folders.setdefault(folder + slash, []).append([name, *entry])
    # sorted by folder, then by name: the order of the paths sorted whole, with a tenth of
    # the comparisons of their long shared prefixes
    for entries in folders.values():
        entries.sort()
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


def write(stamp_path: Path, generation: int, folders: dict[str, list],
          inputs: dict[str, tuple[str, int]], absent: list[str], outline: dict,
          models: dict[str, tuple[int, int]]) -> None:
    """Record what a complete build read (see the module docstring)."""
    # compact: the next no-op reads it first thing (1000 scenes: 26000 files)
    atomic_write_text(stamp_path, json.dumps({
        "version": VERSION, "generation": generation, "env": env_key(), "absent": absent,
        "models": models, "inputs": inputs, "outline": outline, "files": folders},
        separators=(",", ":")))


def drop(stamp_path: Path) -> None:
    """Forget the stamp (the next plain doit takes the full path)."""
    try:
        stamp_path.unlink()
    except FileNotFoundError:
        pass
