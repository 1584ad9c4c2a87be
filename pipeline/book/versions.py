"""Versions of every phase's artifacts, kept content-addressed so none is lost when replaced.

Layout, under the workspace's ``.scenemake/versions/<book>/``:

- ``objects/<ab>/<blake3>``: each artifact content once, named by its hash;
- ``index/<scene>/<phase>.json``: the versions of one phase of one scene, oldest first,
  each with its number, when, the attempt, the prompt and template hashes, why it was
  made (first build, inputs changed, a rerun, an accepted prompt change and its reason, a
  restore) and the hash of each file.

A version is added when a phase's record is committed with files that differ from the
last version. Each index keeps the last ``KEEP`` versions (the first one is always kept);
``doit gc`` deletes the objects no index refers to.

Nothing read back from the store is trusted: a file is read only as a regular file inside
it (no link followed, at any level below the store's folder), a kept file's blake3 must be
its name before it is shown or restored, and an index entry that is not a hash is refused.
:meth:`Versions.damage` lists what does not hold (``doit verify``, ``doit gc``).
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file
from pipeline.core.jsonio import display_path, loads
from pipeline.core.store import atomic_write_bytes, atomic_write_json

KEEP = 20  # versions per phase of a scene; older ones (but the first) are dropped by gc
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Read-only, never through a link, and without waiting on a FIFO left where a file belongs.
_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def is_digest(value: Any) -> bool:
    """True for a blake3 hex digest as the store names its files (64 lowercase hex)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


class Unreadable(Exception):
    """A file of the store that cannot be trusted; the message says why, in a few words."""


class DamagedVersion(UserError):
    """A kept version whose file is missing, damaged, a link, or named by no hash."""


@dataclass(frozen=True)
class Damage:
    """One thing in the store that does not hold: which version's file, and why."""

    task: str
    version: int | None
    name: str
    path: str
    problem: str

    def line(self) -> str:
        """One line for ``doit verify`` and ``doit gc``."""
        which = f"{self.task} version {self.version}" if self.version is not None \
            else self.task
        what = f"kept file '{self.name}'" if self.name else "version index"
        return f"{which}: {what} {self.problem} ({self.path})"


