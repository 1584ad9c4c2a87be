"""``doit fleet --shared-fs``: the caller's workspace is on a file system every worker mounts
at the same path, so the results stay there instead of travelling through Dask.

A worker still builds in its own local copy (sqlite never runs on the network file system
from two machines): it copies the unit's inputs and current outputs from the shared folder,
builds, then writes the files that changed straight back with the one writer
(pipeline/core/store.py: staged, fsynced, renamed). Only the build-DB records come back
through Dask (rows, no file contents); the caller merges them into its own build DB, which
stays where it always is (``workspace/.scenemake/...``) and is only ever opened by the
caller's machine: one host, so sqlite's locks and WAL shared memory work as on a local disk.

Before any of this the worker checks that it sees the caller's folder, not just a folder of
the same name: the caller writes a probe file with a random token, the worker reads it back.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.builddb import check_file, db_failure
from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes
from pipeline.core.sqlitefile import DAMAGED

PROBE_DIR = "workspace/.scenemake/fleet"
# A unit's build-DB rows, written by its worker right after its files: the caller removes
# them once merged, and a fleet whose caller stopped before that merges them next time.
PENDING_DIR = f"{PROBE_DIR}/pending"
# Files that never go back as files: the build DBs (their records go to the caller, who
# alone writes its DB), their journals, and lock files (they hold no result).
_NOT_FILES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal", ".lock")
_PROBE_WAIT_S = 3.0  # how long a missing probe is looked for again before refusing
_BATCH_BYTES = 64 << 20  # write back in batches: one unit's outputs need not fit in memory


@dataclass(frozen=True)
class SharedFS:
    """Where the caller's project is, as every worker must see it."""

    root: str  # absolute path of the project, the same on every machine
    probe: str  # the probe file, relative to root
    token: str  # what the probe holds


def write_probe(root: Path) -> SharedFS:
    """Write a probe with a fresh random token into the project at ``root``."""
    from pipeline.core.store import atomic_write_text

    token = secrets.token_hex(16)
    rel = f"{PROBE_DIR}/probe-{token[:12]}"
    atomic_write_text(root / rel, f"{token}\n{socket.gethostname()}\n")
    return SharedFS(str(root.resolve()), rel, token)


def remove_probe(shared: SharedFS) -> None:
    """Remove the probe (best effort: a leftover probe is a few bytes nobody reads)."""
    try:
        (Path(shared.root) / shared.probe).unlink()
    except OSError:
        pass


def refusal(shared: SharedFS, worker: str) -> str:
    """'' when this machine sees the caller's folder at ``shared.root``, else one line
    naming the path and the worker."""
    root = Path(shared.root)
    fix = ("mount the caller's folder at the same path on every worker, or leave out "
           "--shared-fs")
    if not root.is_dir():
        return f"worker {worker} cannot see the shared folder {root} (no such folder there): " \
            + fix
    seen = _read_token(root / shared.probe)
    deadline = time.monotonic() + _PROBE_WAIT_S
    while seen is None and time.monotonic() < deadline:
        # A network file system may show a file just made on another machine a moment late.
        time.sleep(0.25)
        seen = _read_token(root / shared.probe)
    if seen != shared.token:
        return (f"worker {worker} sees another folder at {root} (the caller's probe "
                f"{shared.probe} is {'missing' if seen is None else 'not the same'} there): "
                + fix)
    return ""


def copy_in(shared: Path, copy: Path, unit) -> None:
    """Copy the unit's inputs and current outputs from the shared project into the local
    ``copy``, with their exact mtimes (the unit's doit and its no-op stamp compare them)."""
    import shutil

    from targets.fleet.units import UnitError

    paths = list(dict.fromkeys(unit.inputs + unit.outputs + unit.optional))
    for rel in paths:
        if any(rel.startswith(other.rstrip("/") + "/") for other in paths if other != rel):
            continue  # inside a folder copied whole (a book's draft inside its folder)
        source, target = shared / rel, copy / rel
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif rel in unit.inputs and rel not in unit.optional:
            raise UnitError(f"'{rel}' is missing", path=str(source))


def _read_token(probe: Path) -> str | None:
    try:
        return probe.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None


