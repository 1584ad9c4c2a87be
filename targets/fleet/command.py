"""``doit fleet``: whole units (books, L7 sessions, scenario packs) built on a Dask cluster,
one Dask task per unit, with the shared LLM cache, and their results brought back to this
workspace (or, with ``--shared-fs``, written there by the workers themselves:
targets/fleet/sharedfs.py).

    doit fleet --local 2 book:a book:b l7:workspace/l7 pack:workspace/scenarios/packs/x.json
    doit fleet --scheduler tcp://sched:8786 book:a
    doit fleet --scheduler tcp://sched:8786 --shared-fs book:a   # results stay on NFS

Why whole units: each worker runs its own doit on its own sqlite build DB in its own copy
of the workspace (never sqlite on a shared file system); model calls already overlap
within a unit with ``-P thread``, and the shared cache's claims keep any request from being
paid twice across units and machines.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from pipeline.core.errors import UserError
from targets.command import PlainCommand

opt_local = {"name": "local", "long": "local", "type": int, "default": 0,
             "help": "start a local Dask cluster of N worker processes"}
opt_shared_fs = {"name": "shared_fs", "long": "shared-fs", "type": bool, "default": False,
                 "help": "this project is on a file system every worker mounts at the same "
                         "path: workers copy the units from it and write their results "
                         "straight back; only build-DB records travel through Dask"}
opt_scheduler = {"name": "scheduler", "long": "scheduler", "type": str, "default": "",
                 "help": "address of a running Dask scheduler (tcp://HOST:8786)"}

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 3


class Fleet(PlainCommand):
    """Build units on a Dask cluster with the shared LLM cache."""

    name = "fleet"
    doc_purpose = "build books, L7 sessions and scenario packs on a Dask cluster"
    doc_usage = ("(--local N | --scheduler tcp://HOST:PORT) [--shared-fs] UNIT... "
                 "(book:NAME, l7:DIR, pack:PATH)")
    doc_description = ("Needs the shared cache (SCENEMAKE_CACHE_URL or cache_url in "
                       "workspace/scenemake.json) and the fleet extra (pip install "
                       "'scenemake[fleet]'). Results land in this workspace, so the next local "
                       "doit runs no task. Without --shared-fs each unit's inputs and results "
                       "travel through Dask (fine for books; use --shared-fs on an HPC or NFS "
                       "cluster where this project is mounted at the same path on every "
                       "worker, so big results do not: workers still build in a local copy "
                       "and write the results back themselves; a worker that does not see "
                       "this folder there refuses the unit).")
    cmd_options = (opt_local, opt_scheduler, opt_shared_fs)

    def run(self, args, local=0, scheduler="", shared_fs=False) -> int:
        """Check, build; returns the exit code."""
        import sys

        try:
            return _fleet(Path.cwd(), args, int(local or 0), scheduler or "", sys.stdout,
                          bool(shared_fs))
        except UserError as exc:
            raise UserError(f"fleet: {exc}") from None


def _fleet(root: Path, names: list[str], local: int, scheduler: str, out,
           shared_fs: bool = False) -> int:
    from pipeline.llm.shared import ENV_RUN, shared_settings
    from pipeline.llm.shared.connection import redact
    from pipeline.llm.shared.store import machine_name
    from targets.fleet.units import parse_unit

    if bool(local) == bool(scheduler):
        raise UserError("say where to build: --local N (a local Dask cluster of N worker "
                        "processes) or --scheduler tcp://HOST:PORT")
    if local < 0:
        raise UserError("--local needs a number of workers >= 1")
    if not names:
        raise UserError("name the units to build: book:NAME, l7:DIR, pack:PATH")
    units = [parse_unit(n, root) for n in dict.fromkeys(names)]
    settings = shared_settings(root / "workspace")
    if settings is None:
        raise UserError("the fleet shares one LLM cache: set SCENEMAKE_CACHE_URL (or cache_url "
                        "in workspace/scenemake.json) to a PostgreSQL database")
    from pipeline.llm.shared import open_shared

    open_shared(settings.url)  # unreachable, unauthorised, read-only: one line, no cluster
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise UserError("Dask is not installed", fix="pip install 'scenemake[fleet]'") from None
    from targets.fleet.units import pack
    from targets.fleet.worker import build_unit, install_fingerprint, sweep_dead_copies

    sweep_dead_copies()  # this machine's copies of workers killed in an earlier fleet
    fingerprint = install_fingerprint()
    shared = None
    if shared_fs:
        from targets.fleet.sharedfs import merge_pending, write_probe

        left = merge_pending(root)  # rows a stopped fleet's units left unmerged
        if left:
            print(f"fleet: merged the build records an earlier fleet left for "
                  f"{', '.join(left)}", file=out, flush=True)

        shared = write_probe(root)  # workers read it back: do they see this very folder?
        payloads = {u.name: b"" for u in units}  # they copy the units themselves
    else:
        payloads = {u.name: pack(root, u.inputs, u.optional) for u in units}
    cluster = None
    try:
        if local:
            # Workers get the URL (credentials included) through their environment, never
            # through the task graph; one thread each: a unit's own doit uses threads.
            cluster = LocalCluster(n_workers=local, threads_per_worker=1, processes=True,
                                   dashboard_address=None,
                                   env={"SCENEMAKE_CACHE_URL": settings.url})
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout=30)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"cannot reach the Dask scheduler {scheduler} ({exc})") from None
        with client:
            skew = _skewed(client, fingerprint)
            if skew:
                raise UserError(skew, fix="install the same scenemake on every worker")
            origin = machine_name(root / "workspace")
            return _run(client, as_completed, build_unit, units, payloads, fingerprint,
                        redact(settings.url), os.environ.get(ENV_RUN), origin, root, out,
                        shared)
    finally:
        if cluster is not None:
            cluster.close()
        if shared is not None:
            from targets.fleet.sharedfs import remove_probe

            remove_probe(shared)


def _skewed(client, fingerprint: str) -> str:
    """A one-line refusal when a worker runs another scenemake, else ''."""
    from targets.fleet.worker import install_fingerprint

    for address, theirs in sorted(client.run(install_fingerprint).items()):
        if theirs != fingerprint:
            return (f"version skew: worker {address} runs another scenemake (code "
                    f"{theirs[:12]}, this machine {fingerprint[:12]})")
    return ""


def _run(client, as_completed, build_unit, units, payloads, fingerprint, cache, run, origin,
         root, out, shared=None) -> int:
    import pickle

    from targets.fleet.sharedfs import merge_records, merged
    from targets.fleet.units import unpack
    from targets.fleet.worker import TOPIC

    started = time.monotonic()

    def running(event) -> None:
        # (timestamp, message) from a worker's log_event; printed from Dask's event loop
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, dict) and msg.get("state") == "running":
            print(f"fleet: {msg['unit']}: running on {msg['worker']}", file=out, flush=True)

    client.subscribe_topic(TOPIC, running)
    futures = {}
    for unit in units:
        future = client.submit(build_unit, unit, payloads[unit.name], fingerprint, cache, run,
                               origin, shared, key=f"scenemake-{unit.name}-{uuid.uuid4().hex[:8]}",
                               pure=False)
        futures[future] = unit
        print(f"fleet: {unit.name}: queued ({unit.means})", file=out, flush=True)
    totals = {"done": 0, "failed": 0, "calls": 0, "paid": 0, "cost_usd": 0.0}
    skew = ""
    for future in as_completed(futures):
        unit = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a unit's failure is reported, others go on
            totals["failed"] += 1
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            print(f"fleet: {unit.name}: failed ({type(exc).__name__}: {first[:300]})", file=out,
                  flush=True)
            continue
        if result["rc"] == "skew":
            skew = result["message"]
        back = len(pickle.dumps(result))  # what the unit's result weighed through Dask
        try:
            if result.get("records") is not None:
                merge_records(root, result["records"], result["root"])
                merged(root, result.get("pending"))
            elif result["files"]:
                unpack(result["files"], root, replace=unit.outputs, built_in=result["root"])
        except UserError as exc:
            # its files are in place (or on the shared folder); the next local doit runs
            # its tasks again, from the cache
            result.update(rc="not recorded", message=str(exc))
        for key in ("calls", "paid", "cost_usd"):
            totals[key] += result[key]
        ok = result["rc"] == 0
        totals["done" if ok else "failed"] += 1
        why = (f"exit {result['rc']}" if isinstance(result["rc"], int)
               else "not recorded" if result["rc"] == "not recorded" else "not built")
        state = "done" if ok else f"failed ({why}): {result['message']}"
        print(f"fleet: {unit.name}: {state}; on {result['worker']}, {result['calls']} calls, "
              f"{result['paid']} paid, ${result['cost_usd']:.4f}, {_size(back)} back",
              file=out, flush=True)
    took = time.monotonic() - started
    count = f"{len(units)} unit{'' if len(units) == 1 else 's'}"
    print(f"fleet: {count}: {totals['done']} done, {totals['failed']} failed; "
          f"{totals['calls']} calls, {totals['paid']} paid, ${totals['cost_usd']:.4f}; "
          f"{took:.1f} s", file=out, flush=True)
    if skew:
        raise UserError(skew, fix="install the same scenemake on every worker")
    return EXIT_OK if totals["failed"] == 0 else EXIT_FAILED


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} kB" if n < 1 << 20 \
        else f"{n / (1 << 20):.1f} MB"
