"""Tasks an L7 run reruns, and what Gate-Out costs, after one scene of a long session is
edited (issue #14).

Usage::

    python bench/l7_one_scene.py [--scenes 100] [--rounds 5] [--workdir DIR] [--code DIR ...]

Copies the example session (``workspace/l7``, ``score_specs/``, ``dodo.py``) to a project
per code copy under ``DIR``, grows its ``scenes_v2.json`` to ``--scenes`` scenes (the
example's eight, cycled under new ids) and runs ``python -m pipeline.l7`` once with the
offline stand-in. Then, ``--rounds`` times, it edits the action of the middle scene (a new
text each round) and runs it again, the code copies in turn (interleaved), and prints per
copy: the tasks doit ran (its ``.  NAME`` lines), the LLM calls, and the medians of the
run's wall time, of the time of the tasks that ran and of the ``l7_gate_out`` and
``l7_export`` tasks' own time (from ``runtime_log_l7.json``). ``--code DIR``
(repeatable) puts a copy of the repo first on ``PYTHONPATH`` (another commit: ``git
archive COMMIT pipeline targets dodo.py | tar -x -C DIR``); ``--code .`` is this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENES = "workspace/l7/l6_run_output/scenes_v2.json"
FLAGS = ["--session-input", "workspace/l7/sample_session_input_l7.json",
         "--session-objective", "workspace/l7/sample_session_objective_l7_prompt_map.json",
         "--scenes-v2", SCENES, "--out-dir", "workspace/l7/l7_run_output"]


def run(project: Path, env: dict[str, str]) -> tuple[list[str], float]:
    """One L7 run; returns the tasks doit ran and its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.l7", *FLAGS], cwd=project, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(f"L7 run failed ({proc.returncode}):\n{tail}")
    return [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")], wall


def calls(project: Path) -> int:
    log = project / "workspace" / ".scenemake" / "llm_calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def task_seconds(project: Path, tasks: list[str]) -> float:
    """The tasks' own time (summed) in the last published runtime log."""
    log = json.loads((project / "workspace/l7/l7_run_output/runtime_log_l7.json").read_text())
    return sum(float(t["elapsed_s"]) for t in log["tasks"] if t["task"] in tasks)


def setup(project: Path, code: Path | None, scenes: int) -> tuple[dict, dict[str, str]]:
    """A fresh project of ``scenes`` scenes for one code copy; (scenes_v2 data, env)."""
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    shutil.copy((code or REPO) / "dodo.py", project / "dodo.py")
    shutil.copytree(REPO / "score_specs", project / "score_specs")
    shutil.copytree(REPO / "workspace" / "l7", project / "workspace" / "l7",
                    ignore=shutil.ignore_patterns("l7_run_output", "l7_rerun_output"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENEMAKE_")}
    if code:
        env["PYTHONPATH"] = str(code.resolve())
    path = project / SCENES
    data = json.loads(path.read_text())
    base = data["scenes"]
    data["scenes"] = [{**json.loads(json.dumps(base[i % len(base)])),
                       "scene_id": f"scene_{i + 1:03d}",
                       "title": f"{base[i % len(base)]['title']} ({i + 1})"}
                      for i in range(scenes)]
    path.write_text(json.dumps(data, indent=2))
    return data, env


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1, help="edits measured per code copy")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/scenemake-l7-one-scene"))
    ap.add_argument("--code", type=Path, action="append",
                    help="put this repo copy first on PYTHONPATH (repeatable; '.' = this one)")
    args = ap.parse_args(argv)
    codes = [None if c is None or c.resolve() == REPO else c for c in (args.code or [None])]
    runs = []
    for i, code in enumerate(codes):
        project = args.workdir / f"code{i}" / "project"
        data, env = setup(project, code, args.scenes)
        first, _ = run(project, env)
        runs.append({"code": str(code or "this checkout"), "project": project, "env": env,
                     "data": data, "first": len(first), "ran": [], "calls": [], "wall": [],
                     "gate_out": [], "export": [], "tasks": []})
    middle = args.scenes // 2
    for r in range(args.rounds):
        for x in runs:  # interleaved: each round runs every copy once, in turn
            n = calls(x["project"])
            x["data"]["scenes"][middle - 1]["action"] = \
                f"Ines drops rusted key number {r + 1} into Tomas's open palm"
            (x["project"] / SCENES).write_text(json.dumps(x["data"], indent=2))
            ran, wall = run(x["project"], x["env"])
            x["ran"].append(ran)
            x["calls"].append(calls(x["project"]) - n)
            x["wall"].append(wall)
            x["gate_out"].append(task_seconds(x["project"], ["l7_gate_out"]))
            x["export"].append(task_seconds(x["project"], ["l7_export"]))
            x["tasks"].append(task_seconds(x["project"], ran))
    for x in runs:
        per_stage = Counter(t.partition(":")[0] for t in x["ran"][-1])
        med = {k: statistics.median(x[k]) for k in ("wall", "gate_out", "export", "tasks")}
        print(f"{x['code']}: {args.scenes} scenes: first run {x['first']} tasks; after editing "
              f"scene_{middle:03d} ({args.rounds} rounds): {len(x['ran'][-1])} tasks, "
              f"{x['calls'][-1]} LLM calls; medians: run {med['wall']:.2f} s, the tasks' own "
              f"time {med['tasks']:.3f} s, of which l7_gate_out {med['gate_out']:.3f} s "
              f"({100 * med['gate_out'] / med['tasks']:.0f}%), l7_export "
              f"{med['export']:.3f} s")
        print("  " + ", ".join(f"{stage} {k}" for stage, k in per_stage.items()))


if __name__ == "__main__":
    main()
