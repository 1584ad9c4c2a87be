"""Parallel LLM phases with the offline model's simulated latency: wall time vs ideal.

Usage::

    python bench/parallel.py [--plans 200] [--jobs 16] [--latency-ms 200] [--scenes 50] [--runs 3]

``--scenes 0`` skips the book; ``--dir /dev/shm`` runs on tmpfs (fsync costs nothing).

1. ``--plans`` independent plan tasks at ``-n JOBS -P thread``: ideal = plans x latency / jobs.
2. A whole book of ``--scenes`` scenes shaped like the example: every phase, at
   ``-n JOBS -P thread``; its critical path is one plan then, scene after scene (the state
   chain), continuity_pack, write, repair and state_repair: (1 + 4 x scenes) x latency.

Each run starts from an empty build DB and response cache (so every call is paid) in a
fresh scratch copy under /tmp, then repeats the command once with everything up to date
(the no-op floor: what the run costs besides its tasks); the medians of ``--runs`` runs
are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_project(root: Path, scenes: int) -> None:
    """A scratch project: dodo.py and a synthetic book of ``scenes`` scenes as the default."""
    (root / "workspace" / "books").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    subprocess.run([sys.executable, str(REPO / "bench" / "synth_book.py"), str(scenes),
                    str(root / "workspace" / "books" / "bench")], check=True)
    (root / "workspace" / "scenemake.json").write_text('{"default_book": "bench"}')


def calls_span(root: Path) -> tuple[float, float]:
    """(first call's start, last call's end) as epoch seconds, from the run's call log."""
    starts, ends = [], []
    for line in (root / "workspace" / ".scenemake" / "llm_calls.jsonl").read_text().splitlines():
        rec = json.loads(line)
        end = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        starts.append(end - rec["latency_ms"] / 1000)
        ends.append(end)
    return min(starts), max(ends)


def timed_run(template: Path, run_dir: Path, args: list[str], latency_ms: int
              ) -> tuple[float, float, float]:
    """One cold ``python -m doit ARGS`` in a fresh copy of ``template``: (wall, span, floor).

    The span runs from the first model call's start to the last one's end: the part of
    the run that threads can overlap; the rest is start-up (imports, loading the book
    and its tasks) and the last task's writes. The floor is the same command run again
    at once, with every task up to date: start-up, loading and checking, no call.

    Each run gets a new folder instead of deleting the last run's files first: on this
    machine's ext4 (no journal) every file created within seconds of a mass delete
    walks past the freed inodes (``recently_deleted`` in ``perf``), which doubled the
    run's system time and is not what a user's first build pays.
    """
    shutil.copytree(template, run_dir)
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": str(latency_ms)}
    for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):  # a user's shell sets neither
        env.pop(name, None)
    cmd = [sys.executable, "-m", "doit", *args]
    start = time.time()
    subprocess.run(cmd, cwd=run_dir, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - start
    first, last = calls_span(run_dir)
    start = time.time()
    subprocess.run(cmd, cwd=run_dir, env=env, check=True, stdout=subprocess.DEVNULL)
    floor = time.time() - start
    return wall, last - first, floor


def _report(label: str, runs: list[tuple[float, float, float]], ref: float, ref_name: str
            ) -> None:
    walls, spans, floors = (list(col) for col in zip(*runs, strict=True))
    wall, span, floor = (statistics.median(col) for col in (walls, spans, floors))
    print(f"{label}: wall {wall:.2f}s (runs {', '.join(f'{w:.2f}' for w in walls)}), "
          f"{ref_name} {ref:.2f}s, wall/{ref_name} {wall / ref:.2f}; calls span {span:.2f}s "
          f"(runs {', '.join(f'{s:.2f}' for s in spans)}), span/{ref_name} {span / ref:.2f}; "
          f"start-up and last writes {wall - span:.2f}s; no-op floor {floor:.2f}s "
          f"(runs {', '.join(f'{f:.2f}' for f in floors)}), so at best "
          f"(floor + {ref_name})/{ref_name} = {(floor + ref) / ref:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None,
                    help="where the scratch projects go (default: the system temp folder; "
                         "/dev/shm shows the run without the disk's fsyncs)")
    a = ap.parse_args()
    lat = a.latency_ms / 1000
    with tempfile.TemporaryDirectory(prefix="scenemake-par-", dir=a.dir) as tmp:
        plans = Path(tmp) / "plans"
        make_project(plans, a.plans)
        runs = [timed_run(plans, Path(tmp) / f"plans-{i}",
                          ["-n", str(a.jobs), "-P", "thread", "plan"], a.latency_ms)
                for i in range(a.runs)]
        _report(f"{a.plans} plans, -n {a.jobs} -P thread, {a.latency_ms} ms/call (median of "
                f"{a.runs})", runs, a.plans * lat / a.jobs, "ideal")
        if a.scenes:
            book = Path(tmp) / "book"
            make_project(book, a.scenes)
            runs = [timed_run(book, Path(tmp) / f"book-{i}", ["-n", str(a.jobs), "-P", "thread"],
                              a.latency_ms)
                    for i in range(a.runs)]
            _report(f"book of {a.scenes} scenes, -n {a.jobs} -P thread (median of {a.runs})",
                    runs, (1 + 4 * a.scenes) * lat, "critical path")


if __name__ == "__main__":
    main()
