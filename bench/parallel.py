"""Parallel LLM phases with the offline model's simulated latency: wall time vs ideal.

Usage::

    python bench/parallel.py [--plans 200] [--jobs 16] [--latency-ms 200] [--scenes 50] [--runs 3]

``--scenes 0`` skips the book; ``--dir /dev/shm`` runs on tmpfs (fsync costs nothing).

1. ``--plans`` independent plan tasks at ``-n JOBS -P thread``: ideal = plans x latency / jobs.
2. A whole book of ``--scenes`` scenes shaped like the example: every phase, at
   ``-n JOBS -P thread``; its critical path is one plan then, scene after scene (the state
   chain), continuity_pack, write, repair and state_repair: (1 + 4 x scenes) x latency.

Each run starts from an empty build DB and response cache (so every call is paid) in a
scratch copy under /tmp; the medians of ``--runs`` runs are printed.
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


def timed_run(root: Path, args: list[str], latency_ms: int) -> tuple[float, float]:
    """One cold ``python -m doit ARGS`` (DB and cache removed first): (wall, calls span).

    The span runs from the first model call's start to the last one's end: the part of
    the run that threads can overlap; the rest is start-up (imports, loading the book
    and its tasks) and the last task's writes.
    """
    shutil.rmtree(root / "workspace" / ".scenemake", ignore_errors=True)
    shutil.rmtree(root / "workspace" / "books" / "bench" / "draft", ignore_errors=True)
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": str(latency_ms)}
    start = time.time()
    subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.time() - start
    first, last = calls_span(root)
    return wall, last - first


def _report(label: str, runs: list[tuple[float, float]], ref: float, ref_name: str) -> None:
    walls = [w for w, _ in runs]
    spans = [s for _, s in runs]
    wall, span = statistics.median(walls), statistics.median(spans)
    print(f"{label}: wall {wall:.2f}s (runs {', '.join(f'{w:.2f}' for w in walls)}), "
          f"{ref_name} {ref:.2f}s, wall/{ref_name} {wall / ref:.2f}; calls span {span:.2f}s "
          f"(runs {', '.join(f'{s:.2f}' for s in spans)}), span/{ref_name} {span / ref:.2f}; "
          f"start-up and last writes {wall - span:.2f}s")


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
        runs = [timed_run(plans, ["-n", str(a.jobs), "-P", "thread", "plan"], a.latency_ms)
                for _ in range(a.runs)]
        _report(f"{a.plans} plans, -n {a.jobs} -P thread, {a.latency_ms} ms/call (median of "
                f"{a.runs})", runs, a.plans * lat / a.jobs, "ideal")
        if a.scenes:
            book = Path(tmp) / "book"
            make_project(book, a.scenes)
            runs = [timed_run(book, ["-n", str(a.jobs), "-P", "thread"], a.latency_ms)
                    for _ in range(a.runs)]
            _report(f"book of {a.scenes} scenes, -n {a.jobs} -P thread (median of {a.runs})",
                    runs, (1 + 4 * a.scenes) * lat, "critical path")

if __name__ == "__main__":
    main()