def _is_file_result(rel: str) -> bool:
    return not rel.endswith(_NOT_FILES)


def files_under(root: Path, paths: tuple[str, ...]) -> dict[str, Path]:
    """The result files (not DBs, journals or locks) under ``paths`` (files or folders)
    of ``root``, by path relative to ``root``."""
    found: dict[str, Path] = {}
    for rel in paths:
        top = root / rel
        if top.is_file():
            candidates = [top]
        elif top.is_dir():
            candidates = [p for p in top.rglob("*") if p.is_file() and not p.is_symlink()]
        else:
            continue
        for path in candidates:
            name = path.relative_to(root).as_posix()
            if _is_file_result(name):
                found[name] = path
    return found


def manifest(root: Path, paths: tuple[str, ...]) -> dict[str, str]:
    """Content hash of every result file under ``paths``: what the unit started from."""
    return {rel: hash_bytes(p.read_bytes()) for rel, p in files_under(root, paths).items()}


def write_back(copy: Path, shared: Path, unit, before: dict[str, str]) -> tuple[int, int]:
    """Write the unit's changed and new result files from its local ``copy`` into the
    ``shared`` project (atomically, mtimes kept), then remove the output files the unit
    deleted (only if nobody changed them meanwhile). Returns (written, removed)."""
    from pipeline.core.store import atomic_write_many

    now = files_under(copy, unit.outputs + unit.optional)
    changed: list[tuple[str, Path, bytes]] = []
    for rel, path in now.items():
        data = path.read_bytes()
        if before.get(rel) != hash_bytes(data):
            changed.append((rel, path, data))
    batch: dict[str, bytes] = {}
    size = 0
    for i, (rel, _, data) in enumerate(changed):
        batch[str(shared / rel)] = data
        size += len(data)
        if size >= _BATCH_BYTES or i == len(changed) - 1:
            # No sweep of "dead" writers' temp files there: on a shared file system a temp
            # file may be another machine's write in progress, its PID meaningless here.
            atomic_write_many(batch, sweep=False)
            batch, size = {}, 0
    for rel, path, _ in changed:
        # The caller's doit and its no-op stamp compare mtimes before hashing.
        st = path.stat()
        os.utime(shared / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    removed = 0
    outputs = tuple(o.rstrip("/") + "/" for o in unit.outputs)
    for rel, digest in before.items():
        if rel in now or not rel.startswith(outputs):
            continue
        target = shared / rel
        try:
            if hash_bytes(target.read_bytes()) == digest:
                target.unlink()
                removed += 1
        except OSError:
            pass  # already gone
    return len(changed), removed


def db_rows(copy: Path, paths: tuple[str, ...]) -> dict[str, dict[str, dict]]:
    """Every table of every build DB (``*.sqlite``) under ``paths`` of ``copy``:
    ``{db path relative to the project: {table: {"sql": its CREATE statement, "key": its
    primary-key columns, "rows": {key values: row}}}}``."""
    import sqlite3

    found: dict[str, dict[str, dict]] = {}
    for rel in paths:
        top = copy / rel
        dbs = [top] if top.is_file() else sorted(top.rglob("*.sqlite")) if top.is_dir() else []
        for db in dbs:
            if db.suffix != ".sqlite":
                continue
            conn = sqlite3.connect(db)
            try:
                tables = {}
                for name, sql in conn.execute(
                        "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
                    info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
                    pk = [col for col in sorted(info, key=lambda c: c[5]) if col[5]]
                    at = [c[0] for c in pk] or [c[0] for c in info]  # no key: the whole row
                    tables[name] = {
                        "sql": sql, "key": [info[i][1] for i in at],
                        "rows": {tuple(r[i] for i in at): r
                                 for r in conn.execute(f'SELECT * FROM "{name}"')}}
                found[db.relative_to(copy).as_posix()] = tables
            except sqlite3.Error as exc:
                raise db_failure(str(db), exc, conn) from None
            finally:
                conn.close()
    return found


def db_records(before: dict[str, dict[str, dict]],
               after: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """What the unit changed in its build DBs, from :func:`db_rows` before and after it ran:
    ``{db: {table: {"sql", "key", "upsert": [rows], "delete": [key values]}}}`` (tables
    without a change left out). A unit that had little to do sends little."""
    records: dict[str, dict[str, dict]] = {}
    for db, tables in after.items():
        changed = {}
        for name, table in tables.items():
            old = before.get(db, {}).get(name, {}).get("rows", {})
            upsert = [row for key, row in table["rows"].items() if old.get(key) != row]
            delete = [list(key) for key in old if key not in table["rows"]]
            if upsert or delete or name not in before.get(db, {}):
                changed[name] = {"sql": table["sql"], "key": table["key"], "upsert": upsert,
                                 "delete": delete}
        if changed:
            records[db] = changed
    return records


def merge_records(root: Path, records: dict[str, dict[str, dict]], built_in: str) -> None:
    """Apply the records a worker sent (:func:`db_records`: rows the unit added, changed
    or removed) to the caller's build DBs under ``root``, one transaction per DB under its
    run lock, then move the worker's folder in their recorded paths to ``root``."""
    import sqlite3

    from pipeline.core.lock import FileLock
    from targets.fleet.units import relocate_db

    for rel, tables in records.items():
        db = root / rel
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{db}.lock")
        lock.acquire(f"{rel}: a local run is using this build DB", wait=60,
                     fix="let it finish, then run the fleet again (nothing is paid twice)")
        try:
            conn = sqlite3.connect(db, isolation_level=None, timeout=30)
            try:
                conn.execute("pragma journal_mode=wal")  # as the build DB opens it
                check_file(db)  # a damaged page is one line before anything is merged
                have = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                conn.execute("BEGIN IMMEDIATE")
                for name, table in tables.items():
                    if name not in have:
                        conn.execute(table["sql"])
                    where = " AND ".join(f'"{k}" IS ?' for k in table["key"])
                    conn.executemany(f'DELETE FROM "{name}" WHERE {where}', table["delete"])
                    if table["upsert"]:
                        marks = ", ".join("?" * len(table["upsert"][0]))
                        conn.executemany(f'INSERT OR REPLACE INTO "{name}" VALUES ({marks})',
                                         table["upsert"])
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failure = db_failure(str(db), exc, conn)
                if failure.kind == DAMAGED:
                    raise failure from None
                raise UserError(f"{rel}: could not record the unit's build in this build DB "
                                f"({exc}); the next doit runs its tasks again from the cache")\
                    from None
            finally:
                conn.close()
            if built_in:  # (an empty folder would "move" every path)
                relocate_db(db, built_in, str(root.resolve()))
        finally:
            lock.release()


def write_pending(shared: Path, unit_name: str, built_in: str,
                  records: dict[str, dict[str, dict]]) -> str | None:
    """Keep ``records`` in the shared project until the caller merged them (written after
    the unit's files, so they never describe files that are not there yet); returns the
    file's path relative to the project (None: nothing to keep)."""
    from pipeline.core.store import atomic_write_many

    if not records:
        return None
    try:
        data = json.dumps({"unit": unit_name, "root": built_in, "records": records})
    except (TypeError, ValueError):
        return None  # a value JSON cannot hold: the rows still travel through Dask
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", unit_name)[:60]
    rel = f"{PENDING_DIR}/{time.time_ns()}-{slug}.json"
    atomic_write_many({str(shared / rel): data.encode("utf-8")}, sweep=False)
    return rel


def merged(root: Path, pending: str | None) -> None:
    """The caller merged the rows kept in ``pending``: remove the file."""
    if pending:
        (root / pending).unlink(missing_ok=True)


def merge_pending(root: Path) -> list[str]:
    """Merge the rows that units of an earlier fleet left for a caller that stopped before
    merging them (oldest first), removing each file once merged; returns their units."""
    from pipeline.core.jsonio import read_json

    done = []
    folder = root / PENDING_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = read_json(path, "a fleet unit's build records", max_text=None)
        if not isinstance(data, dict) or not isinstance(data.get("records"), dict):
            raise UserError(f"{path.relative_to(root)}: not a fleet unit's build records",
                            fix="move it away; the unit's next build rebuilds from the cache")
        merge_records(root, data["records"], str(data.get("root") or ""))
        path.unlink(missing_ok=True)
        done.append(str(data.get("unit") or path.name))
    return done