class Versions:
    """The version store of one book."""

    def __init__(self, state_dir: Path, book: str):
        self.root = Path(state_dir) / "versions" / book

    # -- paths ---------------------------------------------------------------------------
    def _object(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def index_path(self, task_id: str) -> Path:
        phase, _, sid = task_id.partition(":")
        return self.root / "index" / sid / f"{phase}.json"

    # -- reading what is inside the store, and only that ----------------------------------
    def _read_inside(self, path: Path) -> bytes:
        """The bytes of ``path`` (below the store's folder), opened folder by folder without
        following a link, and only if it is a regular file. Raises FileNotFoundError when
        absent, :class:`Unreadable` when something else stands there."""
        parts = path.relative_to(self.root).parts
        fds: list[int] = []
        try:
            folder = True
            try:
                fds.append(os.open(self.root, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY))
                for part in parts[:-1]:
                    fds.append(os.open(part, _OPEN | os.O_DIRECTORY, dir_fd=fds[-1]))
                folder = False
                fd = os.open(parts[-1], _OPEN, dir_fd=fds[-1])
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise FileNotFoundError(str(path)) from None
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Unreadable(
                        "lies in a folder of the store that is a link (never followed)" if folder
                        else "is a link, not a kept file (links are never followed)") from None
                raise Unreadable(f"cannot be read ({exc.strerror or exc})") from None
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise Unreadable("is not a regular file")
                try:
                    return fh.read()
                except OSError as exc:
                    raise Unreadable(f"cannot be read ({exc.strerror or exc})") from None
        finally:
            for fd in fds:
                os.close(fd)

    def _checked(self, digest: Any) -> bytes:
        """The content of the kept file ``digest``, whose blake3 is its name; raises
        :class:`Unreadable` (or FileNotFoundError) otherwise."""
        if not is_digest(digest):
            raise Unreadable(f"is named by {json.dumps(digest)[:80]}, which is not a "
                             "content hash")
        data = self._read_inside(self._object(digest))
        if hash_bytes(data) != digest:
            raise Unreadable(f"is damaged: its content ({len(data)} bytes) does not match "
                             "its hash")
        return data

    # -- reading -------------------------------------------------------------------------
    def _index(self, path: Path) -> dict:
        try:
            data = loads(self._read_inside(path), allow_nan=False)
        except FileNotFoundError:
            return {}
        except (Unreadable, ValueError) as exc:
            raise UserError(f"version index {exc}" if isinstance(exc, Unreadable) else
                            f"version index is not valid JSON ({exc})",
                            path=display_path(path),
                            fix="move it away: its phase starts a new history") from None
        if not isinstance(data, dict) or not isinstance(data.get("versions", []), list) \
                or not all(isinstance(e, dict) and isinstance(e.get("version"), int)
                           and isinstance(e.get("files"), dict)
                           for e in data.get("versions", [])):
            raise UserError("version index is not a list of versions",
                            path=display_path(path),
                            fix="move it away: its phase starts a new history")
        return data

    def history(self, task_id: str) -> list[dict]:
        """The versions of a phase of a scene, oldest first ([] if none)."""
        return self._index(self.index_path(task_id)).get("versions", [])

    def content(self, task_id: str, entry: dict, name: str) -> bytes:
        """The kept file ``name`` of version ``entry`` of ``task_id``, checked against its
        hash; a one-line :class:`DamagedVersion` naming the version and the file if it is
        missing, damaged, a link or not named by a hash."""
        digest = entry["files"][name]
        where = f"{task_id} version {entry['version']}: kept file '{name}'"
        path = self._object(digest) if is_digest(digest) else self.index_path(task_id)
        try:
            return self._checked(digest)
        except FileNotFoundError:
            raise DamagedVersion(f"{where} is missing", path=display_path(path),
                                 fix="it was pruned or deleted; doit history "
                                     f"{task_id} lists what is kept") from None
        except Unreadable as exc:
            raise DamagedVersion(f"{where} {exc}", path=display_path(path),
                                 fix=f"nothing was written; doit history {task_id} lists "
                                     "the other versions, doit verify checks them all"
                                 ) from None

    def version(self, task_id: str, number: int | None) -> dict:
        """One version (``None``: the newest)."""
        versions = self.history(task_id)
        if not versions:
            raise UserError(f"{task_id} has no kept versions",
                            fix="build it first; versions are kept from then on")
        if number is None:
            return versions[-1]
        for entry in versions:
            if entry["version"] == number:
                return entry
        raise UserError(f"{task_id} has no version {number}",
                        fix=f"kept: {', '.join(str(v['version']) for v in versions)}")

    def damage(self) -> list[Damage]:
        """Every kept file a version refers to that is missing, damaged, a link or not named
        by a hash, and every version index that cannot be read (each blob read once)."""
        found: list[Damage] = []
        checked: dict[str, str | None] = {}
        for index in self._indexes():
            task_id = f"{index.stem}:{index.parent.name}"
            try:
                versions = self.history(task_id)
            except UserError as exc:
                found.append(Damage(task_id, None, "", display_path(index), exc.bare))
                continue
            for entry in versions:
                for name, digest in entry["files"].items():
                    key = digest if is_digest(digest) else f"!{digest!r}"
                    if key not in checked:
                        try:
                            self._checked(digest)
                            checked[key] = None
                        except FileNotFoundError:
                            checked[key] = "is missing"
                        except Unreadable as exc:
                            checked[key] = str(exc)
                    if checked[key] is not None:
                        path = self._object(digest) if is_digest(digest) else index
                        found.append(Damage(task_id, entry["version"], str(name),
                                            display_path(path), checked[key] or ""))
        return found

    def _indexes(self) -> list[Path]:
        """The version index files (real files in real folders of the store only)."""
        top = self.root / "index"
        if top.is_symlink() or not top.is_dir():
            return []
        return sorted(p for d in top.iterdir() if d.is_dir() and not d.is_symlink()
                      for p in d.glob("*.json"))

    # -- writing -------------------------------------------------------------------------
    def _put(self, data: bytes, digest: str) -> None:
        target = self._object(digest)
        try:
            self._checked(digest)
            return  # already kept, intact
        except (FileNotFoundError, Unreadable):
            pass  # absent, or damaged: written (again) below
        for folder in (target.parent.parent, target.parent):
            if folder.is_symlink():  # a link where the store's folder belongs: not ours
                folder.unlink()
        # a copy of a file that is on disk anyway: no fsync on the build's path
        atomic_write_bytes(target, data, durable=False)

    def add(self, task_id: str, files: dict[str, str], meta: dict[str, Any]) -> dict | None:
        """Keep the files (name -> path) of a phase as its newest version, unless they are
        the newest version already. Files whose content cannot be read are skipped."""
        hashes: dict[str, str] = {}
        for name, path in files.items():
            try:
                data = Path(path).read_bytes()
            except OSError:
                continue
            digest = hash_bytes(data)
            self._put(data, digest)
            hashes[name] = digest
        if not hashes:
            return None
        versions = self.history(task_id)
        if versions and versions[-1]["files"] == hashes:
            return None
        entry = {"version": (versions[-1]["version"] + 1) if versions else 1, **meta,
                 "files": hashes}
        versions.append(entry)
        if len(versions) > KEEP:
            versions = versions[:1] + versions[-(KEEP - 1):]
        atomic_write_json(self.index_path(task_id), {"task": task_id, "versions": versions})
        return entry

    def gc(self) -> tuple[int, int]:
        """Delete the kept files no version refers to; returns (files, bytes) freed.

        Nothing is followed: a link in the store is removed as itself (never its target), and
        a folder of ``objects/`` that is a link is never entered."""
        used: set[str] = set()
        for index in self._indexes():
            try:
                data = self._index(index)
            except UserError:
                continue  # reported by damage(); its files are not freed meanwhile
            for entry in data.get("versions", []):
                used.update(d for d in entry["files"].values() if is_digest(d))
        count = size = 0
        objects = self.root / "objects"
        if objects.is_symlink() or not objects.is_dir():
            return count, size
        for folder in objects.iterdir():
            if folder.is_symlink() or not folder.is_dir():
                continue
            for obj in folder.iterdir():
                if obj.name in used:
                    continue  # (a damaged one is reported by damage(), never guessed at)
                try:
                    st = obj.lstat()
                    if stat.S_ISDIR(st.st_mode):
                        continue
                    obj.unlink()
                except OSError:
                    continue
                count += 1
                size += st.st_size
        return count, size


def meta_from_values(values: dict, previous: dict | None, events: list[dict]) -> dict:
    """What to record with a new version: when, attempt, prompt and template hashes, why."""
    meta: dict[str, Any] = {"timestamp": values.get("timestamp")}
    if "attempt" in values:
        meta["attempt"] = values["attempt"]
    if values.get("prompt_hash"):
        meta["prompt_hash"] = values["prompt_hash"]
        meta["templates"] = {role: t.get("hash") for role, t in
                             (values.get("template_set") or {}).items()}
    update = values.get("prompt_update") or {}
    if previous is None:
        reason = "first build"
    elif (update.get("prompt_hash_new") == values.get("prompt_hash")
          and previous.get("prompt_hash") not in (None, values.get("prompt_hash"))):
        reason = f"prompt change accepted: {update.get('prompt_update_reason')}"
        meta["prompt_hash_prev"] = update.get("prompt_hash_prev")
    elif values.get("attempt", 0) > previous.get("attempt", 0):
        reason = f"rerun-from (attempt {values['attempt']}: asked afresh)"
    elif any(e["kind"] == "pre_state_accepted" for e in events):
        reason = "forced resume over a changed pre-state"
    else:
        reason = "rebuilt: its inputs changed"
    meta["reason"] = reason
    return meta


# -- diffs ------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s+|[^\s]+")


def _split(text: str) -> tuple[str, str, str]:
    core = text.strip()
    if not core:
        return text, "", ""
    start = text.index(core)
    return text[:start], core, text[start + len(core):]


def word_diff(old: str, new: str) -> str:
    """``[-removed-]{+added+}`` inline, the rest as it was (git's --word-diff=plain)."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append("".join(a[i1:i2]))
            continue
        lead_a, gone, trail_a = _split("".join(a[i1:i2]))
        lead_b, came, trail_b = _split("".join(b[j1:j2]))
        # the spaces around a change stay outside its marks, so the words keep apart
        out.append(lead_a if gone else lead_b)
        if gone:
            out.append(f"[-{gone}-]")
        if came:
            out.append(f"{{+{came}+}}")
        out.append(trail_b if came else trail_a)
    return "".join(out)


REWRITTEN = 0.5  # below this share of words in common, prose is shown side by side
COLUMN = 48  # characters per column of a side-by-side diff


def prose_diff(old: str, new: str) -> list[str]:
    """A word diff of two proses; when most words changed (a rewrite, where a word diff
    interleaves every word), their paragraphs side by side instead."""
    a, b = old.split(), new.split()
    if not a or not b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() \
            >= REWRITTEN:
        return [word_diff(old, new)]
    return side_by_side(old, new)


def side_by_side(old: str, new: str, width: int = COLUMN) -> list[str]:
    """Old and new paragraphs in two columns, paragraph by paragraph."""
    import itertools
    import textwrap

    def paragraphs(text: str) -> list[list[str]]:
        return [textwrap.wrap(" ".join(p.split()), width) or [""]
                for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]

    lines = ["(rewritten: most words changed; old | new, paragraph by paragraph)",
             f"{'old':<{width}} | new", f"{'-' * width}-+-{'-' * width}"]
    for i, (left, right) in enumerate(itertools.zip_longest(paragraphs(old), paragraphs(new),
                                                            fillvalue=[])):
        if i:
            lines.append(f"{'':<{width}} |")
        for l_line, r_line in itertools.zip_longest(left, right, fillvalue=""):
            lines.append(f"{l_line:<{width}} | {r_line}".rstrip())
    return lines


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, list) and obj:
        out = {}
        for i, value in enumerate(obj):
            out.update(_flatten(value, f"{prefix}[{i}]"))
        return out
    return {prefix or "$": obj}


def json_diff(old: Any, new: Any) -> list[str]:
    """One line per changed leaf: ``~ path: old -> new``, ``+ path: new``, ``- path: old``."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in list(a) + [p for p in b if p not in a]:
        if path in a and path in b:
            if a[path] != b[path]:
                lines.append(f"~ {path}: {json.dumps(a[path], ensure_ascii=False)} -> "
                             f"{json.dumps(b[path], ensure_ascii=False)}")
        elif path in a:
            lines.append(f"- {path}: {json.dumps(a[path], ensure_ascii=False)}")
        else:
            lines.append(f"+ {path}: {json.dumps(b[path], ensure_ascii=False)}")
    return lines


def diff_files(name: str, old: bytes | None, new: bytes | None) -> list[str]:
    """The lines that show what changed in one artifact between two versions."""
    if old == new:
        return []
    if old is None or new is None:
        return [f"{name}: {'added' if old is None else 'removed'}"]
    if name == "prose":
        return [f"{name}:", *prose_diff(old.decode("utf-8"), new.decode("utf-8"))]
    try:
        return [f"{name}:"] + ["  " + line for line in json_diff(json.loads(old),
                                                                 json.loads(new))]
    except ValueError:
        return [f"{name}:", word_diff(old.decode("utf-8", "replace"),
                                      new.decode("utf-8", "replace"))]


def current_matches(files: dict[str, str], entry: dict) -> bool:
    """The files on disk are this version's (by content)."""
    for name, digest in entry["files"].items():
        path = files.get(name)
        try:
            if path is None or hash_file(path) != digest:
                return False
        except OSError:
            return False
    return True


def file_state(path: str, digest: str) -> list:
    """[mtime_ns, size, hash] of a file just written with known content."""
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size, digest]
