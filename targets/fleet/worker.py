"""What a Dask worker does for ``doit fleet``: check it runs the same scenemake, take the
unit's advisory lock, build the unit with its own doit in its own copy of the workspace
(a plain subprocess: Dask workers are daemonic, doit's process pool is never used), and
send back the unit's outputs with what its calls cost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.hashing import hash_bytes
from pipeline.core.processes import die_with_parent

_HERE = Path(__file__).resolve().parent


def install_fingerprint() -> str:
    """blake3 over this install's code and templates: two installs with the same one build
    the same requests, anything else is version skew."""
    import pipeline

    parts = []
    for top in (Path(pipeline.__file__).resolve().parent, _HERE):
        for path in sorted(top.rglob("*")):
            if path.suffix in (".py", ".j2", ".json") and "__pycache__" not in path.parts:
                parts.append(f"{path.relative_to(top.parent)}:{hash_bytes(path.read_bytes())}")
    return hash_bytes("\n".join(parts).encode())


def _advisory_lock(url: str, key: str, poll_s: float = 0.5) -> Any:
    """A connection holding the session advisory lock ``key`` (freed if this process dies);
    a database error is a one-line SharedCacheError without the password."""
    from pipeline.llm.shared.connection import Connector

    db = Connector(url)

    def take(conn: Any) -> bool:
        return conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]

    while not db.run("take the unit's lock", take):
        time.sleep(poll_s)  # another worker builds this unit: wait, then resume from its work
    return db.connection()


TOPIC = "scenemake-fleet"
COPY_PREFIX = "scenemake-fleet-"  # a unit's copy: <tmp>/scenemake-fleet-<pid>-<random>


def new_copy() -> tuple[Path, Any]:
    """A fresh folder in this machine's temp folder for a unit's copy, and the lock that says
    a live worker uses it (``<copy>.lock``, taken before the folder exists and held until it
    is removed; the kernel drops it when the worker dies, however it dies). The copies dead
    workers left are removed first."""
    import secrets

    from pipeline.core.lock import FileLock

    sweep_dead_copies()
    tmp = Path(tempfile.gettempdir())
    while True:
        name = f"{COPY_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        lock = FileLock(tmp / f"{name}.lock", remove=True)
        lock.acquire("a fleet copy of that name is in use")
        try:
            (tmp / name).mkdir(mode=0o700)
        except FileExistsError:
            lock.release()
            continue
        return (tmp / name).resolve(), lock


def sweep_dead_copies(tmp: Path | None = None) -> list[str]:
    """Remove the unit copies (``scenemake-fleet-*``) in the temp folder whose worker died
    (its lock is free; a copy with no lock: its PID is gone); a live worker's copy is never
    touched. Returns the names removed. Called before each unit and by each ``doit fleet``."""
    from pipeline.core.lock import pid_alive, remove_if_free

    tmp = Path(tmp or tempfile.gettempdir())
    removed = []
    try:
        found = sorted(tmp.glob(f"{COPY_PREFIX}*"))
    except OSError:
        return removed
    for entry in found:
        if entry.suffix == ".lock" or entry.is_symlink() or not entry.is_dir():
            continue
        lock = entry.with_name(entry.name + ".lock")
        if lock.exists():
            if not remove_if_free(lock):
                continue  # its worker is alive
        else:  # a copy made before copies had locks: its PID, if the name has one
            pid = entry.name[len(COPY_PREFIX):].partition("-")[0]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    for lock in found:
        if lock.suffix == ".lock" and not lock.with_suffix("").exists():
            remove_if_free(lock)  # its copy is gone and so is its worker
    return removed


def _tell(unit: str, state: str, worker: str) -> None:
    """Tell the caller (subscribed to TOPIC) that ``unit`` entered ``state``."""
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, {"unit": unit, "state": state, "worker": worker})
    except (ImportError, ValueError):
        pass  # not inside a Dask worker (e.g. called directly): nobody to tell


def _calls(log: Path, since: int) -> dict:
    lines = log.read_text(encoding="utf-8").splitlines()[since:] if log.exists() else []
    calls = [json.loads(line) for line in lines if line.strip()]
    paid = [c for c in calls if c.get("cache") == "miss"]
    return {"calls": len(calls), "paid": len(paid),
            "cost_usd": round(sum(c.get("cost_usd", 0.0) for c in paid), 6)}


def build_unit(unit: Any, payload: bytes, fingerprint: str, cache: str,
               run: str | None, origin: str = "", shared: Any = None) -> dict:
    """Build ``unit`` (a ``units.Unit``) from ``payload``; returns its result (a
    refusal or a one-line error is a result too, never an exception with a traceback).

    ``cache`` is the caller's shared cache URL without its password: the worker must have
    the same (from its own ``SCENEMAKE_CACHE_URL``, with credentials from its environment or
    a pgpass file). ``origin`` is the caller's machine name: the unit's calls are logged as
    its (``doit cost`` there counts them; ``--all-machines`` shows the worker).

    ``shared`` (a ``sharedfs.SharedFS``, with ``--shared-fs``): ``payload`` is empty;
    the unit is copied from the caller's folder, which this machine mounts at the same path,
    its result files are written back there, and only the build-DB records are returned
    (``records``; ``files`` stays empty).
    """
    worker = socket.gethostname()
    try:
        copy, owner = new_copy()
    except UserError as exc:  # the temp folder cannot be written
        return {"unit": unit.name, "worker": f"{worker}:{os.getpid()}", "rc": "error",
                "root": "", "calls": 0, "paid": 0, "cost_usd": 0.0, "files": b"",
                "message": f"worker {worker}: {exc}"}
    result: dict = {"unit": unit.name, "worker": f"{worker}:{os.getpid()}", "rc": None,
                    "root": str(copy),
                    "calls": 0, "paid": 0, "cost_usd": 0.0, "files": b"", "message": ""}
    try:
        mine = install_fingerprint()
        if mine != fingerprint:
            result.update(rc="skew", message=f"worker {worker} runs another scenemake "
                          f"(code {mine[:12]}, this machine {fingerprint[:12]})")
            return result
        return _build(unit, payload, cache, run, copy, result, origin, shared)
    except UserError as exc:
        result.update(rc="error", message=str(exc))
        return result
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        owner.release()


def _build(unit: Any, payload: bytes, cache: str, run: str | None, copy: Path,
           result: dict, origin: str, shared: Any = None) -> dict:
    from pipeline.llm.shared import FLEET_MARK, shared_settings
    from pipeline.llm.shared.connection import redact
    from targets.fleet import sharedfs as fleet_sharedfs
    from targets.fleet.units import command_for, pack, unpack

    worker = result["worker"].rpartition(":")[0]
    if shared is not None:
        refused = fleet_sharedfs.refusal(shared, worker)
        if refused:
            result.update(rc="shared-fs", message=refused)
            return result
    else:
        unpack(payload, copy)
    url = os.environ.get("SCENEMAKE_CACHE_URL") or ""
    settings = shared_settings((Path(shared.root) if shared else copy) / "workspace")
    url = settings.url if settings else url
    if not url or redact(url) != cache:
        result.update(rc="config", message=f"worker {worker} is not on the shared cache "
                      f"{cache} (set SCENEMAKE_CACHE_URL on the workers)")
        return result
    env = {**os.environ, "SCENEMAKE_CACHE_URL": url, "PYTHONUNBUFFERED": "1",
           "SCENEMAKE_MACHINE": f"{origin or worker}{FLEET_MARK}{unit.name} on {worker})"}
    if run:
        env["SCENEMAKE_RUN"] = run
    log = copy / "workspace" / ".scenemake" / "llm_calls.jsonl"
    lock = _advisory_lock(url, unit.lock_key())
    try:
        before: dict[str, str] = {}
        rows: dict = {}
        if shared is not None:
            # Copied under the unit's lock, so a unit given to this worker after another
            # died resumes from everything that one wrote back. Built in a local copy all
            # the same: never sqlite on the network file system.
            fleet_sharedfs.copy_in(Path(shared.root), copy, unit)
            before = fleet_sharedfs.manifest(copy, unit.outputs + unit.optional)
            rows = fleet_sharedfs.db_rows(copy, unit.outputs + unit.optional)
        _tell(unit.name, "running", result["worker"])
        since = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
        # the unit's doit dies with the worker: a unit given to another worker is never
        # built twice at once (the advisory lock died with the worker)
        proc = subprocess.run(command_for(unit), cwd=copy, env=env, capture_output=True,
                              text=True, preexec_fn=die_with_parent)
        out = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        result.update(rc=proc.returncode, **_calls(log, since),
                      message=" | ".join(ln for ln in out if not ln.startswith(("-- ", ".  ")))
                      [-600:] if proc.returncode else "",
                      tasks=sum(1 for ln in out if ln.startswith(".  ")))
        # Outputs come back whether or not it finished: what was built is never lost.
        if shared is None:
            result["files"] = pack(copy, unit.outputs, unit.optional)
            return result
        # Written back still under the lock: the next holder copies a finished write.
        result["written"], result["removed"] = fleet_sharedfs.write_back(
            copy, Path(shared.root), unit, before)
        result["records"] = fleet_sharedfs.db_records(
            rows, fleet_sharedfs.db_rows(copy, unit.outputs + unit.optional))
        # kept beside the files too, should the caller stop before it merges them
        result["pending"] = fleet_sharedfs.write_pending(
            Path(shared.root), unit.name, str(copy), result["records"])
        return result
    finally:
        lock.close()
