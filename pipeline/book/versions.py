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
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file
from pipeline.core.jsonio import read_json
from pipeline.core.store import atomic_write_bytes, atomic_write_json

KEEP = 20  # versions per phase of a scene; older ones (but the first) are dropped by gc


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

    # -- reading -------------------------------------------------------------------------
    def history(self, task_id: str) -> list[dict]:
        """The versions of a phase of a scene, oldest first ([] if none)."""
        path = self.index_path(task_id)
        if not path.exists():
            return []
        data = read_json(path, "version index")
        return data.get("versions", []) if isinstance(data, dict) else []

    def blob(self, digest: str) -> bytes:
        """The content of one kept file."""
        try:
            return self._object(digest).read_bytes()
        except FileNotFoundError:
            raise UserError(f"the kept content {digest[:12]} is missing",
                            path=str(self._object(digest)),
                            fix="it was pruned or deleted; doit history lists what is kept"
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

    # -- writing -------------------------------------------------------------------------
    def _put(self, data: bytes, digest: str) -> None:
        target = self._object(digest)
        if not target.exists():
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
        """Delete the kept files no version refers to; returns (files, bytes) freed."""
        used: set[str] = set()
        for index in (self.root / "index").glob("*/*.json"):
            data = read_json(index, "version index")
            for entry in data.get("versions", []) if isinstance(data, dict) else []:
                used.update(entry.get("files", {}).values())
        count = size = 0
        for obj in (self.root / "objects").glob("*/*"):
            if obj.name not in used:
                size += obj.stat().st_size
                obj.unlink()
                count += 1
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
