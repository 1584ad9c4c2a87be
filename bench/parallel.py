"""Parallel LLM phases with the offline model's simulated latency: wall time vs ideal.

Usage::

    python bench/parallel.py [--plans 200] [--jobs 16] [--latency-ms 200] [--scenes 50] [--runs 3]

1. ``--plans`` independent plan tasks at ``-n JOBS -P thread``: ideal = plans x latency / jobs.
2. A whole book of ``--scenes`` scenes shaped like the example: every phase, at
   ``-n JOBS -P thread``; its critical path is one plan then, scene after scene (the state
   chain), continuity_pack, write, repair and state_repair: (1 + 4 x scenes) x latency.

Each run starts from an empty build DB and response cache (so every call is paid) in a
scratch copy under /tmp; the medians of ``--runs`` runs are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_project(root: Path, scenes: int) -> None:
    """A scratch project: dodo.py and a synthetic book of ``scenes`` scenes as the default."""
    (root / "workspace" / "books").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    subprocess.run([sys.executable, str(REPO / "bench" / "synth_book.py"), str(scenes),
                    str(root / "workspace" / "books" / "bench")], check=True)
    (root / "workspace" / "scenemake.json").write_text('{"default_book": "bench"}')


def timed_run(root: Path, args: list[str], latency_ms: int) -> float:
    """Wall time of one cold ``python -m doit ARGS`` (DB and cache removed first)."""
    shutil.rmtree(root / "workspace" / ".scenemake", ignore_errors=True)
    shutil.rmtree(root / "workspace" / "books" / "bench" / "draft", ignore_errors=True)
    env = {**os.environ, "SCENEMAKE_OFFLINE_LATENCY_MS": str(latency_ms)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    lat = a.latency_ms / 1000
    with tempfile.TemporaryDirectory(prefix="scenemake-par-") as tmp:
        plans = Path(tmp) / "plans"
        make_project(plans, a.plans)
        walls = [timed_run(plans, ["-n", str(a.jobs), "-P", "thread", "plan"], a.latency_ms)
                 for _ in range(a.runs)]
        ideal = a.plans * lat / a.jobs
        wall = statistics.median(walls)
        print(f"{a.plans} plans, -n {a.jobs} -P thread, {a.latency_ms} ms/call: "
              f"wall {wall:.2f}s (median of {a.runs}: {', '.join(f'{w:.2f}' for w in walls)})"
              f", ideal {ideal:.2f}s, wall/ideal {wall / ideal:.2f}")
        book = Path(tmp) / "book"
        make_project(book, a.scenes)
        walls = [timed_run(book, ["-n", str(a.jobs), "-P", "thread"], a.latency_ms)
                 for _ in range(a.runs)]
        critical = (1 + 4 * a.scenes) * lat
        wall = statistics.median(walls)
        print(f"book of {a.scenes} scenes, -n {a.jobs} -P thread: wall {wall:.2f}s (median of "
              f"{a.runs}: {', '.join(f'{w:.2f}' for w in walls)}), critical path "
              f"{critical:.2f}s, wall/critical {wall / critical:.2f}")


if __name__ == "__main__":
    main()
