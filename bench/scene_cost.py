"""What a scene costs along a long book: the bytes its requests send to the model and the
CPU of its tasks, early scenes against late ones (issue #14).

Usage::

    python bench/scene_cost.py [--scenes 300] [--workdir DIR] [--code DIR] [--reuse]

Writes the synthetic book of ``--scenes`` scenes (``synth_book.py``, with the book
override of ``system.j2``) in ``DIR/project`` and builds it once with the offline
stand-in (0 ms latency), ``python -m doit`` with no ``-n``: tasks run one after the other,
so the process CPU time between the start of one task and the start of the next is that
task's cost, doit's own checks and saves included (the last task's runs to the exit).
The build runs in a child process that wraps ``pipeline.book.runner.run_phase`` to note
each task's start; nothing else is changed. ``--code DIR`` puts a copy of the repo first
on ``PYTHONPATH`` (to measure another commit: ``git archive COMMIT | tar -x -C DIR``);
``--reuse`` skips the build and reads the notes and artifacts of an earlier one.

Then, per scene (numbered from 1 in outline order):

- **bytes sent**: over every LLM phase, the UTF-8 bytes of the request's messages and its
  output schema as compact JSON, read from the phase's ``prompt.json`` (what was sent);
- **CPU per task**: the mean over its 8 tasks;

and prints the medians of scenes 11-60 and of the last 50 scenes, their ratio, and the
same medians per band of 50 scenes along the book.
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from noop_vs_make import BOOK, prepare_project, run_env  # noqa: E402

NOTES = "scene_cost_notes.json"
LLM_PHASES = ("plan", "continuity_pack", "write", "repair", "state_repair")


def child() -> None:
    """In the project folder: ``python -m doit`` with each task's start noted."""
    import pipeline.book.runner as runner

    notes: list[list] = []
    original = runner.run_phase

    def noted(book, sid, phase, changed, rv):
        notes.append([phase, sid, time.process_time()])
        return original(book, sid, phase, changed, rv)

    runner.run_phase = noted
    sys.argv = ["doit"]
    code = 0
    try:
        runpy.run_module("doit", run_name="__main__")
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        notes.append(["<exit>", None, time.process_time()])
        Path(NOTES).write_text(json.dumps(notes), encoding="utf-8")
    sys.exit(code)


def build(project: Path, env: dict[str, str]) -> float:
    """The full build in a child process; returns its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"],
                          cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise SystemExit(f"build failed ({proc.returncode}):\n{tail}")
    return time.perf_counter() - t0


def scene_order(project: Path) -> list[str]:
    outline = json.loads((project / "workspace" / "books" / BOOK / "outline.json").read_text())
    return [s["id"] for ch in outline["chapters"] for s in ch["scenes"]]


def bytes_sent(project: Path, sid: str) -> int:
    """Bytes of all of scene ``sid``'s requests: messages + output schema."""
    total = 0
    scene = project / "workspace" / "books" / BOOK / "draft" / "scenes" / sid
    for phase in LLM_PHASES:
        path = scene / phase / "prompt.json"
        prompt = json.loads(path.read_text(encoding="utf-8"))
        for part in (prompt["messages"], prompt["output_schema"]):
            total += len(json.dumps(part, ensure_ascii=False, separators=(",", ":")).encode())
    return total


def cpu_per_task(project: Path) -> dict[str, list[float]]:
    """Seconds of process CPU per task, grouped by scene."""
    notes = json.loads((project / NOTES).read_text(encoding="utf-8"))
    out: dict[str, list[float]] = {}
    for (_, sid, start), (_, _, nxt) in zip(notes, notes[1:], strict=False):
        out.setdefault(sid, []).append(nxt - start)
    return out


def state_bytes(project: Path, sid: str) -> int:
    return (project / "workspace" / "books" / BOOK / "draft" / "scenes" / sid / "preflight"
            / "state.json").stat().st_size


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    if argv is None and sys.argv[1:] == ["--child"]:
        child()
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--code", type=Path, help="put this repo copy first on PYTHONPATH")
    ap.add_argument("--reuse", action="store_true", help="read an earlier build")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(f"/tmp/scenemake-scenecost-{args.scenes}")
    project = workdir / "project"
    if not args.reuse:
        if project.exists():
            raise SystemExit(f"{project} exists: pass --reuse or another --workdir")
        prepare_project(project, args.scenes, args.code)
        print(f"full build of {args.scenes} scenes: {build(project, run_env(args.code)):.1f} s")

    order = scene_order(project)
    cpu = cpu_per_task(project)
    if set(order) - set(cpu):
        raise SystemExit("some scenes were not built in the noted run")
    rows = {i + 1: (bytes_sent(project, sid), statistics.fmean(cpu[sid]) * 1000)
            for i, sid in enumerate(order)}
    n = len(order)
    early = range(11, min(60, n) + 1)
    late = range(max(1, n - 49), n + 1)

    def med(scenes: range, col: int) -> float:
        return statistics.median(rows[s][col] for s in scenes)

    print(f"\n{project}: {n} scenes, offline stand-in, 0 ms/call")
    print(f"{'scenes':<12}{'bytes sent/scene':>18}{'CPU ms/task':>13}{'pre-state KB':>14}")
    for lo in range(1, n + 1, 50):
        band = range(lo, min(lo + 49, n) + 1)
        print(f"{f'{band[0]}-{band[-1]}':<12}{med(band, 0):>18.0f}{med(band, 1):>13.1f}"
              f"{state_bytes(project, order[band[-1] - 1]) / 1024:>14.1f}")
    for label, col in (("bytes sent per scene", 0), ("CPU per task", 1)):
        a, b = med(early, col), med(late, col)
        print(f"{label}: scenes {late[0]}-{late[-1]} / {early[0]}-{early[-1]}: "
              f"{b:.1f} / {a:.1f} = {b / a:.2f}x")


if __name__ == "__main__":
    main()
