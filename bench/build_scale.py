"""The whole build's CPU against the book's length (issue #14: 2500 scenes / 500 <= 5.5x).

Usage::

    python bench/build_scale.py [--scenes 500 2500] [--runs 1] [--workdir DIR] [--code DIR]

For each size, a fresh synthetic book (``synth_book.py``, offline stand-in, 0 ms per call)
is built once from nothing with plain ``python -m doit`` in ``DIR/<scenes>-<run>/project``;
the child's user+sys CPU (``RUSAGE_CHILDREN``) and wall time are noted. Sizes alternate
run by run. Prints per size the median CPU, CPU per task, and the ratio of each size's CPU
to the first size's (linear would be the ratio of the sizes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from noop_vs_make import _children_cpu, full_build, prepare_project, run_env  # noqa: E402

PHASES = 8


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, nargs="+", default=[500, 2500])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/scenemake-build-scale"))
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    args = ap.parse_args(argv)

    env = run_env(args.code)
    cpu: dict[int, list[float]] = {n: [] for n in args.scenes}
    wall: dict[int, list[float]] = {n: [] for n in args.scenes}
    for run in range(args.runs):
        for n in args.scenes:
            folder = args.workdir / f"{n}-{run}"
            if folder.exists():
                shutil.rmtree(folder)
            prepare_project(folder / "project", n, args.code)
            c0, t0 = _children_cpu(), time.perf_counter()
            full_build(folder / "project", env)
            cpu[n].append(_children_cpu() - c0)
            wall[n].append(time.perf_counter() - t0)
            print(f"{n} scenes, run {run + 1}: {cpu[n][-1]:.1f} s CPU, {wall[n][-1]:.1f} s wall",
                  flush=True)
            shutil.rmtree(folder)
    first = args.scenes[0]
    base = statistics.median(cpu[first])
    print(f"\n{'scenes':>7}{'CPU s':>9}{'wall s':>9}{'ms/task':>9}{'CPU ratio':>11}"
          f"{'size ratio':>12}")
    for n in args.scenes:
        c = statistics.median(cpu[n])
        print(f"{n:>7}{c:>9.1f}{statistics.median(wall[n]):>9.1f}"
              f"{1000 * c / (n * PHASES):>9.2f}{c / base:>11.2f}{n / first:>12.2f}")


if __name__ == "__main__":
    main()
