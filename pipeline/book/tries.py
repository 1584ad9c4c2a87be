"""Tries of a book: the same build, beside the accepted one, with other templates.

A try is named (``NAME``) and lives apart from everything the accepted book owns:

- ``draft/tries/NAME/``: ``try.json`` (what the try is: its scenes, templates, base, reason,
  model settings, runs), ``templates/`` (the variant templates as tried), and the try's own
  ``scenes/`` and ``context/phase_history/`` (its artifacts and ledgers);
- ``workspace/.scenemake/tries/<book>/NAME.sqlite``: its build DB;
- ``workspace/.scenemake/versions/<book>/tries/NAME/``: its kept versions.

A try starts as a copy of the accepted book's state for the scenes it needs (the artifacts
whose content is as the book recorded them, and their records, relocated): what the accepted
book would keep after the change - an unchanged phase, a version restored there, a hand edit
accepted there - the try keeps too, at no cost, and whatever it builds is what the accepted
build would build with its templates (the same requests: the same answers, paid once).
``doit accept`` then makes its templates the book's; the next build records the prompt
change as ``allow_prompt_change`` would and takes the try's answers from the response cache.

The templates a try is made on (the book's own, as resolved when it was made) are its
*base*: a try continues, and is accepted, only on that base.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.book.phase_table import LLM_PHASES, PHASES
from pipeline.book.workspace import (
    DEFAULT_TEMPLATES,
    TEMPLATE_NAMES,
    Book,
    Workspace,
    resolve_templates,
)
from pipeline.core import filestate
from pipeline.core.clock import now_iso, now_iso_ms
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes, hash_file
from pipeline.core.jsonio import display_path, read_json
from pipeline.core.store import atomic_write_bytes, atomic_write_json

VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(name: str) -> str:
    """A try's name becomes a folder: letters, digits, ``_`` and ``-``."""
    if not NAME.match(name or ""):
        raise UserError(f"'{name}' is not a try name",
                        fix="letters, digits, '_' and '-', e.g. terse or write-v2")
    return name


@dataclass(frozen=True)
class Area:
    """Where one try of one book keeps its files."""

    workspace: Workspace
    book: str
    name: str

    @property
    def folder(self) -> Path:
        return self.workspace.book_dir(self.book) / "draft" / "tries" / self.name

    @property
    def meta_path(self) -> Path:
        return self.folder / "try.json"

    @property
    def templates_dir(self) -> Path:
        return self.folder / "templates"

    @property
    def db_path(self) -> Path:
        return self.workspace.state_dir / "tries" / self.book / f"{self.name}.sqlite"

    @property
    def versions_dir(self) -> Path:
        return self.workspace.state_dir / "versions" / self.book / "tries" / self.name

    @property
    def report_path(self) -> Path:
        return self.folder / "report.html"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def meta(self) -> dict:
        """The try's ``try.json`` (one line naming the try when there is none)."""
        if not self.exists():
            raise UserError(f"no try '{self.name}' of book '{self.book}'",
                            fix=f"doit tries lists them; doit try {self.name} SCENE... makes it")
        data = read_json(self.meta_path, "try record")
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise UserError("not a try record this scenemake wrote",
                            path=display_path(self.meta_path),
                            fix=f"doit drop {self.name}, then try again")
        return data

    def save(self, meta: dict) -> None:
        atomic_write_json(self.meta_path, meta)


def names(workspace: Workspace, book: str) -> list[str]:
    """The book's tries, by name."""
    folder = workspace.book_dir(book) / "draft" / "tries"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "try.json").is_file())


# -- templates ---------------------------------------------------------------------------
def template_state(templates: dict[str, str]) -> dict[str, dict]:
    """name -> {path, hash} of a set of resolved templates."""
    out = {}
    for name, path in templates.items():
        try:
            digest = hash_file(path)
        except OSError:
            digest = None
        out[name] = {"path": path, "hash": digest}
    return out


def read_variants(folder: str) -> dict[str, Path]:
    """The templates of a variant folder (``--templates DIR``): name -> file; one line for
    a folder that is not one."""
    where = Path(folder)
    if not where.is_dir():
        raise UserError(f"--templates {folder}: no such folder",
                        fix="a folder of variant templates, e.g. variants/terse/ holding "
                            "write.j2")
    found: dict[str, Path] = {}
    for path in sorted(where.iterdir()):
        if path.suffix != ".j2":
            continue
        if path.stem not in TEMPLATE_NAMES:
            raise UserError(f"--templates {folder}: {path.name} is not a template of the book",
                            path=display_path(path),
                            fix=f"known: {', '.join(n + '.j2' for n in TEMPLATE_NAMES)}")
        if not path.is_file():
            raise UserError(f"--templates {folder}: {path.name} is not a file",
                            path=display_path(path))
        found[path.stem] = path
    if not found:
        known = ", ".join(n + ".j2" for n in TEMPLATE_NAMES)
        raise UserError(f"--templates {folder}: no template in it",
                        fix=f"put variant templates there ({known})")
    return found


