"""Units of ``doit fleet``: what a unit sends to a worker, the command that builds it there,
and what comes back (``book:NAME``, ``l7:DIR``, ``pack:PATH``; the names ``doit report``
uses).

A unit is packed as a tar of its inputs AND its current outputs (a unit built halfway
resumes on the worker from what it already has); what comes back is the outputs, build DB
records included, so the caller's next local run finds everything up to date.
"""

from __future__ import annotations

import io
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import UserError


class UnitError(UserError):
    """A unit named on the command line cannot be built."""


@dataclass(frozen=True)
class Unit:
    """One unit of work: paths relative to the project root."""

    name: str  # as given: book:NAME, l7:DIR
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    command: tuple[str, ...]  # run in the worker's copy; "{python}" = the worker's python
    optional: tuple[str, ...] = field(default=())  # sent and returned when present
    means: str = ""  # what the name stands for, in words (printed when it is queued)

    def lock_key(self) -> str:
        """What the fleet's advisory lock is taken on."""
        return f"scenemake-unit:{self.name}"


def parse_unit(text: str, root: Path) -> Unit:
    """The unit named ``text`` in the project at ``root``; a UnitError says what is wrong."""
    kind, sep, arg = text.partition(":")
    if not sep or not arg:
        raise UnitError(f"'{text}' is not a unit", fix="use book:NAME, l7:DIR or pack:PATH")
    if kind == "book":
        return _book(text, arg, root)
    if kind == "l7":
        return _l7(text, arg, root)
    if kind == "pack":
        return _pack(text, arg, root)
    raise UnitError(f"'{text}': unknown unit kind '{kind}'",
                    fix="use book:NAME, l7:DIR or pack:PATH")


def _book(text: str, name: str, root: Path) -> Unit:
    if "/" in name or name.startswith("."):
        raise UnitError(f"'{text}': a book is named by its folder under workspace/books")
    folder = f"workspace/books/{name}"
    if not (root / folder / "book.json").is_file():
        raise UnitError(f"'{text}': no book there", path=f"{folder}/book.json",
                        fix="name a folder of workspace/books")
    state = f"workspace/.scenemake/books/{name}"
    return Unit(text, means=f"book {name} in {folder}", inputs=("dodo.py", folder),
                outputs=(f"{folder}/draft",),
                # doit.cfg names scenemake's task loader, which the book's dodo.py needs
                optional=("doit.cfg", "workspace/scenemake.json", f"{state}.sqlite",
                          f"{state}.sqlite-wal",
                          f"{state}.stamp.json"),
                command=("{python}", "-m", "doit", f"book={name}", "-n", "2", "-P", "thread"))


def _l7_outputs(folder: Path) -> set[Path]:
    """Folders under ``folder`` that hold an L7 run's output set (not inputs of a session)."""
    return {p.parent for name in ("session_output.json", "prompt_map_pack.json")
            for p in folder.rglob(name)}


def _single(folder: Path, pattern: str, text: str, what: str) -> Path:
    outputs = _l7_outputs(folder)
    found = sorted(p for p in folder.rglob(pattern)
                   if not any(out == p.parent or out in p.parents for out in outputs))
    if len(found) != 1:
        listed = f": {', '.join(str(p.relative_to(folder)) for p in found)}" if found else ""
        raise UnitError(f"'{text}': expected one {what} ({pattern}) in the folder, not "
                        f"counting L7 output folders; found {len(found)}{listed}",
                        path=str(folder), fix="an l7: unit is a folder holding one L7 "
                        "session's input, objective and scenes_v2.json")
    return found[0]


def _inside(root: Path, arg: str, text: str, what: str) -> tuple[Path, Path]:
    """``arg`` resolved, and relative to the project ``root`` (a UnitError if outside)."""
    path = (root / arg).resolve()
    try:
        return path, path.relative_to(root.resolve())
    except ValueError:
        raise UnitError(f"'{text}': the {what} must be inside the project") from None


