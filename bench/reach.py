"""The first ``doit`` after one scene's brief changed, against the fast no-op (issue #14).

Usage::

    python bench/reach.py --workdir DIR [--runs 5] [--scene -1] [--code DIR]

``DIR/project`` is a built synthetic book (``bench/noop_vs_make.py --workdir DIR`` builds
one; so does this script when there is none, with ``--scenes``). Interleaved, ``--runs``
times after one untimed warm-up round:

- **fast no-op**: plain ``doit``, nothing changed (the stamp's fast path);
- **brief**: the brief of scene ``--scene`` (an index into the outline's scenes, -1 the
  last) gets a new text, then plain ``doit`` (the scenes the change reaches load);
- **brief, full path**: the same after the stamp is removed (every task loads and is
  checked: what the first ``doit`` after a change cost before).

Each doit runs through a small wrapper that times the work of the tasks that rerun: their
actions (``run_phase``, the manuscript), and what follows their commit (the scene's
ledger and kept version) when it runs on the main thread (the ledger thread's work
overlaps the next task and is not subtracted, so the overhead shown errs high).
"minus rerun" is the wall time less that work: what it costs to find out what to run.
The rerun tasks' ledgers and kept versions written on the ledger thread are timed apart
("ledger thr."); "minus both" subtracts them too, which errs low where they overlapped
the main thread's work (the two columns bound the cost). Prints medians and the ratios to
the fast no-op.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from noop_vs_make import BOOK, full_build, prepare_project, run_env  # noqa: E402

# Runs doit as ``python -m doit`` does, timing the tasks' own work into $REACH_OUT.
WRAPPER = r"""
import atexit, functools, json, os, runpy, sys, threading, time
import doit
import targets.book.tasks as book

spent = [0.0, 0, 0.0]  # main-thread work, its calls, the ledger thread's work

def timed(fn):
    @functools.wraps(fn)  # doit reads the signature (``changed``) through __wrapped__
    def inner(*a, **kw):
        main = threading.current_thread() is threading.main_thread()
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            if main:
                spent[0] += time.perf_counter() - t0
                spent[1] += 1
            else:  # overlaps the next task: shown apart
                spent[2] += time.perf_counter() - t0
    return inner

book._act = timed(book._act)
book._build_manuscript = timed(book._build_manuscript)
book._on_task_recorded = timed(book._on_task_recorded)

@atexit.register
def _report():
    with open(os.environ["REACH_OUT"], "w") as fh:
        json.dump({"work_s": spent[0], "calls": spent[1], "ledger_s": spent[2]}, fh)

sys.argv = [os.path.join(os.path.dirname(doit.__file__), "__main__.py")] + sys.argv[1:]
runpy.run_module("doit", run_name="__main__", alter_sys=True)
"""


def run_doit(project: Path, env: dict[str, str]) -> tuple[float, float, float, str]:
    """One plain ``doit`` through the wrapper: (wall s, work of rerun tasks s, their
    ledger-thread work s, stdout)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER], cwd=project,
                          env={**env, "REACH_OUT": str(out)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"doit exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    spent = json.loads(out.read_text())
    out.unlink()
    return wall, spent["work_s"], spent["ledger_s"], proc.stdout


def set_brief(project: Path, index: int, text: str) -> str:
    """Give the scene at ``index`` (outline order) a new brief; returns its id."""
    path = project / "workspace" / "books" / BOOK / "outline.json"
    data = json.loads(path.read_text())
    scenes = [s for ch in data["chapters"] for s in ch["scenes"]]
    scenes[index]["brief"] = text
    path.write_text(json.dumps(data, indent=2) + "\n")
    return scenes[index]["id"]


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--scenes", type=int, default=1000, help="when building a new project")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scene", type=int, default=-1, help="outline index of the changed scene")
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    args = ap.parse_args(argv)

    project = args.workdir / "project"
    env = run_env(args.code)
    if not (args.workdir / "build.json").exists():
        prepare_project(project, args.scenes, args.code)
        seconds = full_build(project, env)
        (args.workdir / "build.json").write_text(json.dumps(
            {"scenes": args.scenes, "seconds": seconds}) + "\n")
    stamp = project / "workspace" / ".scenemake" / "books" / f"{BOOK}.stamp.json"
    run_doit(project, env)  # whatever state it was left in: built and stamped now

    rows: dict[str, list[tuple[float, float, float]]] = {
        "fast no-op": [], "brief": [], "brief, full path": []}
    sid = "?"
    for i in range(args.runs + 1):  # round 0 warms caches and is not counted
        wall, work, ledger, out = run_doit(project, env)
        if "nothing changed" not in out:
            raise SystemExit(f"not a fast no-op:\n{out[-2000:]}")
        rows["fast no-op"].append((wall, work, ledger))
        for name in ("brief", "brief, full path"):
            sid = set_brief(project, args.scene, f"Run {i} {name} ({time.time_ns()}): the "
                            "tide turns at the pier.")
            if name.endswith("full path"):
                stamp.unlink()
            wall, work, ledger, out = run_doit(project, env)
            if f"plan:{sid}" not in out:
                raise SystemExit(f"plan:{sid} did not rerun:\n{out[-2000:]}")
            rows[name].append((wall, work, ledger))
    for name in rows:
        rows[name] = rows[name][1:]

    base = statistics.median(w for w, _, _ in rows["fast no-op"])
    print(f"first doit after the brief of {sid} changed; medians of {args.runs} interleaved "
          f"runs; loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'command':<18}{'wall s':>8}{'rerun work s':>14}{'minus rerun s':>15}"
          f"{'/ fast no-op':>14}{'ledger thr. s':>15}{'minus both':>12}{'/ fast':>8}")
    for name, samples in rows.items():
        wall = statistics.median(w for w, _, _ in samples)
        work = statistics.median(k for _, k, _ in samples)
        ledger = statistics.median(g for _, _, g in samples)
        rest = statistics.median(w - k for w, k, _ in samples)
        least = statistics.median(w - k - g for w, k, g in samples)
        print(f"{name:<18}{wall:>8.3f}{work:>14.3f}{rest:>15.3f}{rest / base:>14.2f}"
              f"{ledger:>15.3f}{least:>12.3f}{least / base:>8.2f}")

if __name__ == "__main__":
    main()