def recorded_templates(records) -> dict[str, dict]:
    """name -> {path, hash} of the templates the accepted build last used, from its build
    records (``builddb.Records``, or None: nothing built), the first phase task of each that
    recorded them."""
    from pipeline.core.builddb import task_values

    out: dict[str, dict] = {}
    if records is None:
        return out
    for task_id in sorted(records.tasks):
        phase = task_id.partition(":")[0]
        if phase not in LLM_PHASES or phase in out:
            continue
        template_set = task_values(records, task_id).get("template_set") or {}
        for role, name in (("phase", phase), ("system", "system")):
            entry = template_set.get(role)
            if isinstance(entry, dict) and name not in out:
                out[name] = {"path": entry.get("path"), "hash": entry.get("hash")}
        if len(out) == len(TEMPLATE_NAMES):
            break
    return out


def changes(meta: dict, recorded: dict[str, dict]) -> list[str]:
    """What the try's templates change against the accepted book's (its recorded templates,
    else the try's base), one short phrase each: ``write.j2 +2 -1 line(s)``."""
    out = []
    tried = tried_templates(meta)
    for name in TEMPLATE_NAMES:
        was = recorded.get(name) or meta["base"][name]
        now = tried[name]
        if was.get("hash") == now.get("hash"):
            continue
        old = next((t for t in (_text(was.get("path")), _text(meta["base"][name]["path"]))
                    if t is not None and _hash_text(t) == was.get("hash")), None)
        new = _text(now.get("path"))
        summary = diff_summary(old, new) if new is not None and _hash_text(new) == \
            now.get("hash") else ""
        out.append(f"{name}.j2 " + (summary or f"{_short(was.get('hash'))} -> "
                                    f"{_short(now.get('hash'))}"))
    return out


def _hash_text(text: str) -> str:
    return hash_bytes(text.encode("utf-8"))


def diff_summary(old: str | None, new: str | None) -> str:
    """``+A -B lines`` between two template texts (None: not known)."""
    if old is None or new is None:
        return ""
    added = removed = 0
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return f"+{added} -{removed} line(s)"


def _text(path: str | None) -> str | None:
    try:
        return Path(path).read_bytes().decode("utf-8") if path else None
    except (OSError, UnicodeDecodeError):
        return None


# -- making and continuing a try -----------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """How a try's run sees the book: its draft folder (None: the book's own, for an
    estimate before the try exists) and its templates over the book's."""

    name: str
    draft: Path | None
    templates: dict[str, str]

    def book(self, book: Book) -> Book:
        """``book`` as this try builds it."""
        return dataclasses.replace(book, side=self.name, side_draft=self.draft,
                                   templates={**book.templates, **self.templates})


def _scene_ids(book: Book, given: Iterable[str]) -> list[str]:
    ids = {s.id for s in book.scenes}
    out = []
    for sid in given:
        if sid not in ids:
            book.scene(sid)  # one line naming the outline and its scenes
        if sid not in out:
            out.append(sid)
    return out


def _variants_against(book: Book, found: dict[str, Path]) -> dict[str, Path]:
    """The variant templates whose content differs from the book's own now (one the same as
    the book's is the book's: reading it from another path would be a change by path)."""
    now = template_state(book.templates)
    return {name: path for name, path in found.items()
            if hash_file(str(path)) != now[name]["hash"]}


