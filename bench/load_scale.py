"""What loading costs: a named command on a long book, and ``doit list`` at 1000 vs 5000
scenes, for two checkouts (before / after), interleaved, medians (issue #14).

Usage::

    python bench/load_scale.py BEFORE_CHECKOUT AFTER_CHECKOUT [--runs 5] [--work DIR]

Each checkout's ``dodo.py`` (and ``doit.cfg`` when it has one) runs in its own project
folder with ``PYTHONPATH=CHECKOUT``, so each imports its own ``targets``/``pipeline``.
Books are synthetic (bench/synth_book.py), the model is the offline stand-in.

Measured per checkout and size:
- ``list``: ``doit book=synth list`` on the unbuilt book (task loading);
- ``named``: ``doit book=synth write:ch001_sc001`` after that chain was built once (a
  named no-op: what the command loads and checks);
- ``fast``: plain ``doit book=synth`` after a complete build (the no-op fast path; only at
  the smallest size, a full build of the larger books takes too long here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def project(checkout: Path, root: Path, scenes: int) -> Path:
    """A project folder for ``checkout`` with a synthetic book of ``scenes`` scenes."""
    if root.exists():
        return root
    root.mkdir(parents=True)
    shutil.copy(checkout / "dodo.py", root / "dodo.py")
    if (checkout / "doit.cfg").exists():
        shutil.copy(checkout / "doit.cfg", root / "doit.cfg")
    (root / "workspace" / "books").mkdir(parents=True)
    (root / "workspace" / "scenemake.json").write_text('{"default_book": "synth"}')
    subprocess.run([sys.executable, str(HERE / "synth_book.py"), str(scenes),
                    str(root / "workspace" / "books" / "synth")], check=True)
    return root


def doit(checkout: Path, root: Path, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/load_scale"))
    ap.add_argument("--named-sizes", default="100,1000")
    ap.add_argument("--list-sizes", default="1000,5000")
    ap.add_argument("--fast-size", type=int, default=100)
    a = ap.parse_args()
    sides = {"before": a.before.resolve(), "after": a.after.resolve()}
    cases = []  # (label, side, root, args)
    for side, co in sides.items():
        for n in map(int, a.list_sizes.split(",")):
            cases.append((f"list {n}", side, project(co, a.work / f"{side}-{n}", n), ["list"]))
        for n in map(int, a.named_sizes.split(",")):
            root = project(co, a.work / f"{side}-{n}", n)
            doit(co, root, "write:ch001_sc001")  # build the chain once
            cases.append((f"named {n}", side, root, ["write:ch001_sc001"]))
        if a.fast_size:
            root = project(co, a.work / f"{side}-{a.fast_size}", a.fast_size)
            doit(co, root)
            doit(co, root)
            cases.append((f"fast {a.fast_size}", side, root, []))
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.runs):  # interleaved: every case once per round
        for label, side, root, args in cases:
            times.setdefault((label, side), []).append(doit(sides[side], root, *args))
    med = {k: statistics.median(v) for k, v in times.items()}
    for (label, side), m in sorted(med.items()):
        print(f"{label:12s} {side:7s} median {m * 1000:8.1f} ms  runs {a.runs}")
    labels = sorted({k[0] for k in med})
    for side in sides:
        for x, y in (("named 1000", "named 100"), ("list 5000", "list 1000")):
            if (x, side) in med and (y, side) in med:
                print(f"{side}: {x} / {y} = {med[(x, side)] / med[(y, side)]:.2f}x")
    for label in labels:
        print(f"{label}: after / before = {med[(label, 'after')] / med[(label, 'before')]:.2f}x")


if __name__ == "__main__":
    main()