def _l7(text: str, arg: str, root: Path) -> Unit:
    folder, rel = _inside(root, arg, text, "folder")
    if not folder.is_dir():
        raise UnitError(f"'{text}': no such folder", path=arg)
    session_input = _single(folder, "*session_input*.json", text, "session input")
    objective = _single(folder, "*session_objective*.json", text, "session objective")
    scenes = _single(folder, "scenes_v2.json", text, "scenes_v2.json")
    top = root.resolve()
    out = f"{rel}/l7_run_output"
    means = (f"L7 session of {rel}: {scenes.relative_to(top)} -> {rel}/l7_run_output")
    return Unit(text, means=means, inputs=(str(rel), "score_specs"),
                outputs=(out,), optional=("workspace/.scenemake/l7",),
                command=("{python}", "-m", "pipeline.l7",
                         "--session-input", str(session_input.relative_to(top)),
                         "--session-objective", str(objective.relative_to(top)),
                         "--scenes-v2", str(scenes.relative_to(top)), "--out-dir", out))


def _pack(text: str, arg: str, root: Path) -> Unit:
    from pipeline.core.jsonio import read_json

    path, rel = _inside(root, arg, text, "pack")
    data = read_json(path, "scenario pack")
    pack_id = data.get("pack_id") if isinstance(data, dict) else None
    if not isinstance(pack_id, str) or not pack_id or "/" in pack_id:
        raise UnitError(f"'{text}': not a scenario pack (no pack_id)", path=str(rel),
                        field="pack_id")
    run = f"workspace/artifacts/domain_runs/pack-{pack_id}"
    db = f"workspace/.scenemake/scenarios/pack-{pack_id}"
    # The reference assistant on a free port of the worker, started for the run.
    return Unit(text, means=f"scenario pack {pack_id} ({rel}) -> {run}",
                inputs=("workspace/scenarios", str(rel), "score_specs"),
                outputs=(run,), optional=(run, f"{db}.sqlite", f"{db}.sqlite-wal"),
                command=("{python}", "-m", "pipeline.scenario", "run-pack", "--pack", str(rel),
                         "--base-url", "http://127.0.0.1:{port}", "--start-assistant"))


def pack(root: Path, paths: tuple[str, ...], optional: tuple[str, ...] = ()) -> bytes:
    """A tar of ``paths`` (files or folders) under ``root``, mtimes kept."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in dict.fromkeys(paths + optional):
            if (root / rel).exists():
                tar.add(root / rel, arcname=rel)
            elif rel in paths and rel not in optional:
                raise UnitError(f"'{rel}' is missing", path=rel)
    return buf.getvalue()


def unpack(data: bytes, root: Path, replace: tuple[str, ...] = (),
           built_in: str | None = None) -> None:
    """Extract a tar made by :func:`pack` into ``root``; folders in ``replace`` are emptied
    first, so a file the unit deleted does not linger. ``built_in``: the folder the unit was
    built in, whose absolute paths in the build DBs become ``root``'s."""
    import shutil

    for rel in replace:
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for name in tar.getnames():
            if name.endswith(".sqlite"):
                # A stale write-ahead log beside a replaced DB would be replayed into it.
                for suffix in ("-wal", "-shm"):
                    (root / (name + suffix)).unlink(missing_ok=True)
        tar.extractall(root, filter="data")  # no absolute paths, no escapes
        dbs = [root / n for n in tar.getnames() if n.endswith(".sqlite")]
    if built_in:
        for db in dbs:
            relocate_db(db, built_in, str(root.resolve()))


def relocate_db(db: Path, old: str, new: str) -> int:
    """Move the paths under ``old`` recorded in a unit's doit sqlite DB to ``new`` (some
    families record absolute paths: the scenario reviews do), with the build DB's one
    relocation (``builddb.move_paths``); returns the rows changed."""
    import sqlite3

    from pipeline.core import builddb, sqlitefile

    conn = sqlite3.connect(db)
    try:
        with conn:
            return len(builddb.move_paths(conn, old, new))
    except sqlite3.Error as exc:
        if sqlitefile.kind(exc) == sqlitefile.OTHER and "no such table" in str(exc):
            return 0  # not a doit DB: nothing recorded to move
        raise builddb.db_failure(str(db), exc, conn) from None
    finally:
        conn.close()


def command_for(unit: Unit) -> list[str]:
    """The unit's command with this machine's python (and a free port where it needs one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    return [sys.executable if part == "{python}" else part.replace("{port}", port)
            for part in unit.command]