def plan(book: Book, area: Area, scenes: list[str], templates: str | None,
         reason: str) -> tuple[dict, dict[str, Path]]:
    """The try ``area`` as this command asks for it: its record (new or extended, not saved)
    and the variant files to take in (name -> file). Refuses a try whose base moved, and
    other templates for an existing try."""
    now = template_state(book.templates)
    given = _scene_ids(book, scenes)
    if area.exists():
        meta = area.meta()
        moved = base_changes(meta, now)
        if moved:
            raise UserError(f"the book's templates changed since try '{area.name}' was made: "
                            + "; ".join(moved),
                            fix=f"doit drop {area.name}, then try again on them")
        gone = [sid for sid in meta["scenes"] if sid not in {sc.id for sc in book.scenes}]
        if gone:
            raise UserError(f"try '{area.name}' has scene(s) the outline no longer has: "
                            f"{', '.join(gone)}", fix=f"doit drop {area.name}, then try again")
        recorded = {n: v["hash"] for n, v in meta["variants"].items()}
        if templates is not None:
            asked = {n: hash_file(str(p)) for n, p in
                     _variants_against(book, read_variants(templates)).items()}
            if asked != recorded:
                differ = sorted(n for n in set(asked) | set(recorded)
                                if asked.get(n) != recorded.get(n))
                raise UserError(f"try '{area.name}' was made with other templates "
                                f"({', '.join(n + '.j2' for n in differ)} differ)",
                                fix=f"doit drop {area.name}, or try under another name")
        meta = {**meta, "scenes": meta["scenes"] + [s for s in given if s not in meta["scenes"]]}
        if reason and reason != meta.get("reason"):
            meta["reason"] = reason
        return meta, {}
    variants = _variants_against(book, read_variants(templates)) if templates else {}
    if not given:
        given = [s.id for s in book.scenes]
    meta = {"version": VERSION, "name": area.name, "book": book.name, "created": now_iso_ms(),
            "reason": reason, "scenes": given,
            "templates_from": display_path(templates) if templates else None,
            "variants": {n: {"path": (area.templates_dir / f"{n}.j2").as_posix(),
                             "hash": hash_file(str(p)), "from": display_path(p)}
                         for n, p in variants.items()},
            "base": now, "model": book.config.model.model_dump(), "runs": [],
            "accepted": None}
    return meta, variants


def base_changes(meta: dict, now: dict[str, dict]) -> list[str]:
    """How the book's templates now differ from the try's base, one phrase each."""
    out = []
    for name in TEMPLATE_NAMES:
        was, cur = meta["base"].get(name) or {}, now.get(name) or {}
        if was.get("path") != cur.get("path"):
            out.append(f"{name}.j2 is now {cur.get('path')} (was {was.get('path')})")
        elif was.get("hash") != cur.get("hash"):
            out.append(f"{cur.get('path')} ({_short(was.get('hash'))} -> "
                       f"{_short(cur.get('hash'))})")
    return out


def _short(digest: str | None) -> str:
    return digest[:8] if digest else "missing"


def take_in(area: Area, variants: dict[str, Path]) -> None:
    """Copy the variant templates into the try (what it tried stays, whatever happens to
    the folder they came from)."""
    for name, path in variants.items():
        atomic_write_bytes(area.templates_dir / f"{name}.j2", path.read_bytes())


def side(area: Area, meta: dict) -> Side:
    """The view of the book a try's run builds with."""
    return Side(area.name, area.folder, {n: v["path"] for n, v in meta["variants"].items()})


def planned_side(area: Area, book: Book, templates: str | None) -> Side:
    """The view of a try not made yet (for ``doit estimate try:NAME``): the book's draft,
    the variant templates where they are."""
    variants = _variants_against(book, read_variants(templates)) if templates else {}
    return Side(area.name, None, {n: display_path(p) for n, p in variants.items()})


def try_tasks(book: Book, scenes: list[str]) -> list[str]:
    """The tasks a try of ``scenes`` names: each scene's last phase (the rest is upstream)."""
    return [f"{PHASES[-1]}:{sid}" for sid in scenes]


def chain(book: Book, scenes: list[str]) -> list[str]:
    """Every phase task of the scenes a try of ``scenes`` builds (from the first scene on:
    a scene starts from the one before)."""
    last = max((i for i, s in enumerate(book.scenes) if s.id in scenes), default=-1)
    return [f"{p}:{s.id}" for s in book.scenes[:last + 1] for p in PHASES]


def seed(db, book: Book, area: Area, tasks: list[str]) -> list[str]:
    """Start the try's records of ``tasks`` it has no trace of from the accepted book's:
    each artifact the book recorded, copied into the try (bytes and mtime) when it is as
    recorded (else the try rebuilds it), then the records, relocated (``SceneDB.adopt``).
    ``db`` is the try's build DB, open under its run lock. Returns the tasks copied."""
    from pipeline.core.builddb import read_records

    source = book.workspace.db_path(book.name)
    records = read_records(source)
    if records is None:
        return []
    mine = db.snapshot()
    traced = set(mine.tasks) | mine.failed | {t for t, _k, _s in mine.outputs.values()}
    todo = [t for t in tasks if t not in traced]
    if not todo:
        return []
    wanted = set(todo)
    old = f"{(book.dir / 'draft').as_posix()}/scenes/"
    new = f"{area.folder.as_posix()}/scenes/"
    for path, (task_id, _known, state_raw) in records.outputs.items():
        if task_id not in wanted or not path.startswith(old):
            continue
        try:
            state = json.loads(state_raw) if state_raw else None
        except ValueError:
            continue
        if not filestate.matches(path, state):
            continue  # edited by hand, or gone: the try builds it afresh
        target = Path(new + path[len(old):])
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.seed.tmp")
        shutil.copy2(path, temp)  # the bytes and the mtime the record names
        os.replace(temp, target)
    return db.adopt(str(source), todo, old, new)


def record_run(area: Area, meta: dict, started: str, code: int) -> None:
    """Note one run of the try in its record."""
    runs = list(meta.get("runs") or [])
    runs.append({"started": started, "finished": now_iso(), "exit": code})
    area.save({**meta, "runs": runs[-20:]})


# -- accepting -----------------------------------------------------------------------------
def tried_templates(meta: dict) -> dict[str, dict]:
    """name -> {path, hash} of every template the try built with (its variants over its
    base)."""
    return {**meta["base"], **{n: {"path": v["path"], "hash": v["hash"]}
                               for n, v in meta["variants"].items()}}


def install(book: Book, area: Area, meta: dict) -> list[tuple[str, str | None, str]]:
    """Make the try's templates the book's: each variant written where the book reads that
    template from (its own file; the book's ``templates/`` override instead of a default of
    scenemake's). Every variant is checked before any is written. Returns (path, old hash,
    new hash) of each file written."""
    todo = []
    for name, variant in meta["variants"].items():
        try:
            data = Path(variant["path"]).read_bytes()
        except OSError:
            data = None
        if data is None or hash_bytes(data) != variant["hash"]:
            raise UserError(f"the try's {name}.j2 is not the one it was built with",
                            path=variant["path"], fix=f"doit drop {area.name}, then try again")
        now = book.templates[name]
        target = (book.dir / "templates" / f"{name}.j2"
                  if Path(now).resolve().is_relative_to(DEFAULT_TEMPLATES.resolve())
                  else Path(now))
        try:
            before = hash_file(str(target))
        except OSError:
            before = None
        if before != variant["hash"]:
            todo.append((target, data, before, variant["hash"]))
    for target, data, _before, _new in todo:
        atomic_write_bytes(target, data)
    return [(display_path(t), before, new) for t, _d, before, new in todo]


def acceptance(book_dir: Path, config, meta: dict, reason: str) -> dict:
    """What the build DB keeps for the next build once a try is accepted: the templates as
    the book now resolves them (path, hash) and the reason."""
    now = template_state(resolve_templates(book_dir, config))
    tried = tried_templates(meta)
    differ = [n for n in TEMPLATE_NAMES if now[n]["hash"] != tried[n]["hash"]]
    if differ:  # a template the book reads from elsewhere than where it was written
        raise UserError(f"the book does not read the try's {', '.join(differ)} template(s)",
                        path=display_path(book_dir / "book.json"), field="templates",
                        fix="remove the entry so the book reads templates/NAME.j2")
    return {"try": meta["name"], "reason": reason, "at": now_iso(),
            "templates": sorted([v["path"], v["hash"]] for v in now.values())}


def accepted_vars(raw: str | None) -> dict[str, Any]:
    """The RunVars fields of an accepted try (the ``ACCEPTED_SETTING``), or {}."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {"accepted": frozenset(tuple(t) for t in data["templates"]),
                "accepted_reason": str(data["reason"])}
    except (ValueError, KeyError, TypeError):
        return {}


def drop(area: Area) -> list[str]:
    """Remove everything of a try (its folder, build DB, kept versions); returns what went."""
    gone = []
    if area.folder.exists():
        shutil.rmtree(area.folder)
        gone.append(display_path(area.folder))
    for suffix in ("", "-wal", "-shm", ".lock"):
        path = Path(f"{area.db_path}{suffix}")
        if path.exists():
            path.unlink()
            if not suffix:
                gone.append(display_path(path))
    if area.versions_dir.exists():
        shutil.rmtree(area.versions_dir)
        gone.append(display_path(area.versions_dir))
    for folder in (area.folder.parent, area.db_path.parent, area.db_path.parent.parent,
                   area.versions_dir.parent):
        try:
            folder.rmdir()  # the last try of the book: no empty folder left behind
        except OSError:
            pass
    return gone
